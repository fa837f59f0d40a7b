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

import contextvars
import itertools
import math
import threading
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import Future
from concurrent.futures._base import PENDING
from typing import TYPE_CHECKING, Any, Protocol

from atasker.core.condition import HandleCondition
from atasker.errors import InvalidPriorityError

if TYPE_CHECKING:
    from atasker.core.timer import Timer

__all__ = [
    "BANDS",
    "DEFAULT_TASK_TYPE",
    "PRIORITY_COLORS",
    "PRIORITY_NAMES",
    "TASK_CRITICAL",
    "TASK_HIGH",
    "TASK_LOW",
    "TASK_NORMAL",
    "TASK_STATUS_CANCELED",
    "TASK_STATUS_COMPLETED",
    "TASK_STATUS_QUEUED",
    "TASK_STATUS_STARTED",
    "SpecCache",
    "SupervisorAPI",
    "Task",
    "TaskInfo",
    "TaskSpec",
    "ThreadState",
    "priority_band",
    "priority_name",
    "validate_priority",
    "validate_seconds",
]

#: Priorities: lower is more urgent (the original atasker's values).
TASK_LOW = 200
TASK_NORMAL = 100
TASK_HIGH = 50
TASK_CRITICAL = 0

#: The priority bands, most urgent first (see :func:`priority_band`).
BANDS = (TASK_CRITICAL, TASK_HIGH, TASK_NORMAL, TASK_LOW)

#: The name of each band, as logs, traces and the live view show it.
PRIORITY_NAMES = {TASK_CRITICAL: "CRITICAL", TASK_HIGH: "HIGH", TASK_NORMAL: "NORMAL", TASK_LOW: "LOW"}

#: One colour per band, shared by the live view and ``atasker plot``.
PRIORITY_COLORS = {
    TASK_CRITICAL: "#b40000",
    TASK_HIGH: "#ee8e00",
    TASK_NORMAL: "#4387fd",
    TASK_LOW: "#0da861",
}

#: The task type of a task that names none (the built-in thread pool).
DEFAULT_TASK_TYPE = "thread"

#: ``TaskInfo.status`` values: the original atasker's 0, 1 and -1, and 2 for
#: a task that ran to its end (completed or failed; ``outcome`` says which).
#: A record only ever shows 0 or 1 (``get_task_info`` returns ``None`` once a
#: task ended); the handle itself goes on to 2 or -1.
TASK_STATUS_QUEUED = 0
TASK_STATUS_STARTED = 1
TASK_STATUS_COMPLETED = 2
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


def priority_name(priority: int) -> str:
    """The name of the band *priority* falls into (``"HIGH"`` for 50 and for 30)."""
    return PRIORITY_NAMES[priority_band(priority)]


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


def validate_seconds(value: object, what: str, *, zero_ok: bool, never_ok: bool = False) -> float | None:
    """Return *value* if it is ``None`` or a finite number of seconds, else raise.

    ``bool`` is not a number here, nor are ``nan`` and ``inf`` (a deadline
    that never comes is ``None``).

    :param zero_ok: whether ``0`` is allowed (a delay) or not (a timeout).
    :param never_ok: ``inf`` is allowed too, meaning never (as ``None``).
    :raises ValueError: naming *what* and the value.
    """
    if value is None:
        return None
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (math.isfinite(value) or (never_ok and value == math.inf))
        and (value >= 0 if zero_ok else value > 0)
    ):
        return value
    bound = ">= 0" if zero_ok else "> 0"
    never = ", inf" if never_ok else ""
    raise ValueError(f"{what} must be a finite number of seconds {bound}{never} or None, got {value!r}")


class SupervisorAPI(Protocol):
    """What executors, policies, stores and hooks see of a supervisor.

    :class:`~atasker.TaskSupervisor` is the implementation; this protocol
    is the plugin API written down (hook and protocol signatures use it, so
    that the plugin layer does not import the supervisor).
    """

    name: str
    timeout_warning: float | None
    timeout_critical: float | None
    timeout_warning_func: Callable[[Task], Any] | None
    timeout_critical_func: Callable[[Task], Any] | None

    def task_done(
        self,
        task: Task,
        result: Any = None,
        exception: BaseException | None = None,
        cancelled: bool = False,
        take_next: bool = False,
    ) -> Task | None: ...

    def cancel_task(self, task: Task) -> bool: ...

    def submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        spec: TaskSpec | None = None,
        **fields: Any,
    ) -> Task: ...

    @property
    def timer(self) -> Timer: ...

    @property
    def plugin_manager(self) -> Any: ...

    def registry(self, kind: str) -> Any: ...

    def add_extension(self, name: str, extension: Any) -> None: ...

    def extension(self, name: str, needed_by: str | None = None) -> Any: ...

    def report_internal_error(self, exc: BaseException, where: str) -> None: ...

    def set_pool(
        self,
        tt: str,
        pool_size: int | None = None,
        reserve_normal: int | None = None,
        reserve_high: int | None = None,
    ) -> None: ...

    def pool_config(self, tt: str) -> dict[str, int]: ...

    def is_active(self) -> bool: ...

    def ensure_started(self) -> None: ...

    def get_tasks(self, tt: str | None = None) -> list[Task]: ...

    def executor(self, tt: str) -> Any: ...

    def register_plugin(self, plugin: Any, name: str | None = None) -> str | None: ...

    def unregister_plugin(self, plugin: Any = None, name: str | None = None) -> Any: ...

    def stop(
        self, wait: bool | float = True, stop_schedulers: bool | None = None, cancel_tasks: bool = False
    ) -> bool: ...


