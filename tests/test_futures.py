"""The ``concurrent.futures`` face: ``supervisor.as_executor()`` keeps the
stdlib ``Executor`` contract (submit, map with timeout and chunksize,
shutdown with wait and cancel_futures, the context manager) and works as
asyncio's executor, with every call a task of the supervisor."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading

import pytest

import tests.mp
from atasker import (
    TASK_HIGH,
    TASK_LOW,
    TT_COROUTINE,
    TT_MP,
    InvalidPriorityError,
    MissingExtensionError,
    SupervisorExecutor,
    Task,
    UnknownTaskTypeError,
    hookimpl,
)
from tests.conftest import WAIT


class Recorder:
    """Records every task that starts: (name, tt, priority)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str, int]] = []

    @hookimpl
    def atasker_task_started(self, task):
        self.started.append((task.name, task.tt, task.priority))


@pytest.fixture
def single(make_supervisor):
    """A supervisor whose thread pool runs one task at a time, any priority."""
    return make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)


def test_the_face_is_a_stdlib_executor_whose_futures_are_task_handles(supervisor):
    face = supervisor.as_executor(priority=TASK_HIGH, name="job")
    assert isinstance(face, concurrent.futures.Executor) and isinstance(face, SupervisorExecutor)
    future = face.submit(tests.mp.add, 2, b=3)
    assert isinstance(future, Task) and isinstance(future, concurrent.futures.Future)
    assert future.result(WAIT) == 5
    assert (future.tt, future.priority, future.name) == ("thread", TASK_HIGH, "job")
    done, _ = concurrent.futures.wait([face.submit(pow, 2, i) for i in range(5)], timeout=WAIT)
    assert sorted(f.result() for f in done) == [1, 2, 4, 8, 16]
    # The plugin's executor is still what executor() returns.
    assert not isinstance(supervisor.executor("thread"), concurrent.futures.Executor)


def test_bad_arguments_fail_when_the_face_is_made(supervisor):
    with pytest.raises(UnknownTaskTypeError):
        supervisor.as_executor(tt="nope")
    with pytest.raises(InvalidPriorityError):
        supervisor.as_executor(priority=-1)
    with pytest.raises(TypeError, match="unknown task option"):
        supervisor.as_executor(prio=1)


def test_map_returns_results_in_order_and_raises_the_first_error(supervisor):
    gates = [threading.Event() for _ in range(4)]

    def wait_then(i):
        assert gates[i].wait(WAIT)
        return i * 10

    face = supervisor.as_executor()
    results = face.map(wait_then, range(4))
    for gate in reversed(gates):  # they finish in reverse order
        gate.set()
    assert list(results) == [0, 10, 20, 30]
    assert list(face.map(pow, [2, 3], [3, 2])) == [8, 9]
    failing = face.map(lambda x: 1 // x, [1, 0, 2])
    assert next(failing) == 1
    with pytest.raises(ZeroDivisionError):
        next(failing)


def test_map_timeout_raises_timeout_error_and_cancels_what_has_not_run(single):
    gate = threading.Event()
    face = single.as_executor()
    tasks = []
    real_submit = face.submit

    def submit(fn, *args):
        tasks.append(real_submit(fn, *args))
        return tasks[-1]

    face.submit = submit  # to see the futures map makes
    try:
        results = face.map(lambda _: gate.wait(WAIT), range(4), timeout=0.05)
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        assert [t.cancelled() for t in tasks] == [False, True, True, True]
    finally:
        gate.set()
    assert tasks[0].result(WAIT) is True


def test_map_chunksize_sends_batches_to_process_tasks(make_supervisor):
    recorder = Recorder()
    sup = make_supervisor(plugins=[recorder])
    face = sup.as_executor(tt=TT_MP)
    assert list(face.map(tests.mp.square, range(10), chunksize=4)) == [x * x for x in range(10)]
    assert [(tt, name) for name, tt, _ in recorder.started] == [("mp", "square[chunk]")] * 3
    assert list(face.map(tests.mp.add, range(5), range(5), chunksize=2)) == [0, 2, 4, 6, 8]
    assert list(face.map(tests.mp.square, [], chunksize=3)) == []
    with pytest.raises(ValueError, match="chunksize must be >= 1"):
        face.map(tests.mp.square, range(3), chunksize=0)


def test_process_face_runs_a_picklable_function_in_a_worker(make_supervisor):
    sup = make_supervisor()
    with sup.as_executor(tt=TT_MP, priority=TASK_LOW) as face:
        worker = face.submit(tests.mp.pid)
        assert list(face.map(tests.mp.add, [1, 2], [10, 20])) == [11, 22]
    assert worker.tt == "mp" and worker.priority == TASK_LOW
    assert worker.result(WAIT) != os.getpid()


async def double(x):
    await asyncio.sleep(0)
    return 2 * x


def test_coroutine_face_maps_a_coroutine_function_with_chunks(make_supervisor):
    face = make_supervisor().as_executor(tt=TT_COROUTINE)
    assert list(face.map(double, range(5), chunksize=2)) == [0, 2, 4, 6, 8]
    assert face.submit(double, 21).result(WAIT) == 42


def test_priority_is_passed_through_to_the_queue(make_supervisor):
    recorder = Recorder()
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0, plugins=[recorder])
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,), name="blocker")
    low, high = sup.as_executor(priority=TASK_LOW, name="low"), sup.as_executor(priority=TASK_HIGH, name="high")
    queued = [low.submit(int), low.submit(int), high.submit(int)]
    gate.set()
    assert blocker.result(WAIT) and [t.result(WAIT) for t in queued] == [0, 0, 0]
    assert [(name, prio) for name, _, prio in recorder.started] == [
        ("blocker", 100),
        ("high", TASK_HIGH),
        ("low", TASK_LOW),
        ("low", TASK_LOW),
    ]


