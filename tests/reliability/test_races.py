"""Races around stop(): every handle resolves, nothing hangs (issue #19:
items 1, 7, 11, 17 and 22).  ``make stress`` runs them many more times."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

import atasker.builtin.thread
from atasker import SupervisorStoppedError
from tests.conftest import WAIT
from tests.reliability.conftest import size


def test_stop_racing_resizes_submits_and_due_delays_leaves_no_handle_unresolved(make_supervisor, figures):
    """A task admitted while the executor shuts down is never left to a dead
    pool: each handle ends completed, cancelled or failed with the reason."""
    runs, outcomes = size(40, 300), {"completed": 0, "cancelled": 0, "failed": 0}
    for run in range(runs):
        sup = make_supervisor(pool_size=2, reserve_normal=0, reserve_high=0)
        halt = threading.Event()
        tasks = []

        def resizer(sup=sup, halt=halt):
            for k in range(10**9):
                if halt.is_set():
                    return
                sup.set_thread_pool(pool_size=1 + k % 3)

        def submitter(sup=sup, halt=halt, tasks=tasks):
            for k in range(10**9):
                if halt.is_set():
                    return
                try:
                    tasks.append(sup.submit(pow, (2, k % 7), delay=0.001 if k % 3 == 0 else None))
                except SupervisorStoppedError:
                    return

        threads = [threading.Thread(target=resizer), threading.Thread(target=submitter)]
        for t in threads:
            t.start()
        while len(tasks) < 50:
            pass  # let the race start: tasks queue, delays come due
        sup.stop(wait=False if run % 2 else 0.002)
        halt.set()
        for t in threads:
            t.join(WAIT)
        for task in tasks:
            try:
                task.exception(WAIT)  # raises TimeoutError if it never resolves
            except BaseException as exc:  # CancelledError
                assert task.cancelled(), exc
            outcome = task.outcome
            outcomes[outcome if outcome in outcomes else "failed"] += 1
            if task.outcome == "failed":
                assert isinstance(task.exception(), SupervisorStoppedError), task.exception()
                assert "was not started" in str(task.exception())
    figures(runs=runs, **outcomes)


def test_shutdown_joins_a_worker_thread_that_is_still_starting(make_supervisor, monkeypatch):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    executor = sup.executor("thread")
    registered, proceed = threading.Event(), threading.Event()
    real_thread = threading.Thread

    class SlowToStart(real_thread):
        def start(self):
            if self.name.startswith("atasker_thread_"):
                registered.set()
                proceed.wait(WAIT)
            super().start()

    monkeypatch.setattr(atasker.builtin.thread.threading, "Thread", SlowToStart)
    submitted = []
    submitter = real_thread(target=lambda: submitted.append(sup.submit(pow, (2, 4))))
    submitter.start()
    assert registered.wait(WAIT)
    errors = []

    def shut_down():
        try:
            executor.shutdown(wait=True)
        except BaseException as exc:
            errors.append(exc)

    closer = real_thread(target=shut_down)
    closer.start()
    closer.join(0.3)  # sleep-ok: gives shutdown() the moment the old code joined the unstarted thread in
    proceed.set()
    closer.join(WAIT)
    submitter.join(WAIT)
    monkeypatch.undo()
    assert errors == []
    assert submitted[0].result(WAIT) == 16
    assert executor.thread_count() == 0


def test_a_second_stop_waits_for_the_drain_under_way_and_returns_its_result(make_supervisor):
    sup = make_supervisor(pool_size=1)
    gate = threading.Event()
    running = sup.submit(gate.wait, (WAIT,))
    first: list[bool] = []
    stopper = threading.Thread(target=lambda: first.append(sup.stop(wait=True)))
    stopper.start()
    while sup.is_active():
        pass  # the first stop has begun
    assert sup.stop(wait=0.1) is False  # a bounded second stop gives up after its own wait
    threading.Timer(0.2, gate.set).start()
    t0 = time.monotonic()
    assert sup.stop(wait=True) is True
    assert time.monotonic() - t0 >= 0.1
    assert running.done() and running.result() is True
    stopper.join(WAIT)
    assert first == [True]


def test_a_draining_stop_refuses_tasks_that_resubmit_themselves_and_outside_producers(make_supervisor, figures):
    runs, refused = size(5, 100), 0
    for _ in range(runs):
        sup = make_supervisor(pool_size=2)
        errors: list[BaseException] = []
        produced: list[BaseException] = []
        halt = threading.Event()  # set only if the stop never returns (the old code)

        def again(sup=sup, errors=errors, halt=halt):
            if halt.is_set():
                return
            try:
                sup.submit(again)
            except SupervisorStoppedError as exc:
                errors.append(exc)

        def producer(sup=sup, errors=produced, halt=halt):
            while not halt.is_set():
                try:
                    sup.submit(int)
                except SupervisorStoppedError as exc:
                    errors.append(exc)
                    return

        gate = threading.Event()
        blocker = sup.submit(gate.wait, (WAIT,))  # keeps the drain going while the producer tries
        sup.submit(again)
        stopper = threading.Thread(target=sup.stop, kwargs={"wait": True})
        stopper.start()
        while sup.is_active():
            pass  # the stop has begun
        outside = threading.Thread(target=producer)
        outside.start()
        outside.join(1)  # sleep-ok: on the new code it ends at its first submit
        gate.set()
        stopper.join(WAIT)
        if stopper.is_alive():
            halt.set()  # lets the old code's endless chain end, so that the test fails instead of hanging
        outside.join(WAIT)
        assert not stopper.is_alive(), "stop(wait=True) never returned: new work kept coming"
        assert len(errors) == 1 and len(produced) == 1, (errors, produced)
        assert "is stopping: it finishes the tasks it has and accepts no new ones" in str(errors[0])
        assert "is stopping" in str(produced[0]) and blocker.result(0) is True
        refused += 2
    figures(runs=runs, refused=refused)


SIGNAL_SCRIPT = """
import os, signal, sys, threading
from atasker import TaskSupervisor

