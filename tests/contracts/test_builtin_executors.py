"""The executor contract on the built-in task types: thread, process, coroutine."""

from __future__ import annotations

from typing import Any

from atasker.testing import ExecutorContract, Gate
from atasker.testing.tasks import async_raise_value_error, async_return_value, async_wait_gate


class TestThreadExecutor(ExecutorContract):
    """``tt="thread"``: a running thread cannot be interrupted; at its timeout= a task's
    handle fails with TimeoutError while the function runs on."""

    tt = "thread"
    can_cancel_running = False
    supports_timeout = True
    many = 1000


class TestProcessExecutor(ExecutorContract):
    """``tt="mp"``: worker processes (the default start method, forkserver)."""

    tt = "mp"
    can_cancel_running = True
    supports_timeout = True


class TestCoroutineExecutor(ExecutorContract):
    """``tt="coroutine"``: ``async def`` functions on the default aloop."""

    tt = "coroutine"
    can_cancel_running = True
    supports_timeout = True
    many = 1000

    def returning(self, value: Any) -> tuple[Any, tuple[Any, ...]]:
        return async_return_value, (value,)

    def raising(self, message: str) -> tuple[Any, tuple[Any, ...]]:
        return async_raise_value_error, (message,)

    def blocking(self, gate: Gate) -> tuple[Any, tuple[Any, ...]]:
        return async_wait_gate, (gate,)
