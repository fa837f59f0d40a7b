"""Load: many submitters, mixed priorities, random cancels; nothing lost."""

from __future__ import annotations

import concurrent.futures
import gc
import random
import resource
import threading
import time
import tracemalloc

import pytest

from atasker import TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL
from tests.conftest import WAIT
from tests.reliability.conftest import size

PRIORITIES = (TASK_LOW, TASK_NORMAL, TASK_HIGH, TASK_CRITICAL)


def test_many_submitters_with_random_cancels(make_supervisor, figures):
    per_thread = size(2500, 25000)
    sup = make_supervisor(pool_size=4, reserve_normal=2, reserve_high=2)
    executor = sup.executor("thread")
    handles: list[list] = [[] for _ in range(8)]
    cancelled_ok = [0] * 8

    def submitter(k: int) -> None:
        rnd = random.Random(k)
        for i in range(per_thread):
            task = sup.submit(int, (i,), priority=PRIORITIES[rnd.randrange(4)])
            handles[k].append(task)
            if rnd.random() < 0.1:
                cancelled_ok[k] += task.cancel()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 6)
    tasks = [t for chunk in handles for t in chunk]
    _, not_done = concurrent.futures.wait(tasks, timeout=WAIT * 6)
    elapsed = time.perf_counter() - t0
    assert not not_done
    cancelled = sum(t.cancelled() for t in tasks)
    completed = sum(not t.cancelled() and t.exception() is None for t in tasks)
    assert cancelled == sum(cancelled_ok)
    assert completed + cancelled == len(tasks) == 8 * per_thread
    assert all(t.status == -1 for t in tasks if t.cancelled())
    assert all(sup.get_task_info(t) is None for t in tasks)
    assert sup.get_info()["unfinished"] == 0
    # Threads grown for CRITICAL and reserve work retire when idle.
    assert executor.wait_threads(4, timeout=WAIT)
    figures(submitted=len(tasks), completed=completed, cancelled=cancelled, seconds=round(elapsed, 2))


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.mark.slow
def test_soak_memory_does_not_grow(make_supervisor, figures):
    total = size(100_000, 1_000_000)
    batch = 10_000
    sup = make_supervisor(pool_size=8, reserve_normal=0, reserve_high=0)

    def run_batch() -> None:
        concurrent.futures.wait([sup.submit(int) for _ in range(batch)], timeout=WAIT * 3)

    for _ in range(3):  # warm-up: pools, caches, allocator arenas
        run_batch()
    gc.collect()
    tracemalloc.start()
    start_traced = tracemalloc.get_traced_memory()[0]
    start_rss = rss_kib()
    for _ in range(total // batch):
        run_batch()
    gc.collect()
    growth = tracemalloc.get_traced_memory()[0] - start_traced
    tracemalloc.stop()
    rss_growth = rss_kib() - start_rss
    # No per-task leak: growth stays far below one byte per task.
    assert growth < 1024 * 1024, f"traced memory grew {growth} bytes over {total} tasks"
    figures(tasks=total, traced_growth_bytes=growth, max_rss_growth_kib=rss_growth)


def test_bytes_per_queued_task(make_supervisor, figures):
    waiting = size(20_000, 200_000)
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0, timeout_warning=3600, timeout_critical=3600)
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tasks = [sup.submit(int) for _ in range(waiting)]
    per_task = (tracemalloc.get_traced_memory()[0] - before) / waiting
    tracemalloc.stop()
    gate.set()
    concurrent.futures.wait([blocker, *tasks], timeout=WAIT * 3)
    assert all(t.done() for t in tasks)
    assert per_task < 4096
    figures(waiting=waiting, bytes_per_queued_task=round(per_task))
