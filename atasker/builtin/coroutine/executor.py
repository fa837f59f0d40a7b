"""Coroutine tasks (``tt="coroutine"``, TT_COROUTINE): ``async def`` functions
on aloops or on any running asyncio loop.

::

    submit(f) ─▶ validate: resolve loop= to a Feeder ─▶ queue policy
                                                          │ admitted
                                                          ▼
    start(task) ── in the loop's thread? ── yes ─▶ _start_in_loop
                          │ no                           ▲
                          ▼                              │
                   Feeder.push ── one wake-up ─▶ Feeder.drain (loop thread)

    _start_in_loop: coro = f(*args, **kwargs); loop.create_task(coro), both in
                    the submitter's contextvars context (task.context)
    asyncio task done ─▶ _Run.done ─▶ supervisor.task_done(result | exception
                                                           | cancelled)

Priorities and the coroutine pool (``set_coroutine_pool``; unlimited by
default) are applied by the supervisor before :meth:`CoroutineExecutor.start`,
exactly as for threads.  A running coroutine task can be cancelled
(``handle.cancel()`` cancels the asyncio task; the handle ends cancelled once
the coroutine has handled ``CancelledError``), and ``timeout=`` cancels it
after that many seconds and fails the handle with :class:`TimeoutError`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from atasker.builtin.coroutine.aloop import TT_COROUTINE
from atasker.core.pool import Pool
from atasker.core.task import Task
from atasker.plugin.hookspecs import hookimpl
from atasker.plugin.protocols import BaseExecutor, TaskType

if TYPE_CHECKING:
    from atasker.builtin.coroutine.aloops import Aloops
    from atasker.builtin.coroutine.feeder import Feeder
    from atasker.core.task import SupervisorAPI

__all__ = ["TT_COROUTINE", "CoroutineExecutor"]

_get_running_loop = asyncio._get_running_loop  # C function; None off-loop, never raises


class _Run:
    """One coroutine task on its loop: what ``cancel`` and ``done`` need.

    Stored as ``task.executor_data`` from submission until the task ends.
    Every field but ``feeder`` is touched only in the loop's thread.
    """

    __slots__ = ("atask", "cancel_requested", "executor", "feeder", "task", "timed_out", "timer")

    def __init__(self, executor: CoroutineExecutor, task: Task, feeder: Feeder) -> None:
        self.executor = executor
        self.task: Task | None = task
        self.feeder = feeder
        self.atask: asyncio.Future[Any] | None = None
        self.cancel_requested = False
        self.timed_out = False
        self.timer: asyncio.TimerHandle | None = None

    def request_cancel(self) -> None:
        """Loop thread: cancel the coroutine, or make sure it never starts."""
        if self.task is None:
            return  # already ended
        if self.atask is None:
            self.cancel_requested = True  # _start_in_loop reports it cancelled
        else:
            self.atask.cancel()

    def time_out(self) -> None:
        """Loop thread: the task's ``timeout`` ran out."""
        atask = self.atask
        if atask is not None and not atask.done():
            self.timed_out = True
            atask.cancel()

    def done(self, atask: asyncio.Future[Any]) -> None:
        """Loop thread: the asyncio task ended; report the outcome once."""
        if self.timer is not None:
            self.timer.cancel()
        if atask.cancelled():
            if self.timed_out:
                task = self.task
                assert task is not None
                self.executor.finish(
                    self,
                    exception=TimeoutError(f"coroutine task {task.id} ({task.name}) timed out after {task.timeout} s"),
                )
            else:
                self.executor.finish(self, cancelled=True)
            return
        exc = atask.exception()
        if exc is not None:
            self.executor.finish(self, exception=exc)
        else:
            self.executor.finish(self, result=atask.result())


