"""Process tasks (TT_MP): results, callbacks, _task_id, priorities and reserves,
cancel, stop, pool options, co_mp_apply, clean shutdown.

Faults are in ``test_mp_faults.py``, pickling in ``test_mp_pickle.py``.  The
task functions live in :mod:`tests.mp` so that every start method finds them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import select
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import tests.mp
from atasker import (
    TASK_CRITICAL,
    TASK_HIGH,
    TASK_LOW,
    TASK_NORMAL,
    TT_MP,
    ProcessDiedError,
    SupervisorStoppedError,
    Task,
    WorkerDiedError,
    background_task,
    co_mp_apply,
)
from atasker.builtin.mp import MPExecutor, default_start_method
from tests.conftest import WAIT

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def manager():
    """A multiprocessing manager: its Event/Queue proxies pickle into tasks."""
    with multiprocessing.get_context("forkserver").Manager() as m:
        yield m


@pytest.fixture
def mp_sup(make_supervisor):
    """A supervisor whose process pool has 2 workers and reserves 1/1."""
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=2, reserve_normal=1, reserve_high=1)
    return sup


def pid_gone(pid: int) -> bool:
    """The process has exited (no /proc entry, or a zombie waiting for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:  # FileNotFoundError, or ProcessLookupError while it is reaped
        return True


def wait_gone(pid: int, timeout: float = WAIT) -> bool:
    """Wait for a process to exit, on a pidfd (event-driven, any parent)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    return pid_gone(pid)


# ---------------------------------------------------------------- basics


def test_seed_example_with_callback_in_parent(mp_sup):
    got = []
    done = threading.Event()

    def callback(result):
        got.append((result, os.getpid()))
        done.set()

    task = background_task(tests.mp.test, priority=TASK_HIGH, tt=TT_MP, callback=callback, supervisor=mp_sup)(
        1, 2, 3, x=2
    )
    assert isinstance(task, Task) and isinstance(task, concurrent.futures.Future)
    assert task.result(WAIT) == 999
    assert done.wait(WAIT)
    assert got == [(999, os.getpid())]  # the callback ran here, in the parent


def test_stop_from_a_callback_is_refused_with_wait_and_works_without(mp_sup, caplog):
    # Callbacks run on the thread that reports every process task: waiting there would wait for itself.
    refused = mp_sup.submit(tests.mp.test, tt=TT_MP, callback=lambda _: mp_sup.stop())
    assert refused.result(WAIT) == 999 and mp_sup.is_active()
    assert "RuntimeError: stop(wait=True) called on atasker_mp_" in caplog.text
    stopped = mp_sup.submit(tests.mp.test, tt=TT_MP, callback=lambda _: mp_sup.stop(wait=False))
    assert stopped.result(WAIT) == 999 and not mp_sup.is_active()


def test_runs_in_another_process_and_handle_works_with_futures_api(mp_sup):
    tasks = [mp_sup.submit(tests.mp.square, (i,), tt=TT_MP) for i in range(20)]
    _, not_done = concurrent.futures.wait(tasks, WAIT)
    assert not not_done
    assert [t.result() for t in tasks] == [i * i for i in range(20)]
    assert mp_sup.submit(tests.mp.pid, tt=TT_MP).result(WAIT) != os.getpid()
    assert all(mp_sup.get_task_info(t) is None for t in tasks)


def test_task_id_is_passed_only_to_functions_that_accept_it(mp_sup):
    t1 = mp_sup.submit(tests.mp.echo_task_id, tt=TT_MP)
    assert t1.result(WAIT) == t1.id
    t2 = mp_sup.submit(tests.mp.kwargs_of, (), {"a": 1}, tt=TT_MP)
    assert t2.result(WAIT) == {"a": 1, "_task_id": t2.id}
    assert mp_sup.submit(tests.mp.no_task_id, (5,), tt=TT_MP).result(WAIT) == 5
    assert mp_sup.submit(tests.mp.test_mp, (1,), {"x": 2}, tt=TT_MP).result(WAIT) == 3
    assert mp_sup.submit(pow, (2, 10), tt=TT_MP).result(WAIT) == 1024  # a builtin: no signature
    explicit = mp_sup.submit(tests.mp.echo_task_id, (), {"_task_id": "mine"}, tt=TT_MP)
    assert explicit.result(WAIT) == "mine"


def test_async_function_runs_to_completion_in_the_worker(mp_sup):
    assert mp_sup.submit(tests.mp.async_double, (21,), tt=TT_MP).result(WAIT) == 42


def test_large_arguments_and_results(mp_sup):
    data = os.urandom(3 << 20)  # larger than any pipe buffer
    assert mp_sup.submit(len, (data,), tt=TT_MP).result(WAIT) == len(data)
    assert mp_sup.submit(tests.mp.big, (5 << 20,), tt=TT_MP).result(WAIT) == b"x" * (5 << 20)


def test_arguments_are_captured_at_submission(make_supervisor, manager):
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    started, release = manager.Event(), manager.Event()
    blocker = sup.submit(tests.mp.signal_and_wait, (started, release), tt=TT_MP)
    assert started.wait(WAIT)
    items = [1, 2]
    queued = sup.submit(len, (items,), tt=TT_MP)
    items.append(3)  # after submit: the task already holds its own copy
    release.set()
    assert queued.result(WAIT) == 2 and blocker.result(WAIT) is None


def test_delay(mp_sup):
    task = mp_sup.submit(tests.mp.square, (3,), tt=TT_MP, delay=0.05)
    assert task.result(WAIT) == 9 and task.time_started - task.time_queued >= 0.04


# ---------------------------------------------------------------- priorities and reserves


def test_priority_order_and_critical_first_when_a_worker_frees(make_supervisor, manager, tmp_path):
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    started, release = manager.Event(), manager.Event()
    blocker = sup.submit(tests.mp.signal_and_wait, (started, release), tt=TT_MP, priority=TASK_LOW)
    assert started.wait(WAIT)
    log = str(tmp_path / "order")
    order = [
        ("low1", TASK_LOW),
        ("normal", TASK_NORMAL),
        ("high", TASK_HIGH),
        ("low2", TASK_LOW),
        ("critical", TASK_CRITICAL),
    ]
    tasks = [sup.submit(tests.mp.record, (log, name), tt=TT_MP, priority=p) for name, p in order]
    # The only worker is busy: even CRITICAL waits (a process cannot be conjured up) ...
    assert all(sup.get_task_info(t).status == 0 for t in tasks)
    release.set()
    concurrent.futures.wait([blocker, *tasks], WAIT)
    # ... and goes first as soon as it is free, ahead of everything.
    assert Path(log).read_text().split() == ["critical", "high", "normal", "low1", "low2"]


def test_reserves_for_normal_and_high(make_supervisor, manager):
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=1, reserve_normal=1, reserve_high=1)
    release = manager.Event()
    queue = manager.Queue()

    def submit(priority):
        return sup.submit(tests.mp.put_pid_and_wait, (queue, release), tt=TT_MP, priority=priority)

    low = submit(TASK_LOW)
    queue.get(timeout=WAIT)
    low2 = submit(TASK_LOW)  # pool_size 1 is used up for LOW
    normal = submit(TASK_NORMAL)  # takes the NORMAL reserve
    queue.get(timeout=WAIT)
    high = submit(TASK_HIGH)  # takes the HIGH reserve
    queue.get(timeout=WAIT)
    high2 = submit(TASK_HIGH)  # all 3 workers busy
    critical = submit(TASK_CRITICAL)  # capacity reached: waits, first in line
    assert [sup.get_task_info(t).status for t in (low, low2, normal, high, high2, critical)] == [1, 0, 1, 1, 0, 0]
    info = sup.get_info()["task_types"]["mp"]
    assert info["capacity"] == 3 and info["running"] == 3
    assert sup.executor(TT_MP).statistics()["workers"] == 3
    release.set()
    assert len(set(concurrent.futures.wait([low, low2, normal, high, high2, critical], WAIT)[0])) == 6
    assert critical.time_started <= high2.time_started <= low2.time_started


def test_set_mp_pool_while_running(make_supervisor, manager):
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    release = manager.Event()
    queue = manager.Queue()
    tasks = [sup.submit(tests.mp.put_pid_and_wait, (queue, release), tt=TT_MP) for _ in range(3)]
    queue.get(timeout=WAIT)
    assert [sup.get_task_info(t).status for t in tasks] == [1, 0, 0]
    sup.set_mp_pool(pool_size=3)  # room at once: the waiting two start
    pids = {queue.get(timeout=WAIT), queue.get(timeout=WAIT)}
    assert len(pids) == 2
    release.set()
    concurrent.futures.wait(tasks, WAIT)
    assert sup.executor(TT_MP).statistics()["workers"] == 3
    sup.set_mp_pool(pool_size=1)  # shrinking retires idle workers
    executor = sup.executor(TT_MP)
    assert executor.wait_workers(1, WAIT)
    assert sup.submit(tests.mp.square, (4,), tt=TT_MP).result(WAIT) == 16


def test_reserve_workers_exit_when_idle(make_supervisor, manager):
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=1, reserve_normal=1, reserve_high=1, idle_timeout=0.2)
    executor = sup.executor(TT_MP)
    queue, release = manager.Queue(), manager.Event()
    tasks = [sup.submit(tests.mp.put_pid_and_wait, (queue, release), tt=TT_MP, priority=TASK_HIGH) for _ in range(3)]
    pids = {queue.get(timeout=WAIT) for _ in range(3)}
    assert len(pids) == 3  # pool_size + both reserves
    release.set()
    concurrent.futures.wait(tasks, WAIT)
    assert executor.wait_workers(1, WAIT)  # the two beyond pool_size retired
    assert sup.submit(tests.mp.square, (2,), tt=TT_MP).result(WAIT) == 4


# ---------------------------------------------------------------- cancel, stop, shutdown


def test_cancel_running_process_task_kills_and_replaces_its_worker(make_supervisor, manager):
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    queue, release = manager.Queue(), manager.Event()
    running = sup.submit(tests.mp.put_pid_and_wait, (queue, release), tt=TT_MP)
    pid = queue.get(timeout=WAIT)
    assert running.cancel() is True
    with pytest.raises(concurrent.futures.CancelledError):
        running.result(WAIT)
    assert running.cancelled() and running.outcome == "cancelled"
    assert wait_gone(pid)
    assert sup.submit(tests.mp.pid, tt=TT_MP).result(WAIT) != pid
    assert running.cancel() is False or running.cancelled()


def test_stop_cancel_tasks(make_supervisor, manager):
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    started, release = manager.Event(), manager.Event()
    running = sup.submit(tests.mp.signal_and_wait, (started, release, 7), tt=TT_MP)
    assert started.wait(WAIT)
    queued = [sup.submit(tests.mp.square, (i,), tt=TT_MP) for i in range(5)]
    delayed = sup.submit(tests.mp.square, (9,), tt=TT_MP, delay=30)
    pids = sup.executor(TT_MP).worker_pids()
    stopper = threading.Thread(target=sup.stop, kwargs={"wait": WAIT, "cancel_tasks": True})
    stopper.start()
    assert not concurrent.futures.wait([*queued, delayed], WAIT)[1]
    assert all(t.cancelled() for t in [*queued, delayed])
    with pytest.raises(SupervisorStoppedError):
        sup.submit(tests.mp.square, (1,), tt=TT_MP)
    release.set()
    stopper.join(WAIT)
    assert running.result(0) == 7  # the running task finished
    assert all(t.status == -1 for t in queued)
    assert all(wait_gone(pid) for pid in pids)


def test_no_orphan_processes_after_stop(make_supervisor):
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=2, reserve_normal=1, reserve_high=1)
    tasks = [sup.submit(tests.mp.pid, tt=TT_MP, priority=TASK_HIGH) for _ in range(20)]
    concurrent.futures.wait(tasks, WAIT)
    pids = sup.executor(TT_MP).worker_pids()
    assert pids and {t.result() for t in tasks} <= set(pids)
    assert sup.stop(wait=WAIT)
    assert all(wait_gone(pid) for pid in pids)
    ours = [p for p in multiprocessing.active_children() if p.name.startswith("atasker_mp_")]
    assert ours == []


def test_script_exits_cleanly_without_stop_and_leaves_no_workers(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from atasker import TT_MP, background_task, task_supervisor

            def work(x):
                return x, os.getpid()

            if __name__ == "__main__":
                tasks = [background_task(work, tt=TT_MP)(i) for i in range(8)]
                print(sorted({t.result(10)[1] for t in tasks}))
                background_task(work, tt=TT_MP)(99)  # still queued or running at exit
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pids = eval(proc.stdout.strip().splitlines()[-1])
    assert pids and all(wait_gone(pid) for pid in pids)


def test_exit_after_a_timed_stop_does_not_wait_for_a_stuck_task(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(
        textwrap.dedent(
            """
            from atasker import TT_MP, background_task, task_supervisor

            def forever():
                while True:
                    pass

            if __name__ == "__main__":
                stuck = background_task(forever, tt=TT_MP)()
                assert task_supervisor.executor(TT_MP).wait_workers(1, 30)
                print(task_supervisor.executor(TT_MP).worker_pids(), flush=True)
                assert task_supervisor.stop(wait=0.2) is False  # still running
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pids = eval(proc.stdout.strip().splitlines()[-1])
    assert pids and all(wait_gone(pid) for pid in pids)


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_workers_die_with_a_killed_parent_even_when_busy(tmp_path, start_method):
    script = tmp_path / "killed.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, signal, sys, time
            from atasker import TT_MP, TaskSupervisor

            if __name__ == "__main__":
                sup = TaskSupervisor(autoload=False)
                sup.start()
                sup.create_mp_pool(start_method=sys.argv[1], pool_size=2, reserve_normal=0, reserve_high=0)
                assert sup.executor(TT_MP).wait_workers(2, 30)
                busy = sup.submit(time.sleep, (60,), tt=TT_MP)
                print(sup.executor(TT_MP).worker_pids(), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script), start_method], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == -9, proc.stderr
    pids = eval(proc.stdout.strip().splitlines()[-1])
    assert len(pids) == 2 and all(wait_gone(pid) for pid in pids)


