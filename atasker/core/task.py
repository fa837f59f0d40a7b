"""Task handles, priorities and status values.

A :class:`Task` is what ``background_task(f)()`` returns.  It is at the same
time

* the seed's *task id* (``get_task_info`` accepts it, ``task.id`` is the
  plain id),
* a :class:`concurrent.futures.Future` (``result``, ``exception``, ``done``,
  ``cancel``, ``add_done_callback``, ``concurrent.futures.wait``,
  ``asyncio.wrap_future`` and ``await task`` all work), and
* the seed's *task info* record (``id``, ``task``, ``tt``, ``priority``,
  ``time_queued``, ``time_started``, ``status``), which
  ``task_supervisor.get_task_info`` hands out while the task is queued or
  running.

Keeping the three in one slotted object keeps the per-task memory close to a
bare ``Future``: a queued task costs one object, not three.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from atasker.errors import InvalidPriorityError

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

__all__ = [
    "TASK_CRITICAL",
    "TASK_HIGH",
    "TASK_LOW",
    "TASK_NORMAL",
    "TASK_STATUS_CANCELED",
    "TASK_STATUS_QUEUED",
    "TASK_STATUS_STARTED",
    "Task",
    "TaskInfo",
    "priority_band",
    "validate_priority",
]

#: Priorities: lower is more urgent (the original atasker's values).
TASK_LOW = 200
TASK_NORMAL = 100
TASK_HIGH = 50
TASK_CRITICAL = 0

#: ``TaskInfo.status`` values, as the seed documents them.
TASK_STATUS_QUEUED = 0
TASK_STATUS_STARTED = 1
TASK_STATUS_CANCELED = -1

# Ids are unique per process, not per supervisor, so that a handle can never
# be mistaken for a task of another supervisor.  ``next()`` on a
# ``itertools.count`` is atomic under the GIL.
_task_ids = itertools.count(1)


def validate_priority(priority: object) -> int:
    """Return *priority* if it is a valid priority, else raise.

    Any ``int`` >= 0 is valid (``bool`` is not).  The four named priorities
    are the usual values; other integers order between them (lower runs
    first) and take the reserve of the band they fall into, see
    :func:`priority_band`.

    :raises InvalidPriorityError: for anything else, naming the value.
    """
    if type(priority) is int and priority >= 0:
        return priority
    if isinstance(priority, int) and not isinstance(priority, bool) and priority >= 0:
        return int(priority)  # an int subclass such as IntEnum
    raise InvalidPriorityError(
        f"invalid task priority {priority!r}: expected an int >= 0 such as "
        "TASK_LOW (200), TASK_NORMAL (100), TASK_HIGH (50) or TASK_CRITICAL (0); "
        "lower is more urgent"
    )


def priority_band(priority: int) -> int:
    """Map any valid priority to the named priority whose reserve it uses.

    ========================  ================
    priority                  band
    ========================  ================
    ``0``                     ``TASK_CRITICAL``
    ``1 .. 50``               ``TASK_HIGH``
    ``51 .. 100``             ``TASK_NORMAL``
    ``101`` and above         ``TASK_LOW``
    ========================  ================
    """
    if priority <= TASK_CRITICAL:
        return TASK_CRITICAL
    if priority <= TASK_HIGH:
        return TASK_HIGH
    if priority <= TASK_NORMAL:
        return TASK_NORMAL
    return TASK_LOW


class Task(Future):
    """A background task: its id, its record and its future in one object.

    Created by the supervisor; users get one from ``background_task(...)()``
    or :meth:`TaskSupervisor.submit`.

    Record fields (the seed's *task info*):

    * ``id`` -- the task id (an ``int``, unique in the process),
    * ``task`` -- the task object: this handle itself,
    * ``tt`` -- task type name (``"thread"``, ``"mp"``, ...),
    * ``priority`` -- the priority it was submitted with,
    * ``time_queued`` / ``time_started`` -- ``time.time()`` stamps
      (``time_started`` is ``None`` until it starts),
    * ``status`` -- ``0`` queued, ``1`` started, ``-1`` canceled.

    Also ``name``, ``func``, ``args``, ``kwargs``, ``callback``, ``delay``,
    ``timeout``, ``options`` (task-type specific) and ``supervisor``.  ``executor_data`` is free for the
    executor that runs the task (a process slot, a remote key, ...).
    """

    __slots__ = (
        "args",
        "band",
        "callback",
        "delay",
        "error",
        "executor_data",
        "func",
        "id",
        "in_queue",
        "kwargs",
        "name",
        "outcome",
        "priority",
        "status",
        "supervisor",
        "time_finished",
        "time_queued",
        "time_started",
        "timeout",
        "tt",
    )

    def __init__(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        name: str,
        tt: str,
        priority: int,
        supervisor: TaskSupervisor,
        callback: Callable[[Any], Any] | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.id: int = next(_task_ids)
        self.name = name
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.tt = tt
        self.priority = priority
        self.band = priority_band(priority)
        self.delay = delay
        self.timeout = timeout
        self.callback = callback
        self.supervisor = supervisor
        self.time_queued: float | None = None
        self.time_started: float | None = None
        self.time_finished: float | None = None
        self.status = TASK_STATUS_QUEUED
        self.executor_data: Any = None
        #: Task-type specific options (e.g. ``loop`` for coroutine tasks).
        self.options: dict[str, Any] = options or {}
        # True while the task sits in its queue policy (not delayed, not popped).
        self.in_queue = False
        #: ``None`` until the task ends, then ``"completed"``, ``"failed"``
        #: or ``"cancelled"`` (set before the handle resolves).
        self.outcome: str | None = None
        #: The exception of a failed task (``None`` otherwise).
        self.error: BaseException | None = None

    @property
    def task(self) -> Task:
        """The task object (the seed's ``TaskInfo.task``): this handle."""
        return self

    def cancel(self) -> bool:
        """Cancel the task if it has not started yet.

        A queued or delayed task leaves its queue at once, its status becomes
        ``-1`` and waiters see :class:`concurrent.futures.CancelledError`.
        A running task is cancelled only where its task type can stop it
        (process and coroutine tasks can; a running thread cannot be
        interrupted in Python, so this returns ``False`` for it).
        """
        if self.done():
            return self.cancelled()
        if self.supervisor._cancel_queued(self):
            return True
        if self.status == TASK_STATUS_STARTED:
            return self.supervisor._cancel_running(self)
        return False

    def __await__(self) -> Generator[Any, None, Any]:
        """``await task`` from any running event loop, without blocking it."""
        import asyncio

        return asyncio.wrap_future(self).__await__()

    def __hash__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        state = {0: "queued", 1: "started", -1: "canceled"}[self.status]
        if self.done():
            state = "done"
        return f"<Task {self.id} {self.name!r} tt={self.tt} priority={self.priority} {state}>"


class _PoolThread(threading.local):
    """What the current thread is, for the supervisor (see :data:`pool_thread`)."""

    #: The supervisor whose pool this thread works for, or ``None``.
    supervisor: Any = None
    #: Whether this thread also reports the outcomes of *other* tasks (a
    #: plugin's reporting thread, whose task callbacks run on it).
    reports_others: bool = False
    #: Tasks this thread holds besides the one whose callback runs: the next
    #: task a thread-pool worker already took (``task_done(take_next=True)``).
    held: int = 0


#: Set by executors once per thread of their own that runs tasks or reports
#: their outcomes: ``stop(wait=True)`` called from such a thread must not wait
#: for the calling task, which cannot end before ``stop()`` returns, and from
#: a thread that ``reports_others`` cannot wait at all.
pool_thread = _PoolThread()


#: The seed's *task info* record.  It is the task handle itself: the fields
#: the seed lists are attributes of :class:`Task`.
TaskInfo = Task