class TaskSpec:
    """How to run a task: everything a submission says besides the call itself.

    One record serves ``background_task(...)``, :meth:`TaskSupervisor.submit`,
    workers, ``aloop.background_task`` and ``co_mp_apply``: it is validated
    once, where it is made, and a decorated function reuses it for every
    call.  Treat it as immutable; :meth:`replace` makes a changed copy.

    :param tt: task type (default ``"thread"``).
    :param priority: any int >= 0, lower is more urgent (default ``TASK_NORMAL``).
    :param name: task name (default: the function's qualified name).
    :param delay: seconds before the task joins its queue (holds no slot).
    :param callback: ``callback(result)`` after the task succeeded.
    :param timeout: run timeout in seconds, for task types that support it.
    :param options: task-type specific options (``{"loop": aloop}`` for
        coroutine tasks, a plugin's own), read by the executor as
        ``task.options``.
    :raises InvalidPriorityError, ValueError, TypeError: a bad field.
    """

    __slots__ = ("band", "callback", "delay", "name", "options", "priority", "timeout", "tt")

    FIELDS = ("tt", "priority", "name", "delay", "callback", "timeout", "options")

    def __init__(
        self,
        tt: str = DEFAULT_TASK_TYPE,
        priority: int = 100,
        name: str | None = None,
        delay: float | None = None,
        callback: Callable[[Any], Any] | None = None,
        timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if type(priority) is not int or priority < 0:
            priority = validate_priority(priority)
        if not isinstance(tt, str) or not tt:
            raise TypeError(
                f"task type (tt) must be a non-empty str such as TT_THREAD, TT_MP, TT_COROUTINE, got {tt!r}"
            )
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(f"options must be a mapping, got {options!r}")
        self.tt = tt
        self.priority = priority
        self.band = priority_band(priority)
        self.name = name
        self.delay = validate_seconds(delay, "delay", zero_ok=True) or None
        self.callback = callback
        self.timeout = validate_seconds(timeout, "timeout", zero_ok=False)
        self.options: dict[str, Any] = dict(options) if options else {}

    def replace(self, **changes: Any) -> TaskSpec:
        """A copy with *changes* applied (validated like the constructor).

        :raises TypeError: a name that is not a field.
        """
        unknown = set(changes) - set(self.FIELDS)
        if unknown:
            raise TypeError(
                f"unknown task option(s) {', '.join(sorted(map(repr, unknown)))}; known: {', '.join(self.FIELDS)}"
            )
        fields = {name: getattr(self, name) for name in self.FIELDS}
        fields.update(changes)
        return TaskSpec(**fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskSpec):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.FIELDS)

    __hash__ = None  # type: ignore[assignment]  # options is a dict

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.FIELDS if getattr(self, f) not in (None, {}))
        return f"TaskSpec({fields})"


#: The specification of a task submitted with no options.
DEFAULT_SPEC = TaskSpec()


class SpecCache:
    """The TaskSpecs of ``submit()`` keywords, one per distinct ``tt``/``priority``.

    A loop of ``submit(f, tt=..., priority=...)`` then builds and validates
    no record per task.  Other keywords (names, callbacks: values a cache
    would keep alive) make a new record each call.
    """

    CACHED = frozenset({"tt", "priority"})
    #: Priorities are any int: a bound keeps a caller that varies them from growing it.
    SIZE = 64

    def __init__(self) -> None:
        self._specs: dict[tuple[Any, Any, type], TaskSpec] = {}

    def get(self, fields: dict[str, Any]) -> TaskSpec:
        """The record of *fields* (validated like ``TaskSpec(**fields)``)."""
        if len(fields) > 2 or not fields.keys() <= self.CACHED:
            return TaskSpec(**fields)
        priority = fields.get("priority")
        # The type too: True == 1 as a key, but a bool is no priority.
        key = (fields.get("tt"), priority, type(priority))
        try:
            spec = self._specs.get(key)
        except TypeError:  # unhashable, so invalid: the constructor names it
            return TaskSpec(**fields)
        if spec is None:
            spec = TaskSpec(**fields)
            if len(self._specs) < self.SIZE:
                self._specs[key] = spec
        return spec


