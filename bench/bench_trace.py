"""Cost of task timeline tracing on thread-task throughput.

Run: ``python bench/bench_trace.py [--quick]``.

Same workload as bench_hooks (trivial thread tasks, 8 workers, submitted in
one burst), interleaved rounds, medians, two variants:

* ``off``   -- ``start()``: no recorder, no observer hook (the default);
* ``hooks`` -- a plugin whose ``atasker_task_started`` and
               ``atasker_task_finished`` do nothing: the floor any observer
               of those two hooks pays (the hook calls themselves);
* ``on``    -- ``start(trace=...)``: every task recorded and written to a
               trace file in a temporary folder.

Prints tasks/s, the ratio to ``off``, the cost per task in microseconds,
and for ``on`` the trace's size and the recorder's peak buffer (its memory
bound is ``2 * batch`` events).  Trivial tasks are the worst case: with
any real work in a task the cost per task stays the same and the ratio
goes to 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atasker import TaskSupervisor, hookimpl
from atasker.builtin.trace import get_recorder


def noop() -> None:
    return None


class NoopHooks:
    """The two hooks the recorder implements, doing nothing."""

    @hookimpl
    def atasker_task_started(self, task):
        pass

    @hookimpl
    def atasker_task_finished(self, task):
        pass


def throughput(variant: str, n: int, folder: Path, extra: dict) -> float:
    plugins = [NoopHooks()] if variant == "hooks" else []
    sup = TaskSupervisor(pool_size=8, reserve_normal=0, reserve_high=0, autoload=False, plugins=plugins)
    path = folder / f"trace-{variant}.json"
    sup.start(trace=path if variant == "on" else None)
    sup.submit(noop).result()
    t0 = time.perf_counter()
    wait([sup.submit(noop) for _ in range(n)])
    elapsed = time.perf_counter() - t0
    recorder = get_recorder(sup)
    sup.stop()  # closing the trace is not timed: it happens once per run
    if recorder is not None:
        extra["peak"] = max(extra.get("peak", 0), recorder.peak_buffered)
        extra["bound"] = 2 * recorder.batch
        extra["bytes"] = path.stat().st_size
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    n = 5000 if opts.quick else 20000
    rounds = 3 if opts.quick else 9
    variants = ["off", "hooks", "on"]
    samples: dict[str, list[float]] = {v: [] for v in variants}
    extra: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for v in variants:
                samples[v].append(throughput(v, n, Path(tmp), extra))
    base = statistics.median(samples["off"])
    print(f"task timeline tracing, {n} thread tasks, 8 workers, median of {rounds} interleaved rounds")
    for v in variants:
        tput = statistics.median(samples[v])
        cost = (1 / tput - 1 / base) * 1e6
        print(f"  {v:<5} {tput:>9,.0f} tasks/s  ratio {tput / base:.2f}x  cost {cost:+.2f} us/task")
    print(
        f"  trace: {extra['bytes'] / n:.0f} bytes/task on disk; recorder peak {extra['peak']} events "
        f"buffered (bound {extra['bound']}, plus one per thread appending at that moment)"
    )


if __name__ == "__main__":
    main()
