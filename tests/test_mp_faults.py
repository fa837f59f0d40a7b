"""Process task faults: each ends in a defined state and the pool keeps serving.

A task that raises, a worker that dies (``os._exit``, SIGKILL, a segfault),
an unpicklable function / argument / result / exception, a timeout.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time

import pytest

import tests.mp
from atasker import (
    TASK_HIGH,
    TT_MP,
    ProcessDiedError,
    RemoteTraceback,
    TaskPicklingError,
    WorkerDiedError,
)
from tests.conftest import WAIT
from tests.test_mp import wait_gone

#: fork is unsafe with threads and Python 3.12+ warns about it; it is tested
#: anyway because users may ask for it.
START_METHODS = [
    "forkserver",
    "spawn",
    pytest.param("fork", marks=pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")),
]


@pytest.fixture(scope="module")
def manager():
    """A multiprocessing manager: its Event/Queue proxies pickle into tasks."""
    with multiprocessing.get_context("forkserver").Manager() as m:
        yield m


def make_pool(make_supervisor, workers: int = 2, start_method: str | None = None):
    sup = make_supervisor()
    options = {"start_method": start_method} if start_method else {}
    sup.create_mp_pool(pool_size=workers, reserve_normal=0, reserve_high=0, **options)
    return sup


# ---------------------------------------------------------------- a task that raises


@pytest.mark.parametrize("start_method", START_METHODS)
def test_raising_task_same_type_message_and_remote_traceback(make_supervisor, start_method):
    sup = make_pool(make_supervisor, 1, start_method)
    task = sup.submit(tests.mp.raise_value_error, ("bad value",), tt=TT_MP)
    with pytest.raises(ValueError, match="^bad value$") as info:
        task.result(WAIT)
    assert type(info.value) is ValueError and task.outcome == "failed"
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "raise_value_error" in cause.tb and "raise ValueError(message)" in cause.tb
    assert "Traceback (most recent call last)" in str(cause)
    # the worker survived its task's exception
    pids = sup.executor(TT_MP).worker_pids()
    assert sup.submit(tests.mp.pid, tt=TT_MP).result(WAIT) in pids


def test_custom_exception_keeps_its_attributes(make_supervisor):
    sup = make_pool(make_supervisor, 1)
    with pytest.raises(tests.mp.CustomError) as info:
        sup.submit(tests.mp.raise_custom, (42,), tt=TT_MP).result(WAIT)
    assert (info.value.code, info.value.text) == (42, "custom failure")


def test_base_exceptions_reach_the_handle_and_the_worker_lives(make_supervisor):
    sup = make_pool(make_supervisor, 1)
    pid = sup.submit(tests.mp.pid, tt=TT_MP).result(WAIT)
    with pytest.raises(SystemExit):
        sup.submit(tests.mp.sys_exit, (5,), tt=TT_MP).result(WAIT)
    assert sup.submit(tests.mp.pid, tt=TT_MP).result(WAIT) == pid


def test_exception_that_cannot_be_unpickled(make_supervisor):
    sup = make_pool(make_supervisor, 1)
    task = sup.submit(tests.mp.raise_unpicklable, tt=TT_MP)
    with pytest.raises(TaskPicklingError, match=r"raised tests\.mp\.UnpicklableError: code 7.*could not be pickled"):
        task.result(WAIT)
    assert isinstance(task.exception().__cause__, RemoteTraceback)
    assert sup.submit(tests.mp.square, (3,), tt=TT_MP).result(WAIT) == 9


# ---------------------------------------------------------------- a worker that dies


DEATHS = {
    "os._exit": (tests.mp.exit_now, "exited with code 3", 3),
    "SIGKILL": (tests.mp.kill_self, "killed by SIGKILL", -signal.SIGKILL),
    "segfault": (tests.mp.segfault, "killed by SIGSEGV", -signal.SIGSEGV),
}


@pytest.mark.parametrize("death", DEATHS)
def test_dead_worker_fails_only_its_task_and_is_replaced(make_supervisor, manager, death):
    func, text, exitcode = DEATHS[death]
    sup = make_pool(make_supervisor, 2)
    executor = sup.executor(TT_MP)
    started, release = manager.Event(), manager.Event()
    other = sup.submit(tests.mp.signal_and_wait, (started, release, "other"), tt=TT_MP)
    assert started.wait(WAIT)
    doomed = sup.submit(func, tt=TT_MP)
    with pytest.raises(ProcessDiedError) as info:
        doomed.result(WAIT)
    error = info.value
    assert isinstance(error, WorkerDiedError)
    assert text in str(error) and f"process task {doomed.id}" in str(error)
    assert error.exitcode == exitcode and error.pid
    assert wait_gone(error.pid)
    # the other running task is unaffected, the worker is replaced
    release.set()
    assert other.result(WAIT) == "other"
    assert executor.wait_workers(2, WAIT, exclude={error.pid})
    results = [sup.submit(tests.mp.square, (i,), tt=TT_MP) for i in range(10)]
    assert [t.result(WAIT) for t in results] == [i * i for i in range(10)]
    assert pickle.loads(pickle.dumps(error)).exitcode == exitcode


@pytest.mark.parametrize("start_method", START_METHODS)
def test_death_under_each_start_method(make_supervisor, start_method):
    sup = make_pool(make_supervisor, 1, start_method)
    with pytest.raises(ProcessDiedError, match="killed by SIGKILL"):
        sup.submit(tests.mp.kill_self, tt=TT_MP).result(WAIT)
    assert sup.submit(tests.mp.square, (7,), tt=TT_MP).result(WAIT) == 49


def test_killing_a_worker_while_50_tasks_are_queued(make_supervisor, manager):
    sup = make_pool(make_supervisor, 2)
    queue, release = manager.Queue(), manager.Event()
    first = sup.submit(tests.mp.put_pid_and_wait, (queue, release), tt=TT_MP)
    second = sup.submit(tests.mp.put_pid_and_wait, (queue, release), tt=TT_MP)
    pids = {queue.get(timeout=WAIT), queue.get(timeout=WAIT)}
    queued = [sup.submit(tests.mp.square, (i,), tt=TT_MP) for i in range(50)]
    assert all(sup.get_task_info(t).status == 0 for t in queued)  # both workers are busy
    victim, survivor = (first, second) if first.executor_data.pid in pids else (second, first)
    victim_pid = victim.executor_data.pid
    t0 = time.monotonic()
    os.kill(victim_pid, signal.SIGKILL)
    with pytest.raises(ProcessDiedError, match="killed by SIGKILL"):
        victim.result(WAIT)
    latency = time.monotonic() - t0
    assert latency < 1.0, f"the death was noticed after {latency:.3f} s"
    # The replacement runs the whole queue while the other worker still
    # holds its task: nothing queued is lost or stuck.
    assert [t.result(WAIT) for t in queued] == [i * i for i in range(50)]
    assert not survivor.done()
    release.set()
    assert survivor.result(WAIT) in pids - {victim_pid}
    assert sup.get_info()["task_types"]["mp"]["running"] == 0


def test_idle_worker_death_is_logged_and_replaced(make_supervisor, caplog):
    sup = make_pool(make_supervisor, 2)
    executor = sup.executor(TT_MP)
    sup.submit(tests.mp.square, (1,), tt=TT_MP).result(WAIT)
    assert executor.wait_workers(2, WAIT)
    pid = executor.worker_pids()[0]
    with caplog.at_level(logging.WARNING, logger="atasker"):
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid)
        assert executor.wait_workers(2, WAIT, exclude={pid})
    assert any("idle worker process" in r.getMessage() and str(pid) in r.getMessage() for r in caplog.records)
    assert sup.submit(tests.mp.square, (5,), tt=TT_MP).result(WAIT) == 25


def test_many_deaths_at_once_lose_nothing_else(make_supervisor):
    sup = make_pool(make_supervisor, 2)
    tasks = []
    for i in range(30):
        func = (tests.mp.exit_now, tests.mp.kill_self, tests.mp.segfault)[i % 3] if i % 2 else tests.mp.square
        tasks.append(sup.submit(func, (i,) if func is tests.mp.square else (), tt=TT_MP, priority=TASK_HIGH))
    _, not_done = concurrent.futures.wait(tasks, WAIT * 2)
    assert not not_done
    for i, task in enumerate(tasks):
        if i % 2:
            assert isinstance(task.exception(), ProcessDiedError)
        else:
            assert task.result() == i * i
    assert sup.executor(TT_MP).statistics()["died"] == 15


# ---------------------------------------------------------------- timeouts


def test_timeout_kills_and_replaces_the_worker(make_supervisor, manager):
    sup = make_pool(make_supervisor, 1)
    executor = sup.executor(TT_MP)
    started = manager.Event()
    task = sup.submit(tests.mp.signal_and_sleep, (started, 60), tt=TT_MP, timeout=0.3)
    assert started.wait(WAIT)
    pid = executor.worker_pids()[0]
    with pytest.raises(TimeoutError, match=r"timeout of 0\.3 s; its worker process \d+ was killed"):
        task.result(WAIT)
    assert task.time_finished - task.time_started >= 0.3
    assert wait_gone(pid)
    assert sup.submit(tests.mp.pid, tt=TT_MP).result(WAIT) != pid
    assert executor.statistics()["timeouts"] == 1


def test_timeout_counts_from_the_start_not_from_the_queue(make_supervisor, manager):
    sup = make_pool(make_supervisor, 1)
    started, release = manager.Event(), manager.Event()
    blocker = sup.submit(tests.mp.signal_and_wait, (started, release, 1), tt=TT_MP)
    assert started.wait(WAIT)
    quick = sup.submit(tests.mp.square, (4,), tt=TT_MP, timeout=0.2)
    # quick waits in the queue longer than its timeout, then runs in time.
    timer = threading.Timer(0.4, release.set)
    timer.start()
    assert blocker.result(WAIT) == 1
    assert quick.result(WAIT) == 16
    assert quick.time_started - quick.time_queued >= 0.2


def test_task_within_its_timeout_completes(make_supervisor):
    sup = make_pool(make_supervisor, 1)
    assert sup.submit(tests.mp.square, (12,), tt=TT_MP, timeout=WAIT).result(WAIT) == 144
    for bad in (0, -1, "1", True):
        with pytest.raises(ValueError, match="timeout must be"):
            sup.submit(tests.mp.square, (1,), tt=TT_MP, timeout=bad)


# ---------------------------------------------------------------- pickling faults


def test_unpicklable_argument_is_refused_at_submit_naming_it(make_supervisor):
    sup = make_pool(make_supervisor, 1)
    before = sup.submit(tests.mp.square, (2,), tt=TT_MP)
    with pytest.raises(TaskPicklingError, match=r"positional argument 1 \(a _thread\.lock object\)") as info:
        sup.submit(tests.mp.add, (1, threading.Lock()), tt=TT_MP)
    assert isinstance(info.value, TypeError) and isinstance(info.value, pickle.PicklingError)
    assert "cannot pickle '_thread.lock' object" in str(info.value)
    with pytest.raises(TaskPicklingError, match=r"keyword argument 'b' \(a generator object\)"):
        sup.submit(tests.mp.add, (1,), {"b": (i for i in range(3))}, tt=TT_MP)
    assert before.result(WAIT) == 4
    assert sup.submit(tests.mp.square, (3,), tt=TT_MP).result(WAIT) == 9
    assert sup.get_info()["unfinished"] == 0


def test_unpicklable_function_is_refused_at_submit(make_supervisor):
    sup = make_pool(make_supervisor, 1)
    lock = threading.Lock()
    with pytest.raises(TaskPicklingError, match=r"its function \(.*acquire.*\) cannot be pickled"):
        sup.submit(lock.acquire, tt=TT_MP)
    assert sup.submit(tests.mp.square, (3,), tt=TT_MP).result(WAIT) == 9


def test_unpicklable_result_fails_only_that_task(make_supervisor):
    sup = make_pool(make_supervisor, 1)
    pid = sup.submit(tests.mp.pid, tt=TT_MP).result(WAIT)
    task = sup.submit(tests.mp.return_lock, tt=TT_MP)
    with pytest.raises(
        TaskPicklingError, match=r"the result of the task \(a _thread\.lock object\) could not be pickled"
    ):
        task.result(WAIT)
    assert sup.submit(tests.mp.pid, tt=TT_MP).result(WAIT) == pid  # same worker, still serving


def test_function_that_cannot_be_imported_in_the_worker(make_supervisor, tmp_path, monkeypatch):
    module = tmp_path / "only_in_parent.py"
    module.write_text("def f():\n    return 'parent only'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_in_parent

    sup = make_pool(make_supervisor, 1, "spawn")
    assert sup.submit(only_in_parent.f, tt=TT_MP).result(WAIT) == "parent only"  # sys.path travels
    module.unlink()  # now a new worker cannot import it
    sup.create_mp_pool(start_method="forkserver")
    try:
        task = sup.submit(only_in_parent.f, tt=TT_MP)
        with pytest.raises(
            TaskPicklingError, match="could not be unpickled in the worker process: ModuleNotFoundError"
        ):
            task.result(WAIT)
    finally:
        sys.modules.pop("only_in_parent", None)