# ---------------------------------------------------------------- pool options


def test_default_start_method_is_safe_and_configurable(make_supervisor, monkeypatch):
    assert default_start_method() in ("forkserver", "spawn")
    monkeypatch.setenv("ATASKER_MP_START_METHOD", "spawn")
    assert default_start_method() == "spawn"
    sup = make_supervisor()
    executor = sup.executor(TT_MP)
    assert isinstance(executor, MPExecutor) and executor.start_method == "spawn"
    sup.create_mp_pool(start_method="forkserver")
    assert executor.start_method == "forkserver"


def test_create_mp_pool_rejects_bad_options(make_supervisor):
    sup = make_supervisor()
    with pytest.raises(TypeError, match="unexpected keyword 'bogus'"):
        sup.create_mp_pool(bogus=1)
    with pytest.raises(ValueError, match="unknown start method 'nope'"):
        sup.create_mp_pool(start_method="nope")
    with pytest.raises(ValueError, match="pool_size"):
        sup.create_mp_pool(pool_size=-1)
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        sup.create_mp_pool(maxtasksperchild=0)


def test_create_mp_pool_before_start_and_processes_alias(make_supervisor):
    sup = make_supervisor(start=False)
    sup.create_mp_pool(processes=3, reserve_normal=0, reserve_high=0)
    sup.start()
    assert sup.submit(tests.mp.square, (5,), tt=TT_MP).result(WAIT) == 25
    assert sup.get_info()["task_types"]["mp"]["capacity"] == 3


