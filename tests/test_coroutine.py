"""Coroutine tasks (TT_COROUTINE): handles, cancellation, errors, priorities,
mixing with thread and process tasks, awaiting handles from any loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading

import pytest

from atasker import (
    TASK_CRITICAL,
    TASK_HIGH,
    TASK_LOW,
    TASK_NORMAL,
    TT_COROUTINE,
    AloopStoppedError,
    SupervisorStoppedError,
    UnknownAloopError,
    background_task,
)
from atasker.builtin.coroutine import CoroutineExecutor
from tests.conftest import WAIT, Sleeper

# Fail on what asyncio logs instead of warning (see conftest).
pytestmark = pytest.mark.usefixtures("no_asyncio_complaints")


def gate_coroutine(gate: concurrent.futures.Future):
    """An async function that waits until *gate* (a thread-safe future) is set."""

    async def blocked(tag=None):
        await asyncio.wrap_future(gate)
        return tag

    return blocked


def coroutine_info(sup):
    return sup.get_info()["task_types"][TT_COROUTINE]


# --------------------------------------------------------------- basics


def test_async_def_runs_on_auto_created_default_aloop(supervisor):
    seen = {}
    handle = concurrent.futures.Future()

    async def double(x, *, extra=0):
        seen["thread"] = threading.current_thread().name
        seen["info"] = info = supervisor.get_task_info(await asyncio.wrap_future(handle))
        seen.setdefault("status", info.status if info is not None else None)  # the first run's
        return 2 * x + extra

    assert supervisor.get_aloop() is None
    task = background_task(double, supervisor=supervisor)(20, extra=2)
    handle.set_result(task)
    assert task.tt == TT_COROUTINE
    assert task.result(WAIT) == 42
    assert seen["thread"] == "supervisor_aloop_default"
    assert seen["info"] is task and seen["status"] == 1 and task.status == 2
    aloop = supervisor.get_aloop()
    assert aloop is not None and aloop.name == "default" and aloop.is_active()
    assert supervisor.get_task_info(task) is None
    assert task.outcome == "completed"
    # A second task reuses the default aloop.
    assert background_task(double, supervisor=supervisor)(1).result(WAIT) == 2
    assert list(supervisor.get_aloops()) == ["default"]


def test_explicit_tt_coroutine_and_sync_callables_returning_awaitables(supervisor):
    async def add(a, b):
        return a + b

    assert supervisor.submit(add, (1, 2), tt=TT_COROUTINE).result(WAIT) == 3
    assert supervisor.submit(functools.partial(add, 5), (6,), tt=TT_COROUTINE).result(WAIT) == 11
    assert supervisor.submit(lambda: add(2, 2), tt=TT_COROUTINE).result(WAIT) == 4

    class Awaitable:
        def __await__(self):
            return add(3, 4).__await__()

    assert supervisor.submit(Awaitable, tt=TT_COROUTINE).result(WAIT) == 7


def test_plain_function_as_coroutine_task_fails_clearly(supervisor):
    task = supervisor.submit(len, ("abc",), tt=TT_COROUTINE, name="not-async")
    with pytest.raises(TypeError, match=r"'not-async' returned int, not an awaitable"):
        task.result(WAIT)


def test_callback_and_delay(supervisor):
    got = concurrent.futures.Future()

    async def value():
        return "v"

    task = background_task(value, supervisor=supervisor, callback=got.set_result, delay=0.01)()
    assert task.result(WAIT) == "v"
    assert got.result(WAIT) == "v"


def test_executor_is_a_registered_plugin(supervisor):
    assert TT_COROUTINE in supervisor.task_types()
    assert isinstance(supervisor.executor(TT_COROUTINE), CoroutineExecutor)


# ----------------------------------------------------- volume, errors


@pytest.mark.parametrize("pool_size", [0, 32], ids=["unlimited", "pool32"])
def test_10000_coroutine_tasks_nothing_lost(make_supervisor, pool_size):
    sup = make_supervisor(pool_size=4)
    sup.set_coroutine_pool(pool_size=pool_size, reserve_normal=4, reserve_high=4)
    runs = []  # list.append is atomic; every run appends once
    priorities = (TASK_LOW, TASK_NORMAL, TASK_HIGH, TASK_CRITICAL)

    async def work(i):
        runs.append(i)
        if i % 3 == 0:
            await asyncio.sleep(0)
        return i * i

    n_threads, per_thread = 4, 2500
    handles: list[list] = [[] for _ in range(n_threads)]

    def submitter(k):
        out = handles[k]
        for j in range(per_thread):
            i = k * per_thread + j
            out.append(sup.submit(work, (i,), tt=TT_COROUTINE, priority=priorities[i % 4]))

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    tasks = [h for hs in handles for h in hs]
    assert len(tasks) == 10_000
    _done, not_done = concurrent.futures.wait(tasks, WAIT)
    assert not not_done
    assert sorted(t.result() for t in tasks) == [i * i for i in range(10_000)]
    assert sorted(runs) == list(range(10_000))  # each ran exactly once
    info = sup.get_info()
    assert info["unfinished"] == 0
    assert info["task_types"][TT_COROUTINE]["running"] == 0
    assert info["task_types"][TT_COROUTINE]["waiting_total"] == 0


def test_raising_coroutine(supervisor, caplog):
    class Boom(Exception):
        pass

    async def explode():
        await asyncio.sleep(0)
        raise Boom("bad coroutine")

    with caplog.at_level(logging.DEBUG, logger="atasker"):
        task = background_task(explode, supervisor=supervisor)()
        with pytest.raises(Boom, match="bad coroutine"):
            task.result(WAIT)
    assert isinstance(task.exception(), Boom) and task.outcome == "failed" and task.error is task.exception()
    # Retrieved: logged at DEBUG only (an unretrieved failure is an ERROR).
    assert [r.levelno for r in caplog.records if "bad coroutine" in r.getMessage()] == [logging.DEBUG]

    async def awaits_it():
        return await task

    with pytest.raises(Boom):
        asyncio.run(awaits_it())
    # The loop and the pool keep serving.
    assert supervisor.submit(asyncio.sleep, (0, "ok"), tt=TT_COROUTINE).result(WAIT) == "ok"
    assert coroutine_info(supervisor)["running"] == 0


def test_argument_error_when_calling_the_function_fails_the_task(supervisor):
    async def one(a):
        return a

    task = supervisor.submit(one, (1, 2), tt=TT_COROUTINE)
    with pytest.raises(TypeError):
        task.result(WAIT)


# -------------------------------------------------------- cancellation


def test_cancel_running_coroutine(supervisor):
    sleeper = Sleeper()

    task = background_task(sleeper.run, supervisor=supervisor)()
    assert sleeper.started.wait(WAIT)
    assert supervisor.get_task_info(task).status == 1
    assert task.cancel() is True
    with pytest.raises(concurrent.futures.CancelledError):
        task.result(WAIT)
    assert task.cancelled() and task.outcome == "cancelled"
    assert sleeper.saw_cancel.is_set()  # set before the coroutine ended, so before the handle resolved
    assert supervisor.get_task_info(task) is None
    assert coroutine_info(supervisor)["running"] == 0


def test_cancel_from_a_coroutine_on_the_same_loop(supervisor):
    aloop = supervisor.create_aloop("same")
    started = threading.Event()

    async def victim():
        started.set()
        await asyncio.sleep(WAIT * 10)

    async def killer(handle):
        assert started.is_set()
        ok = handle.cancel()  # in the victim's loop thread: acts at once
        try:
            await handle
        except asyncio.CancelledError:
            return ("cancelled", ok)
        return ("not cancelled", ok)

    victim_task = aloop.background_task(victim)
    assert started.wait(WAIT)
    assert aloop.run(killer(victim_task), timeout=WAIT) == ("cancelled", True)
    assert victim_task.cancelled()


def test_coroutine_that_swallows_cancellation_decides_its_outcome(supervisor):
    started = threading.Event()

    async def stubborn():
        started.set()
        try:
            await asyncio.sleep(WAIT * 10)
        except asyncio.CancelledError:
            return "kept going"

    task = background_task(stubborn, supervisor=supervisor)()
    assert started.wait(WAIT)
    assert task.cancel() is True  # the request was delivered, as asyncio.Task.cancel
    assert task.result(WAIT) == "kept going" and not task.cancelled()


def test_timeout_cancels_the_coroutine_and_fails_with_timeout_error(supervisor):
    sleeper = Sleeper()
    task = background_task(sleeper.run, supervisor=supervisor, timeout=0.05, name="slowpoke")()
    with pytest.raises(TimeoutError, match=r"slowpoke\) timed out after 0.05 s"):
        task.result(WAIT)
    assert sleeper.saw_cancel.is_set() and not task.cancelled() and task.outcome == "failed"

    async def fast():
        return 1

    assert background_task(fast, supervisor=supervisor, timeout=WAIT)().result(WAIT) == 1


# ------------------------------------------------ priorities, reserves


def test_priorities_and_reserves_for_coroutine_tasks(supervisor):
    # 1 slot for LOW, +1 for NORMAL, +1 for HIGH; CRITICAL always starts.
    supervisor.set_coroutine_pool(pool_size=1, reserve_normal=1, reserve_high=1)
    gates = [concurrent.futures.Future() for _ in range(3)]
    order: list[str] = []

    async def record(tag):
        order.append(tag)
        return tag

    def submit(fn, tag, priority):
        return supervisor.submit(fn, (tag,), tt=TT_COROUTINE, priority=priority, name=tag)

    blockers = [
        submit(gate_coroutine(gates[0]), "b-low", TASK_LOW),
        submit(gate_coroutine(gates[1]), "b-normal", TASK_NORMAL),  # uses reserve_normal
        submit(gate_coroutine(gates[2]), "b-high", TASK_HIGH),  # uses reserve_high
    ]
    info = coroutine_info(supervisor)
    assert info["running"] == 3 and info["waiting_total"] == 0
    waiting = [
        submit(record, "low-1", TASK_LOW),
        submit(record, "normal-1", TASK_NORMAL),
        submit(record, "high-1", TASK_HIGH),
        submit(record, "low-2", TASK_LOW),
        submit(record, "high-2", TASK_HIGH),
    ]
    assert all(supervisor.get_task_info(t).status == 0 for t in waiting)
    assert coroutine_info(supervisor)["waiting"] == {TASK_HIGH: 2, TASK_NORMAL: 1, TASK_LOW: 2}
    critical = submit(record, "critical", TASK_CRITICAL)
    assert critical.result(WAIT) == "critical"  # started although the pool is full
    assert order == ["critical"]

    # One HIGH slot frees: the HIGH tasks take it in turn, nothing else may start
    # (running 2 is the NORMAL limit, and a waiting HIGH blocks lower ones).
    gates[2].set_result(None)
    concurrent.futures.wait(waiting[2::2], WAIT)
    assert order == ["critical", "high-1", "high-2"]
    assert supervisor.get_task_info(waiting[1]).status == 0
    # Freeing the NORMAL slot: NORMAL first, then LOW in FIFO order once LOW fits.
    gates[1].set_result(None)
    assert waiting[1].result(WAIT) == "normal-1"
    assert supervisor.get_task_info(waiting[0]).status == 0  # running 1 = LOW's limit
    gates[0].set_result(None)
    assert [t.result(WAIT) for t in waiting] == ["low-1", "normal-1", "high-1", "low-2", "high-2"]
    assert order == ["critical", "high-1", "high-2", "normal-1", "low-1", "low-2"]
    assert [b.result(WAIT) for b in blockers] == ["b-low", "b-normal", "b-high"]


def test_growing_the_coroutine_pool_starts_waiting_tasks(supervisor):
    supervisor.set_coroutine_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = concurrent.futures.Future()
    blocker = supervisor.submit(gate_coroutine(gate), tt=TT_COROUTINE)
    waiter = supervisor.submit(asyncio.sleep, (0, "in"), tt=TT_COROUTINE)
    assert supervisor.get_task_info(waiter).status == 0
    supervisor.set_coroutine_pool(pool_size=2)
    assert waiter.result(WAIT) == "in"
    gate.set_result(None)
    blocker.result(WAIT)


def test_submitting_from_a_coroutine_never_blocks_its_loop(supervisor):
    # The pool is full and the task that must free it waits for the submitting
    # coroutine: if submit() blocked the loop until a slot freed, this would hang.
    supervisor.set_coroutine_pool(pool_size=1, reserve_normal=0, reserve_high=0)

    async def main():
        release = asyncio.Event()

        async def holder():
            await release.wait()
            return "held"

        first = background_task(holder, supervisor=supervisor, loop=asyncio.get_running_loop())()
        second = background_task(holder, supervisor=supervisor, loop=asyncio.get_running_loop())()
        await asyncio.sleep(0)
        assert supervisor.get_task_info(second).status == 0  # queued, and we are still running
        release.set()
        return await first, await second

    # main() is not a task itself (it would hold the only slot): plain asyncio.run.
    assert asyncio.run(asyncio.wait_for(main(), WAIT)) == ("held", "held")


# ------------------------------------------------------- loop= option


def test_loop_accepts_aloop_name_and_running_asyncio_loop(supervisor):
    aloop = supervisor.create_aloop("named")

    async def where():
        return threading.current_thread().name, asyncio.get_running_loop()

    by_obj = background_task(where, supervisor=supervisor, loop=aloop)().result(WAIT)
    by_name = background_task(where, supervisor=supervisor, loop="named")().result(WAIT)
    by_loop = background_task(where, supervisor=supervisor, loop=aloop.get_loop())().result(WAIT)
    assert by_obj == by_name == by_loop == ("supervisor_aloop_named", aloop.get_loop())
    assert supervisor.get_aloop() is None  # no default was needed

    async def main():
        mine = asyncio.get_running_loop()
        result = await background_task(where, supervisor=supervisor, loop=mine)()
        return result, mine, threading.current_thread().name

    (name, loop), mine, me = asyncio.run(main())
    assert loop is mine and name == me


def test_bad_loop_values_fail_at_submit(supervisor):
    supervisor.create_aloop("exists")

    async def f():
        return None

    with pytest.raises(UnknownAloopError, match=r"no aloop named 'nope'; aloops: 'exists'"):
        background_task(f, supervisor=supervisor, loop="nope")()
    with pytest.raises(TypeError, match="loop= takes"):
        background_task(f, supervisor=supervisor, loop=42)()
    idle = asyncio.new_event_loop()
    try:
        with pytest.raises(AloopStoppedError, match="running asyncio loop"):
            background_task(f, supervisor=supervisor, loop=idle)()
    finally:
        idle.close()
    assert supervisor.get_info()["unfinished"] == 0


# ------------------------------------------------------------ mixing


def test_thread_task_submits_coroutine_tasks_and_waits_on_handles(supervisor):
    async def square(x):
        await asyncio.sleep(0)
        return x * x

    def blocking_parent(n):
        handles = [background_task(square, supervisor=supervisor)(i) for i in range(n)]
        return sum(h.result(WAIT) for h in handles), threading.current_thread().name

    total, thread = background_task(blocking_parent, supervisor=supervisor)(20).result(WAIT)
    assert total == sum(i * i for i in range(20))
    assert thread.startswith("atasker_thread")


def test_coroutine_awaits_thread_task_handles(supervisor):
    def blocking(x):
        return x + 1, threading.current_thread().name

    def fails():
        raise LookupError("from a thread")

    async def parent():
        a = await supervisor.submit(blocking, (1,))
        b = await asyncio.wrap_future(supervisor.submit(blocking, (2,)))
        many = await asyncio.gather(*(supervisor.submit(blocking, (i,)) for i in range(10)))
        try:
            await supervisor.submit(fails)
        except LookupError as exc:
            err = str(exc)
        return a, b, [m[0] for m in many], err

    a, b, many, err = background_task(parent, supervisor=supervisor)().result(WAIT)
    assert a[0] == 2 and b[0] == 3 and a[1].startswith("atasker_thread")
    assert many == list(range(1, 11)) and err == "from a thread"


def test_coroutine_awaits_coroutine_handles_on_other_loops(supervisor):
    other = supervisor.create_aloop("other")

    async def child(x):
        return x, threading.current_thread().name

    async def parent():
        here = await background_task(child, supervisor=supervisor)(1)
        there = await background_task(child, supervisor=supervisor, loop=other)(2)
        return here, there

    here, there = supervisor.create_aloop("home").run(parent, timeout=WAIT)
    assert here == (1, "supervisor_aloop_default")
    assert there == (2, "supervisor_aloop_other")


def test_coroutine_awaits_process_task_handles(make_supervisor):
    from tests import mp

    sup = make_supervisor(pool_size=2)
    try:
        sup.set_mp_pool(pool_size=2)  # type: ignore[attr-defined]
    except AttributeError:
        pytest.skip("process tasks are not available yet")

    async def parent():
        squares = await asyncio.gather(*(sup.submit(mp.square, (i,), tt="mp") for i in range(5)))
        pid = await asyncio.wrap_future(sup.submit(mp.pid, tt="mp"))
        return squares, pid

    squares, pid = background_task(parent, supervisor=sup)().result(WAIT * 3)
    assert squares == [0, 1, 4, 9, 16]
    assert isinstance(pid, int) and pid != threading.get_native_id()


def test_handles_awaited_from_a_foreign_asyncio_run(supervisor):
    async def coro(x):
        return x * 10

    async def main():
        a = await background_task(coro, supervisor=supervisor)(1)  # runs on the default aloop
        b = await supervisor.submit(pow, (2, 3))
        c = await asyncio.wait_for(asyncio.wrap_future(background_task(coro, supervisor=supervisor)(2)), WAIT)
        return a, b, c

    assert asyncio.run(main()) == (10, 8, 20)


# ------------------------------------------------ supervisor lifecycle


def test_submit_after_stop_is_refused_and_creates_no_aloop(make_supervisor):
    sup = make_supervisor()

    async def f():
        return 1

    assert sup.stop()
    with pytest.raises(SupervisorStoppedError):
        background_task(f, supervisor=sup)()
    with pytest.raises(SupervisorStoppedError):
        sup.create_aloop("late")
    assert sup.get_aloops() == {}


def test_supervisor_restart_gets_a_fresh_default_aloop(make_supervisor):
    sup = make_supervisor()

    async def where():
        return threading.current_thread()

    first = background_task(where, supervisor=sup)().result(WAIT)
    old = sup.get_aloop()
    assert sup.stop()
    assert not first.is_alive() and not old.is_active() and sup.get_aloop() is None
    sup.start()
    second = background_task(where, supervisor=sup)().result(WAIT)
    assert second is not first and second.name == "supervisor_aloop_default"


# ------------------------------------------------- loops that go away


def test_queued_task_whose_aloop_stopped_fails_clearly(supervisor):
    supervisor.set_coroutine_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    supervisor.create_aloop("a")
    b = supervisor.create_aloop("b")
    gate = concurrent.futures.Future()
    called = []

    async def never():
        called.append(1)

    blocker = background_task(gate_coroutine(gate), supervisor=supervisor, loop="a")()
    queued = background_task(never, supervisor=supervisor, loop=b)()
    assert supervisor.get_task_info(queued).status == 0
    assert b.stop() is True
    gate.set_result(None)
    blocker.result(WAIT)
    with pytest.raises(AloopStoppedError, match="aloop 'b' stopped before the task could start"):
        queued.result(WAIT)
    assert called == []
    assert coroutine_info(supervisor)["running"] == 0


def test_task_on_a_foreign_loop_that_ends_is_cancelled(supervisor):
    started = threading.Event()

    async def long():
        started.set()
        await asyncio.sleep(WAIT * 10)

    async def main():
        handle = background_task(long, supervisor=supervisor, loop=asyncio.get_running_loop())()
        await asyncio.sleep(0)
        return handle  # asyncio.run cancels what is left on its loop

    handle = asyncio.run(main())
    assert started.is_set()
    with pytest.raises(concurrent.futures.CancelledError):
        handle.result(WAIT)


def test_callbacks_and_observers_run_in_the_loop_thread(make_supervisor):
    from atasker import hookimpl

    seen = {}

    class Observer:
        @hookimpl
        def atasker_task_finished(self, task):
            if task.tt == TT_COROUTINE:
                seen["finished"] = threading.current_thread().name

    sup = make_supervisor(plugins=[Observer()])

    async def value():
        return 1

    task = background_task(
        value, supervisor=sup, callback=lambda r: seen.setdefault("callback", threading.current_thread().name)
    )()
    assert task.result(WAIT) == 1
    sup.stop()  # the observer has run once stop() returns
    assert seen == {"finished": "supervisor_aloop_default", "callback": "supervisor_aloop_default"}