class CoroutineExecutor(BaseExecutor):
    """Runs coroutine tasks on the event loop each task names (``loop=``).

    Never blocks: starting a task from another thread queues it on the
    loop's feeder; from the loop's own thread it is created at once.
    """

    def __init__(self, supervisor: SupervisorAPI, pool: Pool) -> None:
        super().__init__(supervisor, pool)
        self._aloops: Aloops = supervisor.extension("aloops", "coroutine tasks")
        self._task_done = supervisor.task_done

    def validate(self, task: Task) -> None:
        """Resolve ``loop=`` now, so a bad or stopped loop fails ``submit``.

        :raises UnknownAloopError: ``loop=`` names no aloop.
        :raises AloopStoppedError: the aloop or loop is not running.
        :raises TypeError: ``loop=`` is neither an aloop, a name nor a loop.
        """
        feeder = self._aloops.feeder_for(task.options.get("loop"))
        task.executor_data = _Run(self, task, feeder)

    def start(self, task: Task) -> None:
        """Hand the task to its loop; create the asyncio task now if on it."""
        run: _Run = task.executor_data
        feeder = run.feeder
        if _get_running_loop() is feeder.loop and not feeder.closing:
            self.start_in_loop(run)
        else:
            feeder.push(run)

    def start_in_loop(self, run: _Run) -> None:
        """Loop thread: call the task function and schedule its coroutine."""
        task = run.task
        assert task is not None
        if run.cancel_requested:
            self.finish(run, cancelled=True)
            return
        loop = run.feeder.loop
        # The submitter's context (a copy): the function is called and its
        # asyncio task created in it, so the coroutine runs in a copy of it
        # (asyncio.create_task copies the current context).
        ctx = task.context
        try:
            aw = task.func(*task.args, **task.kwargs) if ctx is None else ctx.run(task.func, *task.args, **task.kwargs)
            if type(aw) is CoroutineType or asyncio.iscoroutine(aw):
                name = f"{task.name} (task {task.id})"
                atask: asyncio.Future[Any] = (
                    loop.create_task(aw, name=name) if ctx is None else ctx.run(loop.create_task, aw, name=name)
                )
            elif inspect.isawaitable(aw):
                atask = (
                    asyncio.ensure_future(aw, loop=loop)
                    if ctx is None
                    else ctx.run(asyncio.ensure_future, aw, loop=loop)
                )
            else:
                raise TypeError(
                    f"coroutine task {task.name!r} returned {type(aw).__name__}, not an awaitable; "
                    "use an async def function, or tt='thread' for a plain function"
                )
        except BaseException as exc:
            self.finish(run, exception=exc)
            return
        run.atask = atask
        if task.timeout is not None:
            run.timer = loop.call_later(task.timeout, run.time_out)
        atask.add_done_callback(run.done)

    def reject(self, run: _Run, exc: BaseException) -> None:
        """The loop will not run this task (it stopped first)."""
        self.finish(run, exception=exc)

    def finish(
        self, run: _Run, result: Any = None, exception: BaseException | None = None, cancelled: bool = False
    ) -> None:
        task = run.task
        if task is None:
            return  # reported already
        # Break task -> run -> task and run -> asyncio task before reporting.
        run.task = None
        run.atask = None
        task.executor_data = None
        self._task_done(task, result=result, exception=exception, cancelled=cancelled)

    def cancel(self, task: Task) -> bool:
        """Cancel a running coroutine task (any thread).

        :returns: ``True`` if the request reached a live loop.  As with
            :meth:`asyncio.Task.cancel`, the handle ends cancelled once the
            coroutine lets ``CancelledError`` propagate; a coroutine that
            catches it and returns decides its own outcome.
        """
        run = task.executor_data
        if not isinstance(run, _Run):
            return False
        loop = run.feeder.loop
        if _get_running_loop() is loop:
            run.request_cancel()
            return True
        try:
            loop.call_soon_threadsafe(run.request_cancel)
        except RuntimeError:  # the loop is closed; its feeder fails the task
            return False
        return True

    def capacity(self) -> int | None:
        """``None``: a loop runs any number of coroutines; the pool size limits them."""
        return None

    def resize(self, pool: Pool) -> None:
        """Nothing to do: the supervisor applies the new limits."""

    def shutdown(self, wait: bool = True) -> None:
        """Nothing to release: the supervisor stops its aloops in ``_on_stop``."""


@hookimpl
def atasker_register_task_types(register: Callable[[TaskType], None]) -> None:
    """Register the built-in ``"coroutine"`` task type (unlimited pool by default)."""
    register(
        TaskType(
            TT_COROUTINE,
            CoroutineExecutor,
            pool_size=0,
            reserve_normal=5,
            reserve_high=5,
            doc="run an async def function on an aloop or a running asyncio loop",
        )
    )