class Task(Future[Any]):
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

    # Future's own attributes are slots too (it sets them in a __dict__
    # otherwise): with them, a handle has no __dict__ at all.
    __slots__ = (
        "_condition",
        "_done_callbacks",
        "_exception",
        "_result",
        "_state",
        "_waiters",
        "args",
        "band",
        "callback",
        "context",
        "delay",
        "error",
        "executor_data",
        "func",
        "id",
        "in_queue",
        "kwargs",
        "name",
        "options",
        "outcome",
        "priority",
        "spec",
        "status",
        "supervisor",
        "time_finished",
        "time_queued",
        "time_started",
        "timeout",
        "tt",
        "unretrieved",
    )

    def __init__(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        spec: TaskSpec,
        name: str,
        supervisor: SupervisorAPI,
        context: contextvars.Context | None = None,
    ) -> None:
        # What Future.__init__ sets, with the small condition (see HandleCondition).
        self._condition = HandleCondition()  # type: ignore[assignment]  # what Future uses of a Condition
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[Future[Any]], object]] = []
        self.id: int = next(_task_ids)
        self.name = name
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.spec = spec
        self.tt = spec.tt
        self.priority = spec.priority
        self.band = spec.band
        self.delay = spec.delay
        self.timeout = spec.timeout
        self.callback = spec.callback
        #: Task-type specific options (e.g. ``loop`` for coroutine tasks).
        self.options: dict[str, Any] = spec.options
        self.supervisor = supervisor
        #: The submitter's :mod:`contextvars` context (a copy), in which
        #: :meth:`run` calls the function and the callback runs; ``None``
        #: for a task made without one.
        self.context = context
        self.time_queued: float | None = None
        self.time_started: float | None = None
        self.time_finished: float | None = None
        self.status = TASK_STATUS_QUEUED
        self.executor_data: Any = None
        # True while the task sits in its queue policy (not delayed, not popped).
        self.in_queue = False
        #: ``None`` until the task ends, then ``"completed"``, ``"failed"``
        #: or ``"cancelled"`` (set before the handle resolves).
        self.outcome: str | None = None
        #: The exception of a failed task (``None`` otherwise).
        self.error: BaseException | None = None
        #: The pending "never retrieved" report of a failed task (see
        #: atasker.core.dispatch.UnretrievedErrors); result()/exception() drop it.
        self.unretrieved: Any = None

    def result(self, timeout: float | None = None) -> Any:
        """See :meth:`concurrent.futures.Future.result`; retrieves a failure."""
        try:
            return super().result(timeout)
        finally:
            if self.unretrieved is not None and self.done():
                self.unretrieved.detach()
                self.unretrieved = None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """See :meth:`concurrent.futures.Future.exception`; retrieves a failure."""
        try:
            return super().exception(timeout)
        finally:
            if self.unretrieved is not None and self.done():
                self.unretrieved.detach()
                self.unretrieved = None

    def run(self) -> Any:
        """Call the task's function in this thread and return what it returns.

        For executors whose threads run tasks: calling it instead of
        ``task.func(*task.args, **task.kwargs)`` lets the supervisor know
        this thread runs this task, so that a ``stop()`` called from the
        task (or from its callback, reported on this thread) does not wait
        for the task itself.  The function runs in :attr:`context`, the
        copy of the submitter's :mod:`contextvars` context (as
        :func:`asyncio.to_thread` does).
        """
        state = thread_state
        outer = state.running
        state.running = state.ran = self
        try:
            if self.context is not None:
                return self.context.run(self.func, *self.args, **self.kwargs)
            return self.func(*self.args, **self.kwargs)
        finally:
            state.running = outer

    def _invoke_callbacks(self) -> None:
        # Future's own catches Exception only: SystemExit from a done
        # callback would escape set_result() and kill the thread reporting
        # the task -- a pool thread, the timer, a manager or loop thread.
        interrupted = None
        for callback in self._done_callbacks:
            try:
                callback(self)
            except BaseException as exc:
                self.supervisor.report_internal_error(exc, f"done callback of task {self.id} ({self.name})")
                if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
                    interrupted = exc  # Ctrl-C is the user's: raised once every callback ran
        if interrupted is not None:
            raise interrupted

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
        return self.supervisor.cancel_task(self)

    def __await__(self) -> Generator[Any, None, Any]:
        """``await task`` from any running event loop, without blocking it."""
        import asyncio

        return asyncio.wrap_future(self).__await__()

    def __hash__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        state = self.outcome or {0: "queued", 1: "started", 2: "completed", -1: "cancelled"}[self.status]
        return f"<Task {self.id} {self.name!r} tt={self.tt} priority={self.priority} {state}>"


class ThreadState(threading.local):
    """What the current thread does for the supervisors (kept by the core).

    Executors never set it: :meth:`Task.run` and
    :meth:`TaskSupervisor.task_done` do.  ``stop()`` reads it so that it
    never waits for the task that called it.
    """

    #: The task whose function runs on this thread now (:meth:`Task.run`).
    running: Task | None = None
    #: The last task this thread ran with :meth:`Task.run`.
    ran: Task | None = None
    #: The task whose outcome this thread reports now (its callback and the
    #: ``atasker_task_finished`` observers run).
    reporting: Task | None = None
    #: Tasks this thread holds besides the one being reported: the next task
    #: a worker already took with ``task_done(take_next=True)``.
    held: int = 0


#: The current thread's :class:`ThreadState`.
thread_state = ThreadState()


#: The seed's *task info* record.  It is the task handle itself: the fields
#: the seed lists are attributes of :class:`Task`.
TaskInfo = Task
