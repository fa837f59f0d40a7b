"""Cost of lifecycle hooks on thread-task throughput.

Run: ``python bench/bench_hooks.py [--quick]``.

Same workload as bench_threads' throughput (trivial tasks, 8 workers),
interleaved rounds, medians, four variants:

* ``none``        -- no plugin implements a lifecycle hook (the default);
* ``forced``      -- the same, but the three task hooks are called anyway
                     (pluggy with no implementation): what skipping saves;
* ``noop``        -- a plugin implements every lifecycle hook, doing nothing;
* ``logging``     -- a plugin logs every event on a logger (level INFO,
                     handler to a null stream), a realistic observer.

Prints tasks/s, the ratio to ``none`` and the cost per task in microseconds.
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import sys
import time
from concurrent.futures import wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atasker import TaskSupervisor, hookimpl


def noop() -> None:
    return None


class NoopObserver:
    @hookimpl
    def atasker_task_queued(self, task):
        pass

    @hookimpl
    def atasker_task_started(self, task):
        pass

    @hookimpl
    def atasker_task_finished(self, task):
        pass

    @hookimpl
    def atasker_supervisor_started(self, supervisor):
        pass

    @hookimpl
    def atasker_supervisor_stopped(self, supervisor):
        pass


class LoggingObserver:
    def __init__(self) -> None:
        self.log = logging.getLogger("bench.observer")
        self.log.propagate = False
        self.log.setLevel(logging.INFO)
        self.log.addHandler(logging.StreamHandler(io.StringIO()))

    @hookimpl
    def atasker_task_queued(self, task):
        self.log.info("queued %s %s", task.id, task.name)

    @hookimpl
    def atasker_task_started(self, task):
        self.log.info("started %s %s", task.id, task.name)

    @hookimpl
    def atasker_task_finished(self, task):
        self.log.info("finished %s %s %s", task.id, task.name, task.outcome)

    @hookimpl
    def atasker_supervisor_started(self, supervisor):
        self.log.info("supervisor started")

    @hookimpl
    def atasker_supervisor_stopped(self, supervisor):
        self.log.info("supervisor stopped")


def throughput(variant: str, n: int) -> float:
    plugins = {"noop": [NoopObserver()], "logging": [LoggingObserver()]}.get(variant, [])
    sup = TaskSupervisor(pool_size=8, reserve_normal=0, reserve_high=0, autoload=False, plugins=plugins)
    sup.start()
    if variant == "forced":
        hook = sup.plugin_manager.hook
        sup._on_queued, sup._on_started, sup._on_finished = (
            hook.atasker_task_queued,
            hook.atasker_task_started,
            hook.atasker_task_finished,
        )
    sup.submit(noop).result()
    t0 = time.perf_counter()
    wait([sup.submit(noop) for _ in range(n)])
    elapsed = time.perf_counter() - t0
    sup.stop()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    n = 5000 if opts.quick else 20000
    rounds = 3 if opts.quick else 9
    variants = ["none", "forced", "noop", "logging"]
    samples: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            samples[v].append(throughput(v, n))
    base = statistics.median(samples["none"])
    print(f"lifecycle hooks, {n} thread tasks, 8 workers, median of {rounds}")
    for v in variants:
        tput = statistics.median(samples[v])
        cost = (1 / tput - 1 / base) * 1e6
        print(f"  {v:<8} {tput:>9,.0f} tasks/s  ratio {tput / base:.2f}x  cost {cost:+.2f} us/task")


if __name__ == "__main__":
    main()