results = []
state = {}

def handler(signum, frame):
    results.append(state["sup"].stop(wait=True))

signal.signal(signal.SIGUSR1, handler)

# 1. The signal lands while the main thread holds the supervisor's lock.
sup = state["sup"] = TaskSupervisor(autoload=False, pool_size=2)
sup.submit(int).result(10)
with sup._dispatch.lock:
    os.kill(os.getpid(), signal.SIGUSR1)
    for _ in range(10000):
        pass  # the handler runs here, inside the lock
assert results == [False], results  # it could not wait there: a thread stops
assert sup.stop(wait=10) is True

# 2. Signals at random moments of a busy main thread.
runs = int(sys.argv[1])
for run in range(runs):
    sup = state["sup"] = TaskSupervisor(autoload=False, pool_size=2, name=f"run{run}")
    tasks = []
    signal.setitimer(signal.ITIMER_REAL, 0.001 + (run % 7) * 0.0007)
    signal.signal(signal.SIGALRM, handler)
    try:
        while len(results) < run + 2:
            tasks.append(sup.submit(pow, (2, 3)))
            sup.get_info()
            sup.set_thread_pool(pool_size=1 + len(tasks) % 3)
    except Exception as exc:  # SupervisorStoppedError once the stop began
        assert "stop" in str(exc), exc
    assert sup.stop(wait=10) is True, run
    assert all(t.done() for t in tasks)
print("ok", runs)
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGUSR1"), reason="needs POSIX signals")
def test_stop_from_a_signal_handler_never_deadlocks(tmp_path, figures):
    runs = size(30, 300)
    script = tmp_path / "signalled.py"
    script.write_text(textwrap.dedent(SIGNAL_SCRIPT))
    out = subprocess.run([sys.executable, str(script), str(runs)], capture_output=True, text=True, timeout=WAIT * 6)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["ok", str(runs)]
    figures(signal_runs=runs)
