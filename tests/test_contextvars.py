"""contextvars follow a task: thread and coroutine tasks (and callbacks) run
in a copy of the submitter's context, as asyncio.to_thread does."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import tests.mp
from atasker import TT_COROUTINE, TT_MP, background_task
from tests.conftest import WAIT

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def read_var() -> str:
    return request_id.get()


def test_thread_task_sees_the_submitters_context(supervisor):
    token = request_id.set("r-1")
    try:
        task = supervisor.submit(read_var)
        starter = background_task(read_var, supervisor=supervisor)
        decorated = starter()
    finally:
        request_id.reset(token)
    later = supervisor.submit(read_var)
    assert task.result(WAIT) == "r-1" and decorated.result(WAIT) == "r-1"
    assert later.result(WAIT) == "none"  # the value at submit time, not at run time


def test_changes_in_a_task_stay_in_the_task(supervisor):
    def change() -> str:
        request_id.set("changed")
        return request_id.get()

    request_id.set("outer")
    assert supervisor.submit(change).result(WAIT) == "changed"
    assert request_id.get() == "outer"
    # Each task has its own copy: a second task does not see the first's change.
    assert supervisor.submit(read_var).result(WAIT) == "outer"


def test_callback_runs_in_the_submitters_context(supervisor):
    seen = []
    done = threading.Event()

    def callback(result: str) -> None:
        seen.append((result, request_id.get(), threading.current_thread() is not threading.main_thread()))
        done.set()

    token = request_id.set("cb")
    try:
        task = supervisor.submit(read_var, callback=callback)
    finally:
        request_id.reset(token)
    assert task.result(WAIT) == "cb" and done.wait(WAIT)
    assert seen == [("cb", "cb", True)]


def test_coroutine_task_sees_the_submitters_context(supervisor):
    async def aread() -> str:
        await asyncio.sleep(0)
        return request_id.get()

    token = request_id.set("co")
    try:
        task = supervisor.submit(aread, tt=TT_COROUTINE)
    finally:
        request_id.reset(token)
    assert task.result(WAIT) == "co"


def test_coroutine_task_submitted_on_its_own_loop(supervisor):
    aloop = supervisor.create_aloop("ctx")

    async def aread() -> str:
        return request_id.get()

    async def outer() -> str:
        request_id.set("inner")
        return await supervisor.submit(aread, tt=TT_COROUTINE, options={"loop": aloop})

    assert aloop.run(outer(), timeout=WAIT) == "inner"


def test_process_task_callback_runs_in_the_submitters_context(make_supervisor):
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    seen = []
    token = request_id.set("mp")
    try:
        task = sup.submit(tests.mp.square, (3,), tt=TT_MP, callback=lambda r: seen.append((r, request_id.get())))
    finally:
        request_id.reset(token)
    assert task.result(WAIT) == 9
    assert seen == [(9, "mp")]
