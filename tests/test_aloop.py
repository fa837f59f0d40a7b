"""Aloops: the supervisor's asyncio loops in their own threads -- API,
defaults, stopping (wait / cancel_tasks / timed wait), uvloop and loop
factories."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import sys
import threading

import pytest

from atasker import (
    TASK_LOW,
    ALoop,
    AloopStoppedError,
    SupervisorStoppedError,
    UnknownAloopError,
    background_task,
)
from tests.conftest import WAIT, Sleeper

# Fail on what asyncio logs instead of warning (see conftest).
pytestmark = pytest.mark.usefixtures("no_asyncio_complaints")


async def answer(x=42):
    await asyncio.sleep(0)
    return x


def aloop_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"supervisor_aloop_{name}"]


# ------------------------------------------------------------------ API


def test_create_get_and_default(supervisor):
    io = supervisor.create_aloop("io")
    assert isinstance(io, ALoop) and io.is_active() and not io.daemon
    assert io.thread.name == "supervisor_aloop_io" and io.thread.is_alive()
    assert isinstance(io.get_loop(), asyncio.AbstractEventLoop)
    assert supervisor.get_aloop("io") is io
    assert supervisor.get_aloop("missing") is None
    assert supervisor.get_aloop() is None  # no default yet
    with pytest.raises(ValueError, match="aloop 'io' already exists"):
        supervisor.create_aloop("io")

    main = supervisor.create_aloop("main", default=True, daemon=True)
    assert supervisor.get_aloop() is main and main.thread.daemon

    async def where():
        return threading.current_thread().name

    assert background_task(where, supervisor=supervisor)().result(WAIT) == "supervisor_aloop_main"
    supervisor.set_default_aloop("io")
    assert supervisor.get_aloop() is io
    assert background_task(where, supervisor=supervisor)().result(WAIT) == "supervisor_aloop_io"
    supervisor.set_default_aloop(main)
    assert supervisor.get_aloop() is main
    with pytest.raises(UnknownAloopError, match="no aloop named 'nope'; aloops: 'io', 'main'"):
        supervisor.set_default_aloop("nope")
    with pytest.raises(TypeError):
        supervisor.set_default_aloop(42)  # type: ignore[arg-type]
    supervisor.set_default_aloop(None)
    assert supervisor.get_aloop() is None
    assert set(supervisor.get_aloops()) == {"io", "main"}
    assert "'io' running" in repr(io)


def test_run_background_task_and_get_loop(supervisor):
    aloop = supervisor.create_aloop("work")
    assert aloop.run(answer()) == 42  # a coroutine object
    assert aloop.run(answer) == 42  # an async function
    assert aloop.run(answer(7), priority=TASK_LOW, timeout=WAIT) == 7

    handle = aloop.background_task(answer(5), name="five")
    assert handle.result(WAIT) == 5 and handle.name == "five" and handle.tt == "coroutine"
    assert aloop.background_task(answer).result(WAIT) == 42

    async def loop_of_task():
        return asyncio.get_running_loop()

    assert aloop.run(loop_of_task) is aloop.get_loop()

    async def fails():
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        aloop.run(fails)
    with pytest.raises(TypeError, match="coroutine or an async function"):
        aloop.background_task(42)  # type: ignore[arg-type]


def test_run_timeout_cancels_the_coroutine(supervisor):
    aloop = supervisor.create_aloop("slow")
    saw_cancel = threading.Event()

    async def slow():
        try:
            await asyncio.sleep(WAIT * 10)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    with pytest.raises(TimeoutError, match=r"aloop .slow.: task \d+ \(.*slow\) did not finish in 0.05 s; cancelled"):
        aloop.run(slow(), timeout=0.05)
    assert saw_cancel.wait(WAIT)


def test_run_from_the_aloops_own_thread_refuses_without_leaking_a_coroutine(supervisor):
    aloop = supervisor.create_aloop("self")
    inner = answer()

    async def calls_run():
        try:
            aloop.run(inner)
        except RuntimeError as exc:
            return str(exc)

    assert "would deadlock" in aloop.run(calls_run, timeout=WAIT)
    assert inspect.getcoroutinestate(inner) == inspect.CORO_CLOSED  # closed: no "never awaited"


def test_queued_coroutine_object_cancelled_is_closed(supervisor):
    supervisor.set_coroutine_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    aloop = supervisor.create_aloop("q")
    gate = concurrent.futures.Future()

    async def blocker():
        await asyncio.wrap_future(gate)

    first = aloop.background_task(blocker)
    coro = answer()
    queued = aloop.background_task(coro)
    assert supervisor.get_task_info(queued).status == 0
    assert queued.cancel()
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    gate.set_result(None)
    first.result(WAIT)


def test_start_false_then_start_aloop(supervisor):
    lazy = supervisor.create_aloop("lazy", start=False)
    assert not lazy.is_active() and lazy.get_loop() is None and lazy.thread is None
    coro = answer()
    with pytest.raises(AloopStoppedError, match=r"aloop 'lazy' is created; start it with start_aloop\('lazy'\)"):
        lazy.background_task(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert supervisor.start_aloop("lazy") is lazy
    assert lazy.run(answer) == 42
    with pytest.raises(UnknownAloopError):
        supervisor.start_aloop("nope")
    with pytest.raises(UnknownAloopError):
        supervisor.stop_aloop("nope")


def test_stop_aloop_and_restart(supervisor):
    aloop = supervisor.create_aloop("cycle")
    first_thread = aloop.thread
    assert aloop.run(answer) == 42
    assert supervisor.stop_aloop("cycle") is True
    assert not aloop.is_active() and aloop.get_loop() is None and not first_thread.is_alive()
    assert supervisor.get_aloop("cycle") is aloop  # still registered
    with pytest.raises(AloopStoppedError, match="start_aloop"):
        background_task(answer, supervisor=supervisor, loop="cycle")()
    assert supervisor.stop_aloop("cycle") is True  # stopping a stopped aloop is a no-op
    supervisor.start_aloop("cycle")
    assert aloop.thread is not first_thread and aloop.run(answer) == 42


def test_stop_aloop_waits_for_every_task_on_the_loop(supervisor):
    aloop = supervisor.create_aloop("drain")
    finished = []

    async def child(i):
        await asyncio.sleep(0.01)
        finished.append(i)

    async def spawner():
        # Plain asyncio tasks, not atasker tasks: the aloop waits for them too.
        for i in range(5):
            asyncio.get_running_loop().create_task(child(i))
        return "spawned"

    assert aloop.run(spawner) == "spawned"
    assert aloop.stop(wait=True) is True
    assert sorted(finished) == list(range(5))


def test_stop_aloop_cancel_tasks(supervisor):
    aloop = supervisor.create_aloop("cancel")
    sleeper = Sleeper()

    task = aloop.background_task(sleeper.run)
    assert sleeper.started.wait(WAIT)
    assert supervisor.stop_aloop("cancel", wait=WAIT, cancel_tasks=True) is True
    assert sleeper.saw_cancel.is_set() and task.cancelled()
    assert not aloop_threads("cancel")


def test_stop_aloop_timed_wait_warns_naming_pending_tasks(supervisor, caplog):
    aloop = supervisor.create_aloop("timed")
    started = threading.Event()

    async def sleeper():
        started.set()
        await asyncio.sleep(WAIT * 10)

    async def spawn_raw():
        asyncio.get_running_loop().create_task(sleeper())

    task = aloop.background_task(sleeper, name="atasker-sleeper")
    aloop.run(spawn_raw)
    assert started.wait(WAIT)
    with caplog.at_level(logging.WARNING, logger="atasker"):
        assert aloop.stop(wait=0.05) is False
    [record] = [r for r in caplog.records if "still pending" in r.getMessage()]
    message = record.getMessage()
    assert "aloop 'timed': 2 task(s) still pending after waiting 0.05 s, cancelling" in message
    assert f"atasker-sleeper (task {task.id})" in message
    assert "Task-" in message and "sleeper)" in message  # the plain asyncio task, by coroutine name
    assert task.cancelled()
    assert not aloop.thread.is_alive()


def test_stop_aloop_without_wait(supervisor):
    aloop = supervisor.create_aloop("nowait")
    gate = concurrent.futures.Future()

    async def blocked():
        return await asyncio.wrap_future(gate)

    task = aloop.background_task(blocked)
    assert aloop.stop(wait=False) is False  # returns at once, the task goes on
    assert not aloop.is_active()
    with pytest.raises(AloopStoppedError, match="is stopping"):
        aloop.background_task(answer)
    with pytest.raises(RuntimeError, match="is stopping"):
        aloop.start()
    gate.set_result("finished anyway")
    assert task.result(WAIT) == "finished anyway"
    aloop.thread.join(WAIT)
    assert not aloop.thread.is_alive()


def test_stop_aloop_from_a_task_on_it(supervisor):
    aloop = supervisor.create_aloop("selfstop")

    async def stop_me():
        return supervisor.stop_aloop("selfstop", wait=True)

    # It cannot wait for itself: returns False at once, the loop stops after it.
    assert aloop.background_task(stop_me).result(WAIT) is False
    aloop.thread.join(WAIT)
    assert not aloop.thread.is_alive() and not aloop.is_active()


def test_many_pending_tasks_stop_quickly(supervisor):
    aloop = supervisor.create_aloop("many")
    n = 2000
    started = threading.Semaphore(0)

    async def forever():
        started.release()
        await asyncio.sleep(WAIT * 10)

    tasks = [aloop.background_task(forever) for _ in range(n)]
    for _ in range(n):
        assert started.acquire(timeout=WAIT)
    assert aloop.stop(wait=WAIT, cancel_tasks=True) is True
    assert all(t.cancelled() for t in tasks)


# ----------------------------------------------- supervisor stop / restart


def test_supervisor_stop_stops_every_aloop_and_waits(make_supervisor):
    sup = make_supervisor()
    a, b = sup.create_aloop("a"), sup.create_aloop("b", daemon=True)
    finished = []

    async def raw_child():
        await asyncio.sleep(0.02)
        finished.append("raw")

    async def coro_task():
        asyncio.get_running_loop().create_task(raw_child())
        await asyncio.sleep(0.01)
        return "task"

    t1 = background_task(coro_task, supervisor=sup, loop=a)()
    t2 = background_task(coro_task, supervisor=sup, loop="b")()
    assert sup.stop(wait=True) is True
    assert t1.result(0) == t2.result(0) == "task"
    assert finished == ["raw", "raw"]  # plain asyncio tasks were waited for too
    assert not a.thread.is_alive() and not b.thread.is_alive()
    assert sup.get_aloops() == {} and sup.get_aloop() is None
    with pytest.raises(SupervisorStoppedError):
        a.start()  # a stopped supervisor owns no threads


def test_supervisor_stop_cancel_tasks_cancels_what_is_left_on_aloops(make_supervisor):
    sup = make_supervisor()
    aloop = sup.create_aloop("c")
    sleeper = Sleeper()

    async def spawn():
        asyncio.get_running_loop().create_task(sleeper.run())

    aloop.run(spawn)
    assert sleeper.started.wait(WAIT)
    assert sup.stop(wait=WAIT, cancel_tasks=True) is True
    assert sleeper.saw_cancel.is_set() and not aloop.thread.is_alive()


def test_supervisor_timed_stop_warns_naming_pending_coroutines(make_supervisor, caplog):
    sup = make_supervisor()
    sleeper = Sleeper()

    task = background_task(sleeper.run, supervisor=sup, name="stuck-sleeper")()
    assert sleeper.started.wait(WAIT)
    aloop = sup.get_aloop()
    with caplog.at_level(logging.WARNING, logger="atasker"):
        assert sup.stop(wait=0.1) is False
    pending = [r.getMessage() for r in caplog.records if "still pending" in r.getMessage()]
    assert pending and f"stuck-sleeper (task {task.id})" in pending[0]
    assert "aloop 'default'" in pending[0]
    assert task.cancelled() and sleeper.saw_cancel.is_set()
    assert not aloop.thread.is_alive()
    assert sup.get_info()["unfinished"] == 0


def test_supervisor_timed_stop_cancels_coroutine_tasks_on_foreign_loops(make_supervisor):
    sup = make_supervisor()
    result = {}

    async def sleeper():
        await asyncio.sleep(WAIT * 10)

    async def main():
        handle = background_task(sleeper, supervisor=sup, loop=asyncio.get_running_loop())()
        await asyncio.sleep(0)
        stopped = await asyncio.to_thread(sup.stop, 0.05)
        try:
            await handle
        except asyncio.CancelledError:
            result["cancelled"] = handle.cancelled()
        return stopped

    assert asyncio.run(asyncio.wait_for(main(), WAIT)) is False
    assert result == {"cancelled": True}


def test_supervisor_stop_without_wait_lets_aloops_finish(make_supervisor):
    sup = make_supervisor()
    gate = concurrent.futures.Future()

    async def blocked():
        return await asyncio.wrap_future(gate)

    task = background_task(blocked, supervisor=sup)()
    aloop = sup.get_aloop()
    assert sup.stop(wait=False) is False
    gate.set_result("done later")
    assert task.result(WAIT) == "done later"
    aloop.thread.join(WAIT)
    assert not aloop.thread.is_alive()


def test_supervisor_stop_called_from_a_coroutine_on_an_aloop(make_supervisor):
    sup = make_supervisor()
    home, other = sup.create_aloop("home"), sup.create_aloop("other")

    async def stopper():
        # Not a task: a plain coroutine on the aloop.  stop() cannot wait for
        # its own loop; that loop stops once this coroutine returns.
        return sup.stop(wait=WAIT)

    assert asyncio.run_coroutine_threadsafe(stopper(), home.get_loop()).result(WAIT) is True
    assert not other.thread.is_alive()
    home.thread.join(WAIT)
    assert not home.thread.is_alive()


def test_default_aloop_is_created_once_under_concurrent_submits(supervisor):
    barrier = threading.Barrier(8)
    handles = []

    def submit():
        barrier.wait(WAIT)
        handles.append(background_task(answer, supervisor=supervisor)())

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert [h.result(WAIT) for h in handles] == [42] * 8
    assert list(supervisor.get_aloops()) == ["default"]
    assert len(aloop_threads("default")) >= 1


def test_auto_default_aloop_skips_a_taken_name(supervisor):
    supervisor.create_aloop("default")  # not made the default
    background_task(answer, supervisor=supervisor)().result(WAIT)
    assert supervisor.get_aloop().name == "default_2"


# --------------------------------------------------- uvloop, factories


def test_loop_factory(supervisor):
    made = []

    def factory():
        loop = asyncio.SelectorEventLoop()
        made.append(loop)
        return loop

    aloop = supervisor.create_aloop("custom", loop_factory=factory)
    assert aloop.get_loop() is made[0] and not aloop.uvloop
    assert aloop.run(answer) == 42
    with pytest.raises(ValueError, match="not both"):
        supervisor.create_aloop("both", uvloop=True, loop_factory=factory)


def test_uvloop_aloop():
    uvloop = pytest.importorskip("uvloop")
    from atasker import TaskSupervisor

    sup = TaskSupervisor(autoload=False)
    try:
        aloop = sup.create_aloop("fast", uvloop=True, default=True)
        assert aloop.uvloop and isinstance(aloop.get_loop(), uvloop.Loop)
        assert aloop.run(answer) == 42
        handles = [background_task(answer, supervisor=sup)(i) for i in range(200)]
        assert [h.result(WAIT) for h in handles] == list(range(200))

        async def awaits_a_thread_task():
            return await sup.submit(pow, (2, 10))

        assert aloop.run(awaits_a_thread_task, timeout=WAIT) == 1024
        assert "uvloop" in repr(aloop)
    finally:
        assert sup.stop(wait=WAIT)


def test_uvloop_from_environment(make_supervisor, monkeypatch):
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.setenv("ATASKER_UVLOOP", "1")
    sup = make_supervisor()
    assert isinstance(sup.create_aloop("env").get_loop(), uvloop.Loop)
    assert not sup.create_aloop("plain", uvloop=False).uvloop
    background_task(answer, supervisor=sup)().result(WAIT)
    assert sup.get_aloop().uvloop  # the auto-created default follows the switch too


def test_uvloop_missing(make_supervisor, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    sup = make_supervisor()
    with pytest.raises(ImportError, match="pip install uvloop"):
        sup.create_aloop("needs-uvloop", uvloop=True)
    assert sup.get_aloop("needs-uvloop") is None
    monkeypatch.setenv("ATASKER_UVLOOP", "1")
    with caplog.at_level(logging.WARNING, logger="atasker"):
        aloop = sup.create_aloop("falls-back")
    assert not aloop.uvloop and "uvloop is not installed" in caplog.text
    assert aloop.run(answer) == 42


def test_invalid_aloop_name(supervisor):
    with pytest.raises(ValueError, match="non-empty str"):
        supervisor.create_aloop("")


def test_user_code_cancelling_every_task_does_not_kill_the_aloop(supervisor):
    aloop = supervisor.create_aloop("sturdy")

    async def cancel_everything_else():
        me = asyncio.current_task()
        for t in asyncio.all_tasks():
            if t is not me:
                t.cancel()
        await asyncio.sleep(0)
        return "done"

    assert aloop.run(cancel_everything_else, timeout=WAIT) == "done"
    assert aloop.is_active() and aloop.run(answer, timeout=WAIT) == 42
    assert aloop.stop(wait=WAIT) is True
