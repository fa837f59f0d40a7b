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

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from atasker.core.task import TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL, Task

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

__all__ = [
    "Executor",
    "Pool",
    "QueuePolicy",
    "QueuePolicyType",
    "StatusStore",
    "StatusStoreType",
    "TaskType",
]


@runtime_checkable
class Executor(Protocol):
    """Runs the tasks of one task type for one supervisor.

    The supervisor calls :meth:`start` once it has admitted a task (the pool
    had room for its priority); the executor runs ``task.func(*task.args,
    **task.kwargs)`` somewhere and reports the outcome with
    :meth:`TaskSupervisor.task_done` exactly once, from any thread.
    """

    def validate(self, task: Task) -> None:
        """Check a task at submission (in the submitting thread); raise on bad input."""

    def start(self, task: Task) -> None:
        """Begin running *task*; must not block.  Called without supervisor locks."""

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

    A policy may set the class attribute ``fast_path = True`` to declare that
    with nothing waiting it admits exactly what :meth:`Pool.may_start`
    allows; the supervisor then admits such tasks without push/pop.
    """

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
    executor_factory: Callable[[TaskSupervisor, Pool], Executor]
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
    factory: Callable[[str, TaskSupervisor], StatusStore]
    doc: str = ""


class Pool:
    """Limits and running counts of one task type in one supervisor.

    ``pool_size`` slots serve every priority; NORMAL may also use
    ``reserve_normal``; HIGH also ``reserve_high``; CRITICAL is limited only
    by ``capacity`` (what the executor can physically run, ``None`` for a
    pool that grows).  ``pool_size == 0`` means unlimited.

    Sizes change through :meth:`configure` (the supervisor's ``set_pool``),
    which recomputes the per-band limits once, so that :meth:`may_start` --
    called for every task -- is a dict lookup and a comparison.
    """

    __slots__ = ("_capacity", "_limits", "_sizes", "running", "running_by_priority", "tt")

    def __init__(
        self,
        tt: str,
        pool_size: int = 0,
        reserve_normal: int = 0,
        reserve_high: int = 0,
        capacity: int | None = None,
    ) -> None:
        self.tt = tt
        self._sizes = (pool_size, reserve_normal, reserve_high)
        self._capacity = capacity
        self._limits: dict[int, float] = {}
        #: Tasks of this type running now, in all and per priority.
        self.running = 0
        self.running_by_priority: dict[int, int] = {}
        self._recompute()

    @property
    def pool_size(self) -> int:
        """Slots for every priority (``0``: unlimited)."""
        return self._sizes[0]

    @property
    def reserve_normal(self) -> int:
        """Extra slots for NORMAL and more urgent tasks."""
        return self._sizes[1]

    @property
    def reserve_high(self) -> int:
        """Extra slots for HIGH and more urgent tasks."""
        return self._sizes[2]

    @property
    def capacity(self) -> int | None:
        """What the executor can run at once (``None``: it grows)."""
        return self._capacity

    def configure(
        self,
        pool_size: int | None = None,
        reserve_normal: int | None = None,
        reserve_high: int | None = None,
        capacity: int | object | None = ...,
    ) -> None:
        """Change sizes (``None`` keeps a size; ``capacity=...`` keeps it)."""
        size, normal, high = self._sizes
        self._sizes = (
            size if pool_size is None else pool_size,
            normal if reserve_normal is None else reserve_normal,
            high if reserve_high is None else reserve_high,
        )
        if capacity is not ...:
            self._capacity = capacity  # type: ignore[assignment]
        self._recompute()

    def _recompute(self) -> None:
        size, normal, high = self._sizes
        cap = math.inf if self._capacity is None else self._capacity
        unlimited = size == 0
        self._limits = {
            TASK_CRITICAL: cap,
            TASK_HIGH: min(cap, math.inf if unlimited else size + normal + high),
            TASK_NORMAL: min(cap, math.inf if unlimited else size + normal),
            TASK_LOW: min(cap, math.inf if unlimited else size),
        }

    def limit(self, band: int) -> float:
        """How many tasks may run in total when a task of *band* starts."""
        return self._limits[band]

    def may_start(self, band: int) -> bool:
        """Whether a task of priority band *band* may start now."""
        return self.running < self._limits[band]

    def info(self) -> dict[str, Any]:
        """Sizes and running counts, for :meth:`TaskSupervisor.get_info`."""
        return {
            "pool_size": self.pool_size,
            "reserve_normal": self.reserve_normal,
            "reserve_high": self.reserve_high,
            "capacity": self.capacity,
            "running": self.running,
            "running_by_priority": {p: n for p, n in self.running_by_priority.items() if n},
        }

    def __repr__(self) -> str:
        size, normal, high = self._sizes
        return f"<Pool {self.tt} size={size}+{normal}+{high} capacity={self._capacity} running={self.running}>"


# Re-exported for policies that want the bands by name.
BANDS = (TASK_CRITICAL, TASK_HIGH, TASK_NORMAL, TASK_LOW)