def test_initializer_and_max_tasks_per_child(make_supervisor):
    sup = make_supervisor()
    sup.create_mp_pool(
        pool_size=1,
        reserve_normal=0,
        reserve_high=0,
        initializer=tests.mp.set_env,
        initargs=("ATASKER_TEST_INIT", "done"),
        max_tasks_per_child=2,
    )
    results = [sup.submit(tests.mp.getenv_and_pid, ("ATASKER_TEST_INIT",), tt=TT_MP).result(WAIT) for _ in range(4)]
    assert [value for value, _ in results] == ["done"] * 4
    pids = [pid for _, pid in results]
    assert pids[0] == pids[1] != pids[2] == pids[3]  # a fresh worker every 2 tasks


def test_failing_initializer_fails_tasks_with_a_clear_error(make_supervisor):
    sup = make_supervisor()
    sup.create_mp_pool(
        pool_size=1, reserve_normal=0, reserve_high=0, initializer=tests.mp.raise_value_error, initargs=("bad init",)
    )
    task = sup.submit(tests.mp.square, (2,), tt=TT_MP)
    with pytest.raises(ProcessDiedError, match="initializer raised") as info:
        task.result(WAIT)
    assert "ValueError: bad init" in str(info.value) and isinstance(info.value, WorkerDiedError)
    sup.create_mp_pool(initializer=None)  # fixed: new workers work
    assert sup.submit(tests.mp.square, (2,), tt=TT_MP).result(WAIT) == 4


