"""The ``concurrent.futures`` face of a supervisor: ``supervisor.as_executor()``.

Code written for a :class:`concurrent.futures.Executor` -- ``Executor.map``
users, ``loop.run_in_executor``, ``loop.set_default_executor``, libraries
that take an executor -- runs its calls as tasks of a supervisor, under its
priorities, reserves, status store and plugins::

    caller ── face.submit(fn, *args) ──▶ supervisor.submit(fn, args, kwargs, spec)
                                             │ queue ─ policy ─ the task type's executor
    caller ◀── the task handle ◀─────────────┘ (a concurrent.futures.Future)

The face owns no thread, queue or pool: the task type's executor runs the
calls.  It only remembers the tasks submitted through it and not yet ended,
so that ``shutdown()`` waits for (or cancels) those and no others, and never
stops the supervisor.  Its lock is held while a task is handed to the
supervisor (as ``ThreadPoolExecutor`` holds its own in ``submit``), so a
``shutdown()`` sees every task submitted before it.

A built-in plugin (``atasker.extras.futures``, blockable like the others)
because it uses only the public supervisor API, as the workers do: the core
gains one delegator and knows nothing of ``concurrent.futures`` semantics.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from atasker.core.task import (
    DEFAULT_SPEC,
    DEFAULT_TASK_TYPE,
    TASK_NORMAL,
    TASK_STATUS_QUEUED,
    SupervisorAPI,
    Task,
    TaskSpec,
)
from atasker.plugin.hookspecs import hookimpl

__all__ = ["FuturesExtension", "SupervisorExecutor", "ThreadTaskExecutor"]

T = TypeVar("T")


class SupervisorExecutor(concurrent.futures.Executor):
    """A :class:`concurrent.futures.Executor` whose calls are supervisor tasks.

    Made by :meth:`TaskSupervisor.as_executor`.  Every call submitted is a
    task of type *tt* at *priority* (with the other :class:`TaskSpec`
    fields given); the futures it returns are the task handles
    (:class:`atasker.Task`), so ``get_task_info``, ``task.priority`` and
    the lifecycle hooks see them as any other task.

    ``shutdown()`` ends this face only: later ``submit()`` calls raise
    ``RuntimeError`` as a stdlib executor's do, ``cancel_futures=True``
    cancels the tasks submitted through it that have not started, and
    ``wait=True`` waits for the rest.  The supervisor goes on running.

    :param supervisor: the supervisor that runs the tasks.
    :param tt: task type of every call (default ``"thread"``).
    :param priority: priority of every call (default ``TASK_NORMAL``).
    :param fields: other :class:`TaskSpec` fields (``name``, ``timeout``,
        ``delay``, ``callback``, ``options``), validated here, once.
    """

    def __init__(
        self,
        supervisor: SupervisorAPI,
        tt: str = DEFAULT_TASK_TYPE,
        priority: int = TASK_NORMAL,
        **fields: Any,
    ) -> None:
        # No super().__init__(): for the thread face below it would build a
        # ThreadPoolExecutor's queue and lock that nothing uses.
        self.supervisor = supervisor
        #: The :class:`TaskSpec` of every task submitted through this face.
        self.spec: TaskSpec = DEFAULT_SPEC.replace(tt=tt, priority=priority, **fields)
        self._lock = threading.RLock()  # reentrant: an executor may end a task inside submit()
        self._pending: set[Task] = set()
        self._closed = False

    @property
    def tt(self) -> str:
        """The task type of the calls."""
        return self.spec.tt

    @property
    def priority(self) -> int:
        """The priority of the calls."""
        return self.spec.priority

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Task:
        """Submit ``fn(*args, **kwargs)`` as a task; return its handle (a Future).

        :raises RuntimeError: this face was shut down (or the supervisor
            stopped: :class:`atasker.SupervisorStoppedError` is one).
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            task = self.supervisor.submit(fn, args, kwargs, spec=self.spec)
            self._pending.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(task)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """``fn`` over the iterables, results in order, as ``Executor.map``.

        Every call is submitted at once; the iterator raises
        ``TimeoutError`` (``concurrent.futures.TimeoutError``) when a result
        is not there *timeout* seconds after this call, re-raises a call's
        exception, and cancels the calls not yet returned when it is closed
        or fails.  ``chunksize`` > 1 sends that many calls in one task (what
        ``ProcessPoolExecutor.map`` does; here for every task type): fewer
        round trips to process workers or a cluster.

        :raises ValueError: *chunksize* < 1.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        batches = _batches(zip(*iterables, strict=False), chunksize)  # the shortest, as map()
        return _flatten(super().map(_Chunk.of(fn), batches, timeout=timeout))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; cancel and/or wait for the ones submitted here.

        :param wait: wait until every task submitted through this face ended.
        :param cancel_futures: first cancel those that have not started (a
            task starting at that very moment may be cancelled while it
            runs, where its task type can stop running tasks).
        """
        with self._lock:
            self._closed = True
            pending = list(self._pending)
        if cancel_futures:
            for task in pending:
                if task.status == TASK_STATUS_QUEUED:
                    task.cancel()
        if wait:
            concurrent.futures.wait(pending)

    def __repr__(self) -> str:
        state = "shut down" if self._closed else f"{len(self._pending)} pending"
        return f"<{type(self).__name__} {self.supervisor.name!r} tt={self.tt} priority={self.priority} {state}>"


