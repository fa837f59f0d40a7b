"""Thread tasks: atasker against concurrent.futures.ThreadPoolExecutor.

Run: ``make bench`` or ``python bench/bench_threads.py [--quick]``.

Measures, for both, in the same run (median of several rounds):

* throughput -- 20,000 trivial tasks, 8 workers, submit all then wait;
* round trip -- idle pool, submit one task and wait for its result (p50/p99);
* priority under saturation -- 2 workers blocked, 200 LOW + 200 HIGH
  interleaved: how many LOW tasks started while a HIGH one was waiting
  (ThreadPoolExecutor has no priorities: it counts its FIFO inversions);
* memory -- bytes per queued task with 200,000 tasks waiting (tracemalloc).

Prints each figure and the ratio atasker / ThreadPoolExecutor.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atasker import TASK_HIGH, TASK_LOW, TaskSupervisor


def noop() -> None:
    return None


def new_supervisor(workers: int, **kwargs) -> TaskSupervisor:
    sup = TaskSupervisor(pool_size=workers, reserve_normal=0, reserve_high=0, autoload=False, **kwargs)
    sup.start()
    return sup


def throughput_tpe(n: int, workers: int) -> float:
    with ThreadPoolExecutor(workers) as ex:
        ex.submit(noop).result()  # warm the first thread
        t0 = time.perf_counter()
        futures = [ex.submit(noop) for _ in range(n)]
        wait(futures)
        return n / (time.perf_counter() - t0)


def throughput_atasker(n: int, workers: int) -> float:
    sup = new_supervisor(workers)
    try:
        sup.submit(noop).result()
        t0 = time.perf_counter()
        futures = [sup.submit(noop) for _ in range(n)]
        wait(futures)
        return n / (time.perf_counter() - t0)
    finally:
        sup.stop()


def round_trip(submit, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        submit(noop).result()
        samples.append(time.perf_counter() - t0)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def inversions_atasker() -> int:
    """LOW tasks started while a HIGH task was waiting."""
    sup = new_supervisor(2)
    release = threading.Event()
    lock = threading.Lock()
    waiting_high = set()
    inversions = 0

    def blocker():
        release.wait()

    def run(prio, i):
        nonlocal inversions
        with lock:
            if prio == "low" and waiting_high:
                inversions += 1
            waiting_high.discard(i)

    blockers = [sup.submit(blocker, priority=TASK_HIGH) for _ in range(2)]
    tasks = []
    for i in range(400):
        if i % 2:
            with lock:
                waiting_high.add(i)
            tasks.append(sup.submit(run, ("high", i), priority=TASK_HIGH))
        else:
            tasks.append(sup.submit(run, ("low", i), priority=TASK_LOW))
    release.set()
    wait(tasks + blockers)
    sup.stop()
    return inversions


def inversions_tpe() -> int:
    release = threading.Event()
    lock = threading.Lock()
    waiting_high = set()
    inversions = 0

    def run(prio, i):
        nonlocal inversions
        with lock:
            if prio == "low" and waiting_high:
                inversions += 1
            waiting_high.discard(i)

    with ThreadPoolExecutor(2) as ex:
        blockers = [ex.submit(release.wait) for _ in range(2)]
        tasks = []
        for i in range(400):
            if i % 2:
                with lock:
                    waiting_high.add(i)
                tasks.append(ex.submit(run, "high", i))
            else:
                tasks.append(ex.submit(run, "low", i))
        release.set()
        wait(tasks + blockers)
    return inversions


def bytes_per_queued(kind: str, n: int) -> float:
    release = threading.Event()
    gc.collect()
    if kind == "tpe":
        ex = ThreadPoolExecutor(1)
        ex.submit(release.wait)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        futures = [ex.submit(noop) for _ in range(n)]
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        release.set()
        wait(futures)
        ex.shutdown()
    else:
        sup = new_supervisor(1, timeout_warning=3600, timeout_critical=3600)
        sup.submit(release.wait)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        futures = [sup.submit(noop) for _ in range(n)]
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        release.set()
        wait(futures)
        sup.stop()
    return (after - before) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    opts = parser.parse_args()
    rounds = 3 if opts.quick else 7
    n = 5000 if opts.quick else 20000
    queued = 20000 if opts.quick else 200000

    print(f"thread tasks: atasker vs ThreadPoolExecutor (python {sys.version.split()[0]})")
    tp_a, tp_t = [], []
    for _ in range(rounds):  # interleave so drift hits both alike
        tp_t.append(throughput_tpe(n, 8))
        tp_a.append(throughput_atasker(n, 8))
    a, t = statistics.median(tp_a), statistics.median(tp_t)
    print(f"throughput ({n} tasks, 8 workers): atasker {a:,.0f}/s  TPE {t:,.0f}/s  ratio {a / t:.2f}x")

    sup = new_supervisor(8)
    ex = ThreadPoolExecutor(8)
    rt_a, rt_t = [], []
    for _ in range(10):  # interleaved blocks: both see the same machine state
        rt_a += round_trip(sup.submit, 200)
        rt_t += round_trip(ex.submit, 200)
    sup.stop()
    ex.shutdown()
    for q in (0.5, 0.99):
        qa, qt = pct(rt_a, q) * 1e6, pct(rt_t, q) * 1e6
        print(f"round trip p{int(q * 100)}: atasker {qa:.1f} us  TPE {qt:.1f} us  ratio {qa / qt:.2f}x")

    inv_a, inv_t = inversions_atasker(), inversions_tpe()
    print(f"priority inversions (2 workers blocked, 200 LOW + 200 HIGH): atasker {inv_a}  TPE {inv_t}")

    ba, bt = bytes_per_queued("atasker", queued), bytes_per_queued("tpe", queued)
    print(f"bytes per queued task ({queued} waiting): atasker {ba:.0f}  TPE {bt:.0f}  ratio {ba / bt:.2f}x")


if __name__ == "__main__":
    main()
