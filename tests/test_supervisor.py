"""Supervisor lifecycle, task handles, info, delay, watchdog, errors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from atasker import (
    TASK_CRITICAL,
    TASK_HIGH,
    TASK_LOW,
    SupervisorStoppedError,
    Task,
    TaskSupervisor,
    UnknownTaskTypeError,
    background_task,
    wait_completed,
)
from tests.conftest import WAIT


def test_handle_is_a_future_and_a_task_id(supervisor):
    gate = threading.Event()
    task = background_task(gate.wait, supervisor=supervisor)(WAIT)
    assert isinstance(task, concurrent.futures.Future)
    info = supervisor.get_task_info(task)
    assert info is supervisor.get_task_info(task.id)
    assert (info.id, info.task, info.tt, info.status) == (task.id, task, "thread", 1)
    assert info.priority == 100 and info.time_queued <= info.time_started
    gate.set()
    assert task.result(WAIT) is True
    assert supervisor.get_task_info(task) is None
    assert supervisor.get_task_info(task.id) is None


def test_queued_task_info_has_status_zero(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,))
    queued = sup.submit(int)
    info = sup.get_task_info(queued)
    assert info.status == 0 and info.time_started is None
    gate.set()
    assert queued.result(WAIT) == 0 and blocker.result(WAIT)
    assert sup.get_task_info(queued) is None


def test_handles_work_with_wait_as_completed_and_asyncio(supervisor):
    tasks = [supervisor.submit(pow, (2, i)) for i in range(10)]
    _done, not_done = concurrent.futures.wait(tasks, WAIT)
    assert not not_done
    assert sorted(t.result() for t in concurrent.futures.as_completed(tasks, WAIT)) == [2**i for i in range(10)]

    async def main():
        a = await supervisor.submit(pow, (3, 2))
        b = await asyncio.wrap_future(supervisor.submit(pow, (2, 5)))
        return a, b

    assert asyncio.run(main()) == (9, 32)


def test_wait_completed(supervisor):
    gate = threading.Event()
    assert wait_completed(supervisor.submit(pow, (2, 3))) == 8
    assert wait_completed([supervisor.submit(pow, (2, i)) for i in range(3)], timeout=WAIT) == [1, 2, 4]
    slow = supervisor.submit(gate.wait, (WAIT,))
    with pytest.raises(TimeoutError, match="1 of 2 task"):
        wait_completed([supervisor.submit(int), slow], timeout=0.05)
    gate.set()
    slow.result(WAIT)


def test_decorator_forms(supervisor):
    @background_task(supervisor=supervisor, priority=TASK_HIGH, name="adder")
    def add(a, b=0):
        return a + b

    task = add(1, b=2)
    assert task.result(WAIT) == 3
    assert (task.name, task.priority) == ("adder", TASK_HIGH)
    assert add.__name__ == "add"

    def plain(x):
        return x * 2

    assert background_task(plain, supervisor=supervisor)(21).result(WAIT) == 42


def test_decorator_uses_global_supervisor_at_call_time(monkeypatch):
    import atasker

    sup = TaskSupervisor(autoload=False)
    monkeypatch.setattr(atasker, "task_supervisor", sup)
    try:
        task = background_task(pow)(2, 4)
        assert task.result(WAIT) == 16 and task.supervisor is sup
    finally:
        sup.stop()


def test_callback_gets_the_result(supervisor):
    got = concurrent.futures.Future()
    task = supervisor.submit(pow, (2, 10), callback=got.set_result)
    assert task.result(WAIT) == 1024
    assert got.result(WAIT) == 1024


def test_callback_that_raises_is_logged_and_task_still_done(supervisor, caplog):
    def bad_callback(result):
        raise RuntimeError("callback broke")

    task = supervisor.submit(int, callback=bad_callback)
    assert task.result(WAIT) == 0
    # Not even SystemExit from a callback leaves the handle unresolved or kills the worker.
    exiting = supervisor.submit(int, callback=lambda _: sys.exit("callback exits"))
    assert exiting.result(WAIT) == 0
    assert supervisor.submit(pow, (2, 2)).result(WAIT) == 4
    supervisor.stop()
    assert "callback broke" in caplog.text and "callback exits" in caplog.text


def test_task_exception_is_on_handle_and_logged_at_debug_once_retrieved(supervisor, caplog):
    def fail():
        raise ValueError("boom 42")

    with caplog.at_level(logging.DEBUG, logger="atasker"):
        task = supervisor.submit(fail, name="failing")
        with pytest.raises(ValueError, match="boom 42"):
            task.result(WAIT)
        assert isinstance(task.exception(), ValueError)
        assert task.outcome == "failed"
        del task
        gc.collect()
    failing = [r for r in caplog.records if "failing" in r.getMessage()]
    assert failing and all(r.levelno == logging.DEBUG for r in failing)
    assert supervisor.submit(pow, (2, 2)).result(WAIT) == 4  # still serving


def test_a_failure_nobody_retrieved_is_logged_at_error_with_its_traceback(supervisor, caplog):
    def fail_unseen():
        raise ValueError("nobody looked")

    with caplog.at_level(logging.ERROR, logger="atasker"):
        task = supervisor.submit(fail_unseen, name="forgotten")
        concurrent.futures.wait([task], WAIT)
        del task
        gc.collect()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "forgotten" in m and "never retrieved" in m and "nobody looked" in m and "fail_unseen" in m for m in errors
    )


def test_unretrieved_failures_are_logged_when_the_supervisor_stops(make_supervisor, caplog):
    sup = make_supervisor()
    task = sup.submit(lambda: 1 / 0, name="kept")
    concurrent.futures.wait([task], WAIT)
    with caplog.at_level(logging.ERROR, logger="atasker"):
        sup.stop()
    assert any("kept" in r.getMessage() and "never retrieved" in r.getMessage() for r in caplog.records)
    assert task.done()  # still referenced: logged at stop, not at collection


def test_base_exception_in_task_does_not_kill_the_pool(supervisor):
    def exit_():
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        supervisor.submit(exit_).result(WAIT)
    assert supervisor.submit(int).result(WAIT) == 0


def test_unknown_task_type_lists_known_ones(supervisor):
    with pytest.raises(UnknownTaskTypeError, match=r"unknown task type 'nope'.*'thread'"):
        supervisor.submit(print, tt="nope")
    with pytest.raises(UnknownTaskTypeError):
        background_task(print, tt="nope", supervisor=supervisor)()


@pytest.mark.parametrize("bad", [None, 42, "print"])
def test_non_callable_is_rejected(supervisor, bad):
    with pytest.raises(TypeError, match="must be callable"):
        supervisor.submit(bad)
    if bad is not None:  # background_task(None) is the decorator-factory form
        with pytest.raises(TypeError, match="needs a callable"):
            background_task(bad)


def test_cancel_queued_task(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,))
    queued = [sup.submit(int) for _ in range(3)]
    assert queued[1].cancel()
    assert queued[1].cancelled() and queued[1].status == -1
    assert sup.get_task_info(queued[1]) is None
    assert sup.get_info()["task_types"]["thread"]["waiting_total"] == 2
    assert not blocker.cancel()  # running thread tasks cannot be interrupted
    gate.set()
    assert [queued[0].result(WAIT), queued[2].result(WAIT)] == [0, 0]
    with pytest.raises(concurrent.futures.CancelledError):
        queued[1].result(0)


def test_delay_holds_no_slot(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    delayed = sup.submit(time.time, delay=0.3)
    assert sup.get_task_info(delayed).status == 0
    assert sup.get_info()["delayed"] == 1
    now = sup.submit(time.time)  # the only slot is free while the other waits
    assert now.result(WAIT) < delayed.result(WAIT)
    assert delayed.result() - delayed.time_queued >= 0.29


def test_cancel_delayed_task(supervisor):
    delayed = supervisor.submit(int, delay=30)
    assert delayed.cancel()
    assert delayed.status == -1 and supervisor.get_task_info(delayed) is None
    assert supervisor.get_info()["unfinished"] == 0


def test_start_is_idempotent_and_autostart(make_supervisor):
    sup = make_supervisor(start=False)
    assert not sup.is_active()
    assert sup.submit(pow, (2, 2)).result(WAIT) == 4  # started itself
    assert sup.is_active()
    sup.start()
    sup.start()
    assert sup.submit(int).result(WAIT) == 0


def test_stop_waits_for_queued_and_running(make_supervisor):
    sup = make_supervisor(pool_size=2, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    tasks = [sup.submit(gate.wait, (WAIT,)) for _ in range(10)]
    threading.Timer(0.05, gate.set).start()
    assert sup.stop(wait=True) is True
    assert all(t.done() and t.result() is True for t in tasks)


def test_stop_from_inside_a_task_waits_for_the_others_not_itself(make_supervisor):
    sup = make_supervisor(pool_size=2, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    other = sup.submit(gate.wait, (WAIT,))
    queued = [sup.submit(pow, (2, i)) for i in range(5)]

    def stop_from_here():
        gate.set()  # the other task may end now; stop() waits for it and the queue
        return sup.stop(wait=True), sup.is_active(), other.done(), [t.done() for t in queued]

    stopper = sup.submit(stop_from_here, priority=TASK_CRITICAL)
    assert stopper.result(WAIT) == (True, False, True, [True] * 5)
    assert [t.result() for t in queued] == [1, 2, 4, 8, 16]
    assert stopper.outcome == "completed" and sup.get_tasks() == []


def test_stop_from_a_callback_while_the_worker_holds_its_next_task(make_supervisor):
    # pool of one: when A ends, its worker takes B before A's callback runs.
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    stopped = []
    a = sup.submit(gate.wait, (WAIT,), callback=lambda _: stopped.append(sup.stop(wait=WAIT)))
    b = sup.submit(pow, (2, 3))
    gate.set()
    assert a.result(WAIT) is True and stopped == [True]
    assert b.result(WAIT) == 8 and not sup.is_active()


def test_stop_cancel_tasks_cancels_queued_and_lets_running_finish(make_supervisor):
    sup = make_supervisor(pool_size=2, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    running = [sup.submit(gate.wait, (WAIT,)) for _ in range(2)]
    queued = [sup.submit(int) for _ in range(5)]
    delayed = sup.submit(int, delay=30)
    threading.Timer(0.05, gate.set).start()
    assert sup.stop(wait=True, cancel_tasks=True) is True
    assert all(t.result() is True for t in running)
    assert all(t.cancelled() and t.status == -1 for t in [*queued, delayed])


def test_stop_with_timed_wait_returns_and_logs_running(make_supervisor, caplog):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    stuck = sup.submit(gate.wait, (WAIT,), name="stuck-task")
    queued = sup.submit(int)
    t0 = time.monotonic()
    try:
        assert sup.stop(wait=0.2) is False
        assert time.monotonic() - t0 < 0.2 + 2
        assert "stuck-task" in caplog.text
        assert queued.cancelled()
    finally:
        gate.set()
    assert stuck.result(WAIT) is True  # the handle still resolves


def test_submit_after_stop_raises_and_start_revives(make_supervisor):
    sup = make_supervisor()
    sup.stop()
    with pytest.raises(SupervisorStoppedError, match="stopped"):
        sup.submit(int)
    sup.start()
    assert sup.submit(int).result(WAIT) == 0


def test_block_returns_when_stopped(supervisor):
    threading.Timer(0.05, supervisor.stop).start()
    done = threading.Event()
    t = threading.Thread(target=lambda: (supervisor.block(), done.set()))
    t.start()
    assert done.wait(WAIT)
    t.join(WAIT)


def test_20000_tasks_from_4_threads_nothing_lost(make_supervisor):
    sup = make_supervisor(pool_size=4, reserve_normal=2, reserve_high=2)
    results: list[list[Task]] = [[] for _ in range(4)]
    priorities = (TASK_LOW, 100, TASK_HIGH, 0)

    def submitter(k):
        for i in range(5000):
            results[k].append(sup.submit(int, (str(i),), priority=priorities[i % 4]))

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 3)
    tasks = [t for chunk in results for t in chunk]
    assert len(tasks) == 20000
    _done, not_done = concurrent.futures.wait(tasks, timeout=WAIT * 3)
    assert not not_done
    assert sum(t.result() for t in tasks) == 4 * sum(range(5000))
    assert sup.stop(wait=WAIT)
    info = sup.get_info()
    assert info["unfinished"] == 0
    assert info["task_types"]["thread"]["running"] == 0
    assert all(sup.get_task_info(t) is None for t in tasks[:100])


def test_a_draining_stop_refuses_follow_up_work_from_tasks(make_supervisor):
    sup = make_supervisor(pool_size=2)
    gate = threading.Event()

    def parent():
        assert gate.wait(WAIT)
        return sup.submit(pow, (2, 3))

    task = sup.submit(parent)
    threading.Timer(0.05, gate.set).start()
    assert sup.stop(wait=True)
    with pytest.raises(SupervisorStoppedError, match="is stopping: it finishes the tasks it has and accepts no new"):
        task.result(0)
    with pytest.raises(SupervisorStoppedError, match="is stopped"):
        sup.submit(int)


def test_tasks_may_submit_and_wait_on_other_tasks(make_supervisor):
    sup = make_supervisor(pool_size=2, reserve_normal=0, reserve_high=1)

    def parent():
        child = sup.submit(pow, (2, 8), priority=TASK_HIGH)
        sup.set_thread_pool(pool_size=2)
        return child.result(WAIT) + 1

    assert sup.submit(parent).result(WAIT) == 257


def test_watchdog_warns_and_calls_functions(make_supervisor, caplog):
    warned = concurrent.futures.Future()
    critical = concurrent.futures.Future()
    sup = make_supervisor(
        pool_size=1,
        reserve_normal=0,
        reserve_high=0,
        timeout_warning=0.1,
        timeout_critical=0.2,
        timeout_warning_func=warned.set_result,
        timeout_critical_func=critical.set_result,
    )
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,))
    waiting = sup.submit(int, name="starved", priority=TASK_LOW)
    try:
        assert warned.result(WAIT) is waiting
        assert critical.result(WAIT) is waiting
    finally:
        gate.set()
    blocker.result(WAIT)
    waiting.result(WAIT)
    levels = {r.levelno for r in caplog.records if "starved" in r.getMessage()}
    assert {logging.WARNING, logging.CRITICAL} <= levels


def test_watchdog_is_silent_for_tasks_that_start_in_time(make_supervisor, caplog):
    warned = []
    sup = make_supervisor(
        pool_size=1, reserve_normal=0, reserve_high=0, timeout_warning=0.2, timeout_warning_func=warned.append
    )
    tasks = [sup.submit(int) for _ in range(50)]
    for t in tasks:
        t.result(WAIT)
    # Run the watchdog check now instead of sleeping until its timer fires.
    sup.extension("watchdog").check(False)
    assert warned == [] and "waiting for a slot" not in caplog.text


def test_script_exits_cleanly_without_stop(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            from atasker import background_task, TASK_LOW

            @background_task
            def mytask(n):
                time.sleep(0.05)
                sys.stdout.write(f'done {n}\\n')  # one write: lines never interleave

            for i in range(5):
                mytask(i)
            background_task(mytask, priority=TASK_LOW, delay=0.1)(99)
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split("\n")[:-1]) == sorted(f"done {i}" for i in [0, 1, 2, 3, 4, 99])
    assert proc.stderr == ""


def test_get_info_reports_pools(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,), priority=TASK_LOW)
    waiting = [sup.submit(int, priority=p) for p in (TASK_LOW, TASK_HIGH, TASK_HIGH)]
    info = sup.get_info()
    thread = info["task_types"]["thread"]
    assert info["active"] and info["unfinished"] == 4
    assert thread["running"] == 1 and thread["running_by_priority"] == {TASK_LOW: 1}
    assert thread["waiting"] == {TASK_HIGH: 2, TASK_LOW: 1} and thread["waiting_total"] == 3
    gate.set()
    for t in [blocker, *waiting]:
        t.result(WAIT)


def test_cancelled_tasks_count_as_done_for_wait_and_as_completed(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,))
    queued = sup.submit(int)
    waiter_result = []
    waiter = threading.Thread(target=lambda: waiter_result.append(concurrent.futures.wait([queued], WAIT)))
    waiter.start()
    assert queued.cancel()
    waiter.join(WAIT)
    done, not_done = waiter_result[0]
    assert done == {queued} and not not_done
    assert list(concurrent.futures.as_completed([queued], WAIT)) == [queued]
    gate.set()
    blocker.result(WAIT)