class ThreadTaskExecutor(SupervisorExecutor, concurrent.futures.ThreadPoolExecutor):
    """The face of thread tasks; also a :class:`~concurrent.futures.ThreadPoolExecutor`.

    Only so that ``loop.set_default_executor()`` takes it (Python 3.11+
    accept nothing else; 3.10 warns).  It starts no thread of its own:
    every method is :class:`SupervisorExecutor`'s, and the calls run in the
    supervisor's thread pool.
    """


def _batches(items: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def _flatten(results: Iterator[list[T]]) -> Iterator[T]:
    try:
        for batch in results:
            yield from batch
    finally:
        # Closing the inner iterator cancels the batches not yet returned.
        results.close()  # type: ignore[attr-defined]


class _Chunk:
    """``fn`` over a batch of argument tuples, in one task (picklable for process tasks)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        # The task's name: the function's, not this wrapper's.
        self.__qualname__ = f"{getattr(fn, '__qualname__', repr(fn))}[chunk]"

    @staticmethod
    def of(fn: Callable[..., Any]) -> _Chunk:
        return _AsyncChunk(fn) if inspect.iscoroutinefunction(fn) else _Chunk(fn)

    def __call__(self, batch: list[tuple[Any, ...]]) -> Any:
        return [self.fn(*args) for args in batch]


class _AsyncChunk(_Chunk):
    """The same for coroutine functions (coroutine tasks)."""

    async def __call__(self, batch: list[tuple[Any, ...]]) -> Any:
        return [await self.fn(*args) for args in batch]


class FuturesExtension:
    """The ``"futures"`` extension: what ``supervisor.as_executor()`` calls."""

    def __init__(self, supervisor: SupervisorAPI) -> None:
        self.supervisor = supervisor

    def as_executor(
        self, tt: str = DEFAULT_TASK_TYPE, priority: int = TASK_NORMAL, **fields: Any
    ) -> SupervisorExecutor:
        """A new face; see :meth:`TaskSupervisor.as_executor`."""
        self.supervisor.registry("task type").get(tt)  # an unknown task type fails here, not at the first call
        face = ThreadTaskExecutor if tt == DEFAULT_TASK_TYPE else SupervisorExecutor
        return face(self.supervisor, tt, priority, **fields)


@hookimpl
def atasker_configure(supervisor: SupervisorAPI) -> None:
    """Add the ``"futures"`` extension (``as_executor``)."""
    supervisor.add_extension("futures", FuturesExtension(supervisor))
