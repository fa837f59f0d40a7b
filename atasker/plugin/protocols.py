"""Typed records and protocols of the three extension points.

Hooks hand these records out once, when a supervisor is configured; the
dispatcher then calls the objects they create directly (no hook call on the
hot path).

* :class:`TaskType` -> an :class:`Executor` per supervisor (task types),
* :class:`QueuePolicyType` -> a :class:`QueuePolicy` per pool,
* :class:`StatusStoreType` -> one :class:`StatusStore` per supervisor.

:class:`Pool` is the per-task-type state a policy decides on.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from atasker.core.pool import Pool
from atasker.core.task import Task

if TYPE_CHECKING:
    from atasker.core.task import SupervisorAPI

__all__ = [
    "BaseExecutor",
    "CommandType",
    "Executor",
    "Pool",
    "QueuePolicy",
    "QueuePolicyType",
    "StatusStore",
    "StatusStoreType",
    "TaskType",
    "missing_members",
]


@runtime_checkable
class Executor(Protocol):
    """Runs the tasks of one task type for one supervisor.

    The supervisor calls :meth:`start` once it has admitted a task (the pool
    had room for its priority); the executor runs the task somewhere --
    :meth:`Task.run` in a thread of its own, or ``task.func(*task.args,
    **task.kwargs)`` elsewhere -- and reports the outcome with
    :meth:`TaskSupervisor.task_done` exactly once, from any thread.
    :class:`BaseExecutor` has a default for every method but :meth:`start`.
    """

    def validate(self, task: Task) -> None:
        """Check a task at submission (in the submitting thread); raise on bad input."""

    def start(self, task: Task) -> None:
        """Begin running *task*; must not block.  Called without supervisor locks.

        After :meth:`shutdown` (a task admitted as the supervisor stops) it
        raises -- the supervisor fails the task with that error -- or still
        runs the task; it never drops it.
        """

    def cancel(self, task: Task) -> bool:
        """Stop a running task if this executor can; return ``True`` if it will end cancelled."""

    def capacity(self) -> int | None:
        """How many tasks can run at once, or ``None`` if the executor grows on demand."""

    def resize(self, pool: Pool) -> None:
        """React to a pool size change (e.g. start more worker processes)."""

    def shutdown(self, wait: bool = True) -> None:
        """Release workers; with *wait*, return only when they have exited."""


@runtime_checkable
class QueuePolicy(Protocol):
    """Holds the waiting tasks of one pool and decides which starts next.

    All methods are called with the supervisor's lock held, from whichever
    thread submits, finishes or resizes: they must be fast and never block.

    :attr:`fast_path` declares that with nothing waiting the policy admits
    exactly what :meth:`Pool.may_start` allows; the supervisor then admits
    such tasks without push/pop.
    """

    #: ``True``: with nothing waiting, a task the pool has room for may start
    #: without a push/pop round trip.  ``False`` is always safe.
    fast_path: ClassVar[bool]

    def push(self, task: Task) -> None:
        """Add a task that is ready to start."""

    def remove(self, task: Task) -> bool:
        """Drop a waiting task (it was cancelled); ``False`` if it is not here."""

    def pop_next(self, pool: Pool) -> Task | None:
        """Remove and return the task to start now, or ``None`` if none may start.

        Use :meth:`Pool.may_start` for the reserve rules.
        """

    def waiting(self) -> dict[int, int]:
        """Count of waiting tasks per priority."""

    def tasks(self) -> list[Task]:
        """The waiting tasks (a snapshot), for ``stop(cancel_tasks=True)`` and leak checks."""

    def __len__(self) -> int:
        """Number of waiting tasks."""


@runtime_checkable
class StatusStore(Protocol):
    """Keeps task records; ``get`` backs :meth:`TaskSupervisor.get_task_info`.

    The ``task_*`` methods are called on the hot path, outside the
    supervisor's lock, from the submitting or finishing thread: keep them
    cheap (a store that writes to disk should batch in its own thread).
    """

    def task_queued(self, task: Task) -> None:
        """A task was accepted (status 0)."""

    def task_started(self, task: Task) -> None:
        """A task started running (status 1)."""

    def task_finished(self, task: Task) -> None:
        """A task completed, failed or was cancelled (see ``task`` for which)."""

    def get(self, task_id: int) -> Task | None:
        """The live record of a queued or running task, else ``None``."""

    def close(self) -> None:
        """Flush and release resources (the supervisor is stopping)."""


@dataclass(frozen=True)
class TaskType:
    """A task type a plugin provides: ``background_task(f, tt=name)``.

    :param name: the ``tt`` users pass (``"thread"``, ``"mp"``, ...).
    :param executor_factory: ``factory(supervisor, pool) -> Executor``,
        called once per supervisor on first use of the task type.
    :param pool_size: default pool size (``0`` is unlimited); a callable is
        called at configuration time.
    :param reserve_normal: default extra slots for NORMAL and above.
    :param reserve_high: default extra slots for HIGH and above.
    :param doc: one line for ``atasker plugins``.
    """

    name: str
    executor_factory: Callable[[SupervisorAPI, Pool], Executor]
    pool_size: int | Callable[[], int] = 0
    reserve_normal: int = 5
    reserve_high: int = 5
    doc: str = ""


@dataclass(frozen=True)
class QueuePolicyType:
    """A queue policy a plugin provides, selected by *name*.

    :param factory: ``factory(pool) -> QueuePolicy``, one per pool.
    """

    name: str
    factory: Callable[[Pool], QueuePolicy]
    doc: str = ""


@dataclass(frozen=True)
class StatusStoreType:
    """A status store a plugin provides, selected by URL *scheme*.

    :param factory: ``factory(url, supervisor) -> StatusStore``.
    """

    scheme: str
    factory: Callable[[str, SupervisorAPI], StatusStore]
    doc: str = ""


@dataclass(frozen=True)
class CommandType:
    """An ``atasker`` sub-command a plugin provides (``atasker NAME ...``).

    :param name: the sub-command.
    :param help: one line for ``atasker --help``.
    :param add_arguments: ``add_arguments(parser)`` adds its options to an
        :class:`argparse.ArgumentParser`.
    :param run: ``run(args) -> int``, the exit status.
    """

    name: str
    help: str
    add_arguments: Callable[[Any], None]
    run: Callable[[Any], int]


#: The members every executor has (see :class:`Executor`).
EXECUTOR_MEMBERS = ("validate", "start", "cancel", "capacity", "resize", "shutdown")
#: The members every queue policy has (see :class:`QueuePolicy`).
QUEUE_POLICY_MEMBERS = ("push", "remove", "pop_next", "waiting", "tasks", "__len__", "fast_path")
#: The members every status store has (see :class:`StatusStore`).
STATUS_STORE_MEMBERS = ("task_queued", "task_started", "task_finished", "get", "close")


def missing_members(obj: object, members: tuple[str, ...]) -> list[str]:
    """The names in *members* that *obj* (an object or a class) lacks or has
    not callable (``fast_path`` only has to exist)."""
    missing = []
    for name in members:
        value = inspect.getattr_static(obj, name, None)
        if value is None or (name != "fast_path" and not callable(getattr(obj, name, None))):
            missing.append(name)
    return missing


class BaseExecutor:
    """Defaults for an :class:`Executor`: subclass it and write :meth:`start`.

    Nothing else is required to be safe: a thread of the executor's that
    runs a task through :meth:`Task.run` is known to the supervisor (a
    ``stop()`` called from that task does not wait for it), and a thread
    that reports outcomes with :meth:`TaskSupervisor.task_done` is known
    while it runs their callbacks (a waiting ``stop()`` there raises rather
    than deadlocks).

    :param supervisor: the supervisor whose tasks it runs.
    :param pool: its task type's pool (sizes, running counts).
    """

    def __init__(self, supervisor: SupervisorAPI, pool: Pool) -> None:
        self.supervisor = supervisor
        self.pool = pool

    def validate(self, task: Task) -> None:
        """Accept every task (override to check options at submission)."""

    def start(self, task: Task) -> None:
        """Begin running *task*; must not block.  Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__}.start()")

    def cancel(self, task: Task) -> bool:
        """Running tasks cannot be stopped: ``False``."""
        return False

    def capacity(self) -> int | None:
        """``None``: the executor grows on demand (the pool's sizes limit it)."""
        return None

    def resize(self, pool: Pool) -> None:
        """Nothing to do: the supervisor applies the new limits."""

    def shutdown(self, wait: bool = True) -> None:
        """Nothing to release."""
