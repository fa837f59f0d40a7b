"""The ``atasker_wrap_task_call`` hook: data captured at submit, code run around
the call where the task runs -- a pool thread, an event loop, a worker process."""

from __future__ import annotations

import contextvars
import functools
import os
import threading
from typing import Any

import pytest

from atasker import TT_COROUTINE, TT_MP, hookimpl
from tests.conftest import WAIT

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("REQUEST_ID", default=None)


class CarryRequestId:
    """The hookspec's example: carry ``REQUEST_ID`` from the submitter into thread tasks."""

    __name__ = "carry-request-id"

    def __init__(self) -> None:
        self.wrapped_in: list[int] = []

    @hookimpl
    def atasker_wrap_task_call(self, task, call):
        self.wrapped_in.append(threading.get_ident())
        request_id = REQUEST_ID.get()

        @functools.wraps(call)
        def with_request_id(*args, **kwargs):
            token = REQUEST_ID.set(request_id)
            try:
                return call(*args, **kwargs)
            finally:
                REQUEST_ID.reset(token)

        return with_request_id if task.tt == "thread" else None


def read_request_id(suffix: str = "") -> tuple[str | None, int]:
    return f"{REQUEST_ID.get()}{suffix}", threading.get_ident()


def test_the_wrapper_runs_in_the_pool_thread_with_what_the_submitter_had(make_supervisor):
    plugin = CarryRequestId()
    sup = make_supervisor(plugins=[plugin])
    token = REQUEST_ID.set("req-1")
    try:
        task = sup.submit(read_request_id, ("!",))
    finally:
        REQUEST_ID.reset(token)
    seen, thread = task.result(WAIT)
    assert seen == "req-1!"
    assert plugin.wrapped_in == [threading.get_ident()]  # captured in the submitting thread
    assert thread != threading.get_ident()  # ... and run in a pool thread
    assert task.func.__wrapped__ is read_request_id


def test_wrappers_chain_and_none_leaves_the_call(make_supervisor):
    order = []

    class Tag:
        def __init__(self, tag: str | None) -> None:
            self.__name__ = f"tag-{tag}"
            self.tag = tag

        @hookimpl
        def atasker_wrap_task_call(self, call):  # a subset of the arguments, as pluggy allows
            order.append(self.tag)
            if self.tag is None:
                return None
            return lambda *args: f"{self.tag}({call(*args)})"

    sup = make_supervisor(plugins=[Tag("a"), Tag(None), Tag("b")])
    assert sup.submit(str, (1,)).result(WAIT) == "a(b(1))"  # last registered wraps first
    assert order == ["b", None, "a"]


def test_without_an_implementation_the_task_runs_its_function_as_submitted(make_supervisor):
    sup = make_supervisor()
    task = sup.submit(pow, (2, 5))
    assert task.result(WAIT) == 32 and task.func is pow


def test_a_wrapper_that_raises_is_reported_and_the_task_runs_unwrapped(make_supervisor, caplog):
    seen = []

    class Broken:
        __name__ = "broken-wrapper"

        @hookimpl
        def atasker_wrap_task_call(self, task, call):
            raise RuntimeError("wrapper bug")

        @hookimpl
        def atasker_internalerror(self, exc, where):
            seen.append((type(exc), where))

    sup = make_supervisor(plugins=[Broken(), CarryRequestId()])
    token = REQUEST_ID.set("kept")
    try:
        task = sup.submit(read_request_id)
    finally:
        REQUEST_ID.reset(token)
    assert task.result(WAIT)[0] == "kept"  # the other plugin's wrapper still applies
    assert seen == [(RuntimeError, "hook atasker_wrap_task_call")]
    assert "wrapper bug" in caplog.text


# ------------------------------------------------------------- processes


class InEnvironment:
    """A picklable wrapper (module-level class): sets an environment variable in the worker."""

    def __init__(self, value: str, call: Any) -> None:
        self.value = value
        self.__wrapped__ = call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        os.environ["WRAPPED_VALUE"] = self.value
        try:
            return self.__wrapped__(*args, **kwargs)
        finally:
            del os.environ["WRAPPED_VALUE"]


class CarryToProcess:
    __name__ = "carry-to-process"

    @hookimpl
    def atasker_wrap_task_call(self, task, call):
        return InEnvironment(f"from {os.getpid()}", call) if task.tt == TT_MP else None


def env_and_task_id(_task_id: int | None = None) -> tuple[str | None, int, int | None]:
    return os.environ.get("WRAPPED_VALUE"), os.getpid(), _task_id


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_a_picklable_wrapper_runs_around_the_call_in_the_worker_process(make_supervisor, start_method):
    sup = make_supervisor(plugins=[CarryToProcess()])
    sup.create_mp_pool(start_method=start_method, pool_size=1, reserve_normal=0, reserve_high=0)
    task = sup.submit(env_and_task_id, tt=TT_MP)
    value, pid, task_id = task.result(WAIT * 3)
    assert pid != os.getpid()
    assert value == f"from {os.getpid()}"
    assert task_id == task.id  # the signature stays visible through __wrapped__


def test_an_unpicklable_function_is_named_through_the_wrapper(make_supervisor):
    from atasker import TaskPicklingError

    sup = make_supervisor(plugins=[CarryToProcess()])
    lock = threading.Lock()
    with pytest.raises(TaskPicklingError, match=r"its function \(.*acquire.*\) cannot be pickled"):
        sup.submit(lock.acquire, tt=TT_MP)


# ------------------------------------------------------------- coroutines


class AroundAwait:
    __name__ = "around-await"

    @hookimpl
    def atasker_wrap_task_call(self, task, call):
        if task.tt != TT_COROUTINE:
            return None
        request_id = REQUEST_ID.get()

        async def awaiting(awaitable):
            token = REQUEST_ID.set(request_id)
            try:
                return await awaitable
            finally:
                REQUEST_ID.reset(token)

        @functools.wraps(call)
        def wrapped(*args, **kwargs):
            return awaiting(call(*args, **kwargs))

        return wrapped


async def read_request_id_later() -> str | None:
    import asyncio

    await asyncio.sleep(0)  # the value must hold across awaits
    return REQUEST_ID.get()


def test_a_coroutine_task_awaits_inside_the_wrapper(make_supervisor):
    sup = make_supervisor(plugins=[AroundAwait()])
    token = REQUEST_ID.set("async-req")
    try:
        task = sup.submit(read_request_id_later, tt=TT_COROUTINE)
    finally:
        REQUEST_ID.reset(token)
    assert task.result(WAIT) == "async-req"
