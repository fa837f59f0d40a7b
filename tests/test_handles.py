"""Task handles stay small and Future-compatible; the thread pool keeps its
reserve threads while busy and retires them once idle."""

from __future__ import annotations

import concurrent.futures
import sys
import threading

from tests.conftest import WAIT


def test_a_handle_has_no_dict_and_a_small_condition(supervisor):
    release = threading.Event()
    task = supervisor.submit(release.wait, (WAIT,))
    assert vars(task) == {}  # Future's attributes are slots too: nothing in a __dict__
    # Far below threading.Condition's ~1.3 KB (RLock, bound methods, deque).
    assert sys.getsizeof(task._condition) < 100
    release.set()
    assert task.result(WAIT) is True


def test_waiting_on_handles_from_many_threads(supervisor):
    release = threading.Event()
    tasks = [supervisor.submit(release.wait, (WAIT,)) for _ in range(3)]
    results: list[object] = []

    def waiter(task):
        results.append(task.result(WAIT))

    threads = [threading.Thread(target=waiter, args=(t,)) for t in tasks for _ in range(3)]
    for t in threads:
        t.start()
    done, not_done = concurrent.futures.wait(tasks, timeout=0.01)
    assert not done and len(not_done) == 3  # a wait that times out
    release.set()
    assert [f.result() for f in concurrent.futures.as_completed(tasks, timeout=WAIT)] == [True] * 3
    for t in threads:
        t.join(WAIT)
    assert results == [True] * 9


def test_condition_is_reentrant_and_wait_releases_fully(supervisor):
    release = threading.Event()
    task = supervisor.submit(release.wait, (WAIT,))
    cond = task._condition
    with cond:
        with cond:
            assert not task.done()  # done() takes the condition again
            assert cond.wait(0.01) is False  # releases both levels while waiting
    release.set()
    assert task.result(WAIT) is True


def test_reserve_threads_stay_while_the_pool_is_busy_and_retire_when_idle(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=2, reserve_high=0)
    names: set[str] = set()
    for _ in range(30):
        barrier = threading.Barrier(3, timeout=WAIT)

        def meet(barrier: threading.Barrier) -> None:
            names.add(threading.current_thread().name)
            barrier.wait()

        concurrent.futures.wait([sup.submit(meet, (barrier,)) for _ in range(3)], timeout=WAIT)
    # Three threads served every round: no thread per task for the reserves.
    assert len(names) <= 4, sorted(names)
    executor = sup.executor("thread")
    assert executor.wait_threads(1, timeout=WAIT)  # idle surplus threads retire
