"""Thread tasks: atasker against ThreadPoolExecutor and a minimal priority pool.

Run: ``make bench`` or ``python bench/bench_threads.py [--quick] [--rounds N] [--json]``.

Peers, in the same run, rounds interleaved (medians and ranges printed):

* ``TPE`` -- :class:`concurrent.futures.ThreadPoolExecutor` (no priorities);
* ``ref`` -- :class:`RefPool` below, a 40-line pool on
  :class:`queue.PriorityQueue` (priorities, no reserves, no records):
  what priorities cost at the least.

atasker is measured three ways, with the default queue policy, the memory
store and reserves on (pool 6 + NORMAL reserve 2 + HIGH reserve 2, so that
NORMAL tasks get 8 threads like the peers' 8 workers):

* ``decorator`` -- ``background_task(f, priority=TASK_NORMAL)()`` on the
  global ``task_supervisor``, plugins autoloaded (the way the seed's users
  call it; the observers installed plugins add are listed);
* ``submit`` -- ``sup.submit(f)`` on a private supervisor, autoload off
  (no observer hooks implemented);
* ``observer`` -- the same with one plugin implementing
  ``atasker_task_finished``.

Figures: throughput (20,000 trivial tasks, 8 workers, one submitting thread,
submit all then wait), submit cost (the submitting loop's time per task in
that run), round trip (idle pool, submit one task and wait, p50/p99),
priority inversions under saturation (2 workers blocked, 200 LOW + 200 HIGH
interleaved: LOW tasks started while a HIGH one waited), bytes per queued
task (200,000 waiting, tracemalloc).  Ratios are atasker / peer.

``--json`` prints one JSON object of the raw samples instead (for running
an older tree's atasker with the same script: ``PYTHONPATH=old-tree``).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import itertools
import json
import queue
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

if importlib.util.find_spec("atasker") is None:  # run from a clone without an install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import atasker
from atasker import TASK_HIGH, TASK_LOW, TASK_NORMAL, TaskSupervisor, background_task, hookimpl

WORKERS = 8
# Pool sizes of the atasker runs: NORMAL tasks may use 6 + 2 = 8 threads.
SIZES = {"pool_size": 6, "reserve_normal": 2, "reserve_high": 2}


def noop() -> None:
    return None


class RefPool:
    """A minimal priority thread pool: a PriorityQueue and N threads."""

    def __init__(self, workers: int) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, priority: int = TASK_NORMAL) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((priority, next(self._seq), (future, fn, args)))
        return future

    def _work(self) -> None:
        while True:
            _, _, item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            del future, item

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put((1 << 30, next(self._seq), None))
        for thread in self._threads:
            thread.join()


class FinishedObserver:
    """One lifecycle observer, as a plugin that counts finished tasks would be."""

    def __init__(self) -> None:
        self.finished = 0

    @hookimpl
    def atasker_task_finished(self, task: Any) -> None:
        self.finished += 1


def private_supervisor(observer: bool = False, **sizes: int) -> TaskSupervisor:
    plugins = [FinishedObserver()] if observer else []
    sup = TaskSupervisor(**{**SIZES, **sizes}, autoload=False, plugins=plugins, name="bench")
    sup.start()
    return sup


def global_starter() -> Callable[..., Any]:
    atasker.task_supervisor.set_thread_pool(**SIZES)
    return background_task(noop, priority=TASK_NORMAL)


def timed(submit: Callable[[], Future[Any]], n: int) -> tuple[float, float]:
    """(tasks per second, submit seconds per task) for *n* tasks."""
    submit().result()  # warm
    t0 = time.perf_counter()
    futures = [submit() for _ in range(n)]
    t1 = time.perf_counter()
    wait(futures)
    t2 = time.perf_counter()
    return n / (t2 - t0), (t1 - t0) / n


def throughput(kind: str, n: int, starter: Callable[..., Any]) -> tuple[float, float]:
    if kind == "TPE":
        with ThreadPoolExecutor(WORKERS) as ex:
            return timed(lambda: ex.submit(noop), n)
    if kind == "ref":
        pool = RefPool(WORKERS)
        try:
            return timed(lambda: pool.submit(noop), n)
        finally:
            pool.shutdown()
    if kind == "decorator":
        return timed(starter, n)
    sup = private_supervisor(observer=kind == "observer")
    try:
        return timed(lambda: sup.submit(noop), n)
    finally:
        sup.stop()


def round_trips(submit: Callable[[], Future[Any]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        submit().result()
        samples.append(time.perf_counter() - t0)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def inversions(kind: str) -> int:
    """LOW tasks started while a HIGH task was waiting (2 workers, both blocked first)."""
    release = threading.Event()
    lock = threading.Lock()
    waiting_high: set[int] = set()
    count = 0

    def run(prio: str, i: int) -> None:
        nonlocal count
        with lock:
            if prio == "low" and waiting_high:
                count += 1
            waiting_high.discard(i)

    if kind == "TPE":
        ex = ThreadPoolExecutor(2)
        submit = lambda fn, *a, priority: ex.submit(fn, *a)  # noqa: E731
        close: Callable[[], Any] = ex.shutdown
    elif kind == "ref":
        pool = RefPool(2)
        submit, close = pool.submit, pool.shutdown
    else:
        sup = private_supervisor(pool_size=2, reserve_normal=0, reserve_high=0)
        submit = lambda fn, *a, priority: sup.submit(fn, a, priority=priority)  # noqa: E731
        close = sup.stop
    blockers = [submit(release.wait, priority=TASK_HIGH) for _ in range(2)]
    tasks = []
    for i in range(400):
        if i % 2:
            with lock:
                waiting_high.add(i)
            tasks.append(submit(run, "high", i, priority=TASK_HIGH))
        else:
            tasks.append(submit(run, "low", i, priority=TASK_LOW))
    release.set()
    wait(tasks + blockers)
    close()
    return count


def bytes_per_queued(kind: str, n: int) -> float:
    release = threading.Event()
    if kind == "TPE":
        ex = ThreadPoolExecutor(1)
        submit: Callable[[], Future[Any]] = lambda: ex.submit(noop)  # noqa: E731
        ex.submit(release.wait)
        close: Callable[[], Any] = ex.shutdown
    elif kind == "ref":
        pool = RefPool(1)
        submit = lambda: pool.submit(noop)  # noqa: E731
        pool.submit(release.wait, priority=0)
        close = pool.shutdown
    else:
        sup = private_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
        sup.timeout_warning = sup.timeout_critical = 3600.0
        submit = lambda: sup.submit(noop)  # noqa: E731
        sup.submit(release.wait)
        close = sup.stop
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    futures = [submit() for _ in range(n)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    release.set()
    wait(futures)
    close()
    return (after - before) / n


def measure(rounds: int, n: int, queued: int) -> dict[str, Any]:
    """Raw samples: every figure of every kind, rounds interleaved."""
    starter = global_starter()
    # Round trips first, on idle pools that ran nothing else yet (a pool that
    # just ran 20,000 tasks has more idle threads to wake, for every peer).
    ex, pool, sup = ThreadPoolExecutor(WORKERS), RefPool(WORKERS), private_supervisor()
    rt_submit: dict[str, Callable[[], Future[Any]]] = {
        "TPE": lambda: ex.submit(noop),
        "ref": lambda: pool.submit(noop),
        "decorator": starter,
        "submit": lambda: sup.submit(noop),
    }
    rt: dict[str, list[float]] = {k: [] for k in rt_submit}
    for _ in range(10 * max(1, rounds // 3)):
        for kind, submit in rt_submit.items():
            rt[kind] += round_trips(submit, 200)
    ex.shutdown()
    pool.shutdown()
    sup.stop()
    rt_p50 = {k: pct(v, 0.5) for k, v in rt.items()}
    rt_p99 = {k: pct(v, 0.99) for k, v in rt.items()}
    kinds = ["TPE", "ref", "decorator", "submit", "observer"]
    out: dict[str, Any] = {"tp": {k: [] for k in kinds}, "cost": {k: [] for k in kinds}}
    for _ in range(rounds):  # interleaved: drift and neighbours hit every kind alike
        for kind in kinds:
            tp, cost = throughput(kind, n, starter)
            out["tp"][kind].append(tp)
            out["cost"][kind].append(cost)
    out["rt_p50"], out["rt_p99"] = rt_p50, rt_p99
    out["inversions"] = {k: inversions(k) for k in ("TPE", "ref", "atasker")}
    out["bytes"] = {k: bytes_per_queued(k, queued) for k in ("TPE", "ref", "atasker")}
    pm = atasker.task_supervisor.plugin_manager
    out["observers"] = sorted(
        pm.get_name(impl.plugin) or "?"
        for hook in ("atasker_task_queued", "atasker_task_waiting", "atasker_task_started", "atasker_task_finished")
        for impl in getattr(pm.hook, hook).get_hookimpls()
    )
    atasker.task_supervisor.stop()
    return out


def spread(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def report(out: dict[str, Any], n: int, queued: int) -> None:
    tp, cost = out["tp"], out["cost"]
    med = {k: statistics.median(v) for k, v in tp.items()}
    print(f"global supervisor's observers (installed plugins): {', '.join(out['observers']) or 'none'}")
    print(f"throughput ({n} trivial tasks, {WORKERS} workers, one submitting thread), tasks/s, median [range]:")
    for kind, values in tp.items():
        ratios = ""
        if kind not in ("TPE", "ref"):
            per_round = [a / t for a, t in zip(values, tp["TPE"], strict=True)]
            ratios = f"  {med[kind] / med['TPE']:.2f}x TPE (per round {spread(per_round, '.2f')})"
            ratios += f"  {med[kind] / med['ref']:.2f}x ref"
        print(f"  {kind:<10} {spread(values, ',.0f'):>28}{ratios}")
    print("submit cost, us per task (median [range]):")
    for kind, values in cost.items():
        ratio = "" if kind == "TPE" else f"  {statistics.median(values) / statistics.median(cost['TPE']):.2f}x TPE"
        print(f"  {kind:<10} {spread([v * 1e6 for v in values], '.2f'):>22}{ratio}")
    for q in ("p50", "p99"):
        rt = out[f"rt_{q}"]
        line = "  ".join(f"{k} {v * 1e6:.1f} us" for k, v in rt.items())
        ratios = "  ".join(f"{k} {rt[k] / rt['TPE']:.2f}x" for k in ("decorator", "submit"))
        print(f"round trip {q}: {line}  (vs TPE: {ratios})")
    inv = out["inversions"]
    print(
        f"priority inversions (2 workers blocked, 200 LOW + 200 HIGH): atasker {inv['atasker']}  "
        f"ref {inv['ref']}  TPE {inv['TPE']}"
    )
    b = out["bytes"]
    print(
        f"bytes per queued task ({queued} waiting): atasker {b['atasker']:.0f}  ref {b['ref']:.0f}  TPE {b['TPE']:.0f}"
        f"  ratio {b['atasker'] / b['TPE']:.2f}x TPE"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, 3 with --quick)")
    parser.add_argument("--json", action="store_true", help="print the raw samples as JSON")
    opts = parser.parse_args()
    rounds = opts.rounds or (3 if opts.quick else 5)
    n = 5000 if opts.quick else 20000
    queued = 20000 if opts.quick else 200000
    out = measure(rounds, n, queued)
    if opts.json:
        print(json.dumps(out))
        return
    print(f"thread tasks: atasker vs ThreadPoolExecutor and a 40-line priority pool (python {sys.version.split()[0]})")
    report(out, n, queued)


if __name__ == "__main__":
    main()