# ---------------------------------------------------------------- co_mp_apply


def test_co_mp_apply_does_not_block_the_loop(mp_sup, manager):
    release = manager.Event()

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                if ticks == 20:
                    # Only a loop that keeps running while the task runs gets here.
                    await asyncio.get_running_loop().run_in_executor(None, release.set)
                await asyncio.sleep(0.001)

        tick = asyncio.ensure_future(ticker())
        result = await co_mp_apply(
            tests.mp.signal_and_wait, args=(manager.Event(), release, "ok"), priority=TASK_HIGH, supervisor=mp_sup
        )
        tick.cancel()
        return result, ticks

    result, ticks = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert result == "ok" and ticks >= 20


def test_co_mp_apply_returns_and_raises(mp_sup):
    async def main():
        value = await co_mp_apply(tests.mp.test_mp, args=[1], kwargs={"x": 2}, supervisor=mp_sup)
        with pytest.raises(ValueError, match="from the worker"):
            await co_mp_apply(tests.mp.raise_value_error, ("from the worker",), supervisor=mp_sup)
        delayed = await co_mp_apply(tests.mp.square, (6,), delay=0.01, priority=TASK_LOW, supervisor=mp_sup)
        return value, delayed

    assert asyncio.run(asyncio.wait_for(main(), WAIT)) == (3, 36)


def test_cancelling_the_awaiting_coroutine_cancels_the_task(mp_sup, manager):
    queue, release = manager.Queue(), manager.Event()

    async def main():
        fut = asyncio.ensure_future(co_mp_apply(tests.mp.put_pid_and_wait, (queue, release), supervisor=mp_sup))
        pid = await asyncio.get_running_loop().run_in_executor(None, queue.get, True, WAIT)
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fut
        return pid

    pid = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert wait_gone(pid)  # the worker running it was killed
    assert mp_sup.submit(tests.mp.square, (3,), tt=TT_MP).result(WAIT) == 9
