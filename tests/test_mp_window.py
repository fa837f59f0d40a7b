"""Process tasks sent ahead (the window): faults, cancel, timeouts and
priorities keep their guarantees while workers hold more than one task.

The window opens only for short tasks; these tests make every task count as
short (``PIPELINE_BELOW`` raised, ``SHORT_STREAK`` 1), so that tasks are
sent ahead behind one that blocks, deterministically.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from pathlib import Path

import pytest

import tests.mp
from atasker import TASK_HIGH, TASK_LOW, TT_MP, ProcessDiedError
from atasker.builtin.mp import window
from tests.conftest import WAIT


@pytest.fixture(scope="module")
def manager():
    with multiprocessing.get_context("forkserver").Manager() as m:
        yield m


@pytest.fixture
def one_worker(make_supervisor, monkeypatch):
    """A pool of one worker whose window is open (every task counts as short)."""
    monkeypatch.setattr(window, "PIPELINE_BELOW", 60.0)
    monkeypatch.setattr(window, "SHORT_STREAK", 1)
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    assert sup.submit(tests.mp.square, (1,), tt=TT_MP).result(WAIT) == 1
    executor = sup.executor(TT_MP)
    assert executor.statistics()["window"] == window.WINDOW
    return sup, executor


def blocked_window(sup, executor, head_func, *head_args, **spec):
    """A head task that blocks, and the tasks sent ahead behind it."""
    head = sup.submit(head_func, head_args, tt=TT_MP, **spec)
    ahead = [sup.submit(tests.mp.square, (i,), tt=TT_MP) for i in range(window.WINDOW - 1)]
    queued = [sup.submit(tests.mp.square, (10 + i,), tt=TT_MP) for i in range(3)]
    stats = executor.statistics()
    assert stats["sent_ahead"] == window.WINDOW - 1 and stats["busy"] == 1
    assert all(sup.get_task_info(t).status == 0 for t in queued)  # beyond the window: in the queue
    return head, ahead, queued


def test_tasks_sent_ahead_to_a_worker_that_dies_run_elsewhere(one_worker, manager):
    sup, executor = one_worker
    die = manager.Event()
    head, ahead, queued = blocked_window(sup, executor, tests.mp.wait_then_exit, die)
    pid = executor.worker_pids()[0]
    die.set()
    with pytest.raises(ProcessDiedError, match="exited with code 3"):
        head.result(WAIT)
    # Only the task it was running fails; those sent ahead are sent again.
    assert [t.result(WAIT) for t in ahead + queued] == [0, 1, 100, 121, 144]
    assert executor.worker_pids() != [pid]
    assert executor.statistics()["died"] == 1


def test_a_timeout_kills_only_its_worker_and_what_waited_behind_it_runs(one_worker):
    sup, executor = one_worker
    head, ahead, queued = blocked_window(sup, executor, time.sleep, 60, timeout=0.3)
    with pytest.raises(TimeoutError):
        head.result(WAIT)
    assert [t.result(WAIT) for t in ahead + queued] == [0, 1, 100, 121, 144]
    assert executor.statistics()["timeouts"] == 1


def test_cancel_a_task_sent_ahead_skips_it_and_the_worker_lives(one_worker, manager, tmp_path):
    sup, executor = one_worker
    release = manager.Event()
    log = str(tmp_path / "ran")
    head = sup.submit(tests.mp.wait_for, (release,), tt=TT_MP)
    ahead = [sup.submit(tests.mp.record, (log, f"ahead{i}"), tt=TT_MP) for i in range(window.WINDOW - 1)]
    assert executor.statistics()["sent_ahead"] == window.WINDOW - 1
    pid = executor.worker_pids()[0]
    assert ahead[0].cancel() is True
    assert ahead[0].cancel() is True  # again: still ends cancelled
    release.set()
    assert head.result(WAIT) is True
    assert [t.result(WAIT) for t in ahead[1:]] == [f"ahead{i}" for i in range(1, window.WINDOW - 1)]
    with pytest.raises(concurrent.futures.CancelledError):
        ahead[0].result(WAIT)
    assert ahead[0].cancelled() and ahead[0].outcome == "cancelled"
    assert "ahead0" not in Path(log).read_text().split()  # never ran
    assert executor.worker_pids() == [pid]  # the worker was not killed


def test_cancel_the_running_task_kills_its_worker_and_the_rest_runs(one_worker, manager):
    sup, executor = one_worker
    head, ahead, queued = blocked_window(sup, executor, tests.mp.wait_for, manager.Event())
    assert head.cancel() is True
    with pytest.raises(concurrent.futures.CancelledError):
        head.result(WAIT)
    assert [t.result(WAIT) for t in ahead + queued] == [0, 1, 100, 121, 144]


def test_high_submitted_while_low_tasks_are_in_flight_starts_before_every_low_not_sent(one_worker, manager, tmp_path):
    sup, _ = one_worker
    release = manager.Event()
    log = str(tmp_path / "order")
    head = sup.submit(tests.mp.wait_for, (release,), tt=TT_MP, priority=TASK_LOW)
    lows = [sup.submit(tests.mp.record, (log, f"low{i}"), tt=TT_MP, priority=TASK_LOW) for i in range(8)]
    high = sup.submit(tests.mp.record, (log, "high"), tt=TT_MP, priority=TASK_HIGH)
    sent = window.WINDOW - 1  # at most this many LOW tasks were already on the worker
    release.set()
    concurrent.futures.wait([head, high, *lows], WAIT)
    order = Path(log).read_text().split()
    assert order == [f"low{i}" for i in range(sent)] + ["high"] + [f"low{i}" for i in range(sent, 8)]


def test_a_long_task_closes_the_window(one_worker, monkeypatch, manager):
    sup, executor = one_worker
    started, release = manager.Event(), manager.Event()
    long = sup.submit(tests.mp.signal_and_wait, (started, release), tt=TT_MP)
    assert started.wait(WAIT)
    # Nothing is sent ahead behind a task that has run longer than
    # PIPELINE_BELOW (0 now: it has), and its end closes the window.
    monkeypatch.setattr(window, "PIPELINE_BELOW", 0.0)
    waiting = [sup.submit(tests.mp.square, (i,), tt=TT_MP) for i in range(3)]
    assert executor.statistics()["sent_ahead"] == 0
    release.set()
    assert long.result(WAIT) is None
    assert executor.statistics()["window"] == 1
    assert [t.result(WAIT) for t in waiting] == [0, 1, 4]


def test_pool_window_multiplies_every_limit():
    from atasker.core.pool import Pool

    pool = Pool("mp", pool_size=2, reserve_normal=1, reserve_high=1, capacity=4)
    assert [pool.limit(b) for b in (TASK_LOW, 100, TASK_HIGH, 0)] == [2, 3, 4, 4]
    pool.set_window(3)
    assert pool.window == 3
    assert [pool.limit(b) for b in (TASK_LOW, 100, TASK_HIGH, 0)] == [6, 9, 12, 12]
    pool.configure(pool_size=1)  # sizes change, the window stays
    assert pool.limit(TASK_LOW) == 3
    with pytest.raises(ValueError, match="window"):
        pool.set_window(0)