def test_shutdown_wait_waits_for_this_faces_tasks_and_never_stops_the_supervisor(single):
    gate = threading.Event()
    face = single.as_executor()
    task = face.submit(gate.wait, WAIT)
    returned = threading.Event()
    waiter = threading.Thread(target=lambda: (face.shutdown(wait=True), returned.set()))
    waiter.start()
    try:
        assert not returned.wait(0.2)  # still waiting for the task
        assert not task.done()
    finally:
        gate.set()
    assert returned.wait(WAIT) and task.done() and task.result() is True
    waiter.join(WAIT)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        face.submit(int)
    face.shutdown()  # again: a no-op
    assert single.is_active() and single.submit(int).result(WAIT) == 0
    assert single.as_executor().submit(int).result(WAIT) == 0


def test_shutdown_cancel_futures_cancels_only_this_faces_queued_tasks(single):
    gate = threading.Event()
    face = single.as_executor()
    running = face.submit(gate.wait, WAIT)
    queued = [face.submit(int) for _ in range(3)]
    other = single.submit(pow, (2, 3))  # not through the face
    try:
        face.shutdown(wait=False, cancel_futures=True)
        assert all(t.cancelled() for t in queued)
        assert not running.done() and not other.done()
    finally:
        gate.set()
    assert running.result(WAIT) is True and other.result(WAIT) == 8


def test_shutdown_without_wait_returns_at_once(single):
    gate = threading.Event()
    face = single.as_executor()
    task = face.submit(gate.wait, WAIT)
    try:
        face.shutdown(wait=False)
        assert not task.done()
    finally:
        gate.set()
    assert task.result(WAIT) is True


def test_context_manager_waits_and_shuts_down(supervisor):
    with supervisor.as_executor() as face:
        tasks = [face.submit(pow, 3, i) for i in range(4)]
    assert all(t.done() for t in tasks) and [t.result() for t in tasks] == [1, 3, 9, 27]
    with pytest.raises(RuntimeError):
        face.submit(int)
    assert supervisor.is_active()


def test_a_stopped_supervisor_refuses_with_a_runtime_error(make_supervisor):
    sup = make_supervisor()
    face = sup.as_executor()
    sup.stop()
    with pytest.raises(RuntimeError):
        face.submit(int)


def test_run_in_executor_runs_the_call_as_a_supervisor_task(make_supervisor):
    recorder = Recorder()
    sup = make_supervisor(plugins=[recorder])
    face = sup.as_executor(priority=TASK_HIGH)

    async def main():
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(face, tests.mp.add, 20, 22)

    assert asyncio.run(main()) == 42
    assert recorder.started == [("add", "thread", TASK_HIGH)]
    face.shutdown()


def test_the_face_is_asyncios_default_executor(make_supervisor):
    recorder = Recorder()
    sup = make_supervisor(plugins=[recorder])
    face = sup.as_executor(name="default-executor")

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(face)
        first = await loop.run_in_executor(None, pow, 2, 8)
        second = await asyncio.to_thread(pow, 3, 3)
        return first, second

    # asyncio.run ends with loop.shutdown_default_executor(): face.shutdown().
    assert asyncio.run(main()) == (256, 27)
    assert [name for name, _, _ in recorder.started] == ["default-executor"] * 2
    with pytest.raises(RuntimeError, match="after shutdown"):
        face.submit(int)
    assert sup.is_active()


def test_blocking_the_plugin_removes_as_executor(make_supervisor):
    sup = make_supervisor(block_plugins=["atasker.extras.futures"])
    with pytest.raises(MissingExtensionError, match="needs plugin 'atasker.extras.futures'"):
        sup.as_executor()
    assert sup.submit(int).result(WAIT) == 0
