"""Workers: objects that keep generating tasks -- in a loop, on an interval,
from a queue or on an event -- as tasks of the supervisor.

Every run of a worker's executor is one task, so workers obey the
supervisor's priorities, reserves and plugins like any other work::

    start() ─▶ _schedule() ─▶ supervisor.submit(executor, delay=...)
                  ▲                              │
                  └──── _ran(task) ◀── done callback (result / error)

Nothing polls: the next run is submitted from the previous run's done
callback, interval and delay waits are the supervisor's ``delay=`` (its
timer thread), and ``put()`` / ``trigger()`` submit directly.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import queue as queue_module
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, cast

from atasker.builtin.compat import DONE, alias
from atasker.core.supervisor import default_supervisor
from atasker.core.task import TASK_NORMAL, Task, TaskSpec, validate_priority
from atasker.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

__all__ = [
    "BackgroundAsyncWorker",
    "BackgroundEventWorker",
    "BackgroundIntervalWorker",
    "BackgroundQueueWorker",
    "BackgroundWorker",
    "background_worker",
]

logger = logging.getLogger("atasker")

_worker_numbers = itertools.count(1)

# asyncio queue classes the original library accepted, mapped to their
# thread-safe twins (put() may be called from any thread).
_QUEUE_CLASSES: dict[Any, type[queue_module.Queue[Any]]] = {
    True: queue_module.Queue,
    asyncio.Queue: queue_module.Queue,
    asyncio.PriorityQueue: queue_module.PriorityQueue,
    asyncio.LifoQueue: queue_module.LifoQueue,
}


class BackgroundWorker:
    """Runs its executor again and again, each run a supervisor task.

    The executor is ``func`` or the ``run`` method of a subclass; it gets the
    ``start()`` args and kwargs plus ``_worker`` (this object),
    ``_worker_name`` and, if set, ``o``.  Returning ``False`` stops the
    worker.  An ``async def`` executor runs on an aloop; a ``run`` declared
    ``@staticmethod`` runs in the process pool, and its result goes to
    ``process_result(result)`` in this process.

    :param worker_name: name (alias ``name``); default: the executor's name.
    :param func: executor function (default: ``self.run``); the original's
        ``executor_func`` too.
    :param priority: priority of each run (default ``TASK_NORMAL``).
    :param o: any object, passed to the executor as ``o``.
    :param on_error: called as ``on_error(e, **on_error_kwargs)`` when a run
        raises; the worker goes on.
    :param on_error_kwargs: extra kwargs for ``on_error``.
    :param supervisor: the supervisor (default ``task_supervisor``).
    :param loop: for async executors: an aloop, its name or a running loop.

    ``start()`` accepts overrides ``_worker_name``, ``_priority``, ``_loop``
    and ``_o`` (interval workers also ``_interval``, ``_delay``,
    ``_delay_before``).
    """

    def __init__(
        self,
        worker_name: str | None = None,
        func: Callable[..., Any] | None = None,
        priority: int = TASK_NORMAL,
        o: Any = None,
        on_error: Callable[..., Any] | None = None,
        on_error_kwargs: dict[str, Any] | None = None,
        supervisor: TaskSupervisor | None = None,
        loop: Any = None,
        name: str | None = None,
        **legacy: Any,
    ) -> None:
        unknown = set(legacy) - {"daemon", "poll_delay", "executor_func"}  # the original's, ignored but the last
        if unknown:
            raise TypeError(f"unexpected worker parameter(s): {', '.join(sorted(unknown))}")
        func = func if func is not None else legacy.get("executor_func")
        if func is not None and not callable(func):
            raise TypeError(f"worker func must be callable, got {func!r}")
        self._func = func
        self.name = worker_name or name or self._default_name()
        self.priority = validate_priority(priority)
        self.o = o
        self.on_error = on_error
        self.on_error_kwargs = dict(on_error_kwargs or {})
        self.supervisor = supervisor
        self.loop = loop
        self._lock = threading.Lock()
        self._active = False
        self._draining = False  # stop() processes the work queued, then stops
        self._drain_left = 0
        self._current: Task | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._args: tuple[Any, ...] = ()
        self._kwargs: dict[str, Any] = {}
        self._run_priority = self.priority
        self._run_name = self.name
        self._run_loop = loop
        self._run_o = o

    def _default_name(self) -> str:
        if self._func is not None:
            return getattr(self._func, "__name__", None) or f"worker-{next(_worker_numbers)}"
        return f"{type(self).__name__}-{next(_worker_numbers)}"

    # ----------------------------------------------------------- executor

    @property
    def executor(self) -> Callable[..., Any]:
        """The function each run calls."""
        return self._func if self._func is not None else self.run

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The executor when no ``func`` is given: override it."""
        raise NotImplementedError(f"{type(self).__name__}: pass func= or override run()")

    def _runs_in_process(self) -> bool:
        return self._func is None and isinstance(inspect.getattr_static(type(self), "run", None), staticmethod)

    def _task_type(self) -> str:
        if self._runs_in_process():
            return "mp"
        return "coroutine" if inspect.iscoroutinefunction(self.executor) else "thread"

    def process_result(self, result: Any) -> Any:
        """Called in this process with a process-pool run's result; ``False`` stops."""
        return result

    # ---------------------------------------------------------- lifecycle

    def start(self, *args: Any, **kwargs: Any) -> None:
        """Start the worker (no-op if active); args/kwargs go to every run."""
        with self._lock:
            if self._active:
                return
            self._run_name = kwargs.pop("_worker_name", self.name)
            self._run_priority = validate_priority(kwargs.pop("_priority", self.priority))
            self._run_loop = kwargs.pop("_loop", self.loop)
            self._run_o = kwargs.pop("_o", self.o)
            self._configure(kwargs)
            self._args, self._kwargs = args, kwargs
            self._active = True
        sup = self._supervisor()
        sup.extension("workers", "starting a worker").add(self)
        self._started()

    def _configure(self, kwargs: dict[str, Any]) -> None:
        """Subclasses take their start-time overrides out of *kwargs*."""

    def _started(self) -> None:
        self._schedule()

    def stop(self, wait: bool | float = True) -> bool:
        """Stop the worker; with *wait* (``True`` or seconds) wait for the
        current run to end.  Pending scheduled runs are cancelled.

        A queue or event worker first processes the items queued (the
        trigger received) when ``stop()`` is called, for at most *wait*
        seconds; what a stop leaves undone stays queued and is logged.
        From inside a run or a coroutine, ``stop()`` never blocks.

        :returns: ``True`` if no run is in progress when it returns.
        """
        if wait is not False and self._drain():
            if self._in_own_run() or _in_event_loop():
                return self._idle.is_set()
            if self._idle.wait(None if wait is True else float(wait)):
                self._report_left()  # put() after stop(), or a failed submit
                return True
            wait = False  # the drain took too long: stop now, keep the rest
        return self._halt(wait)

    def _halt(self, wait: bool | float, report: bool = True) -> bool:
        with self._lock:
            self._active = self._draining = False
            current = self._current
        if current is not None and current.status == 0:
            current.cancel()  # a delayed / queued run that never started
        if report:
            self._report_left()
        if wait is False or self._in_own_run() or _in_event_loop():
            # Never block an event loop, nor wait for the run we are in.
            return self._idle.is_set()
        return self._idle.wait(None if wait is True else float(wait))

    def _drain(self) -> bool:
        """Run the work queued now, then stop; ``False``: none to wait for."""
        with self._lock:
            left = self._left()
            if not self._active or left is None:
                return False
            if not self._draining:
                self._draining, self._drain_left = True, left
            idle = self._current is None
        if idle:
            self._schedule_next()  # nothing runs: start the drain (or end it)
        return True

    def _left(self) -> int | None:
        """Runs asked for and not started (``None``: this worker queues none)."""
        return None

    _left_message = "%d item(s) still queued; start() processes them"

    def _report_left(self) -> None:
        if left := self._left():
            logger.warning(f"worker %s stopped with {self._left_message}", self.name, left)

    def _in_own_run(self) -> bool:
        return getattr(_run_context, "worker", None) is self

    def is_active(self) -> bool:
        """Whether the worker is started and not stopped."""
        return self._active

    def restart(self, *args: Any, **kwargs: Any) -> None:
        """Stop (waiting for the current run), then start again; queued
        items and triggers are left to the restarted worker."""
        self._halt(wait=not self._in_own_run(), report=False)
        self.start(*args, **kwargs)

    def _supervisor(self) -> TaskSupervisor:
        return self.supervisor or default_supervisor()

    # ---------------------------------------------------------- scheduling

    def _schedule(self, delay: float | None = None) -> None:
        """Submit one run (after *delay* seconds) unless stopped, running,
        or there is nothing to run.  Raises what ``submit`` raises."""
        with self._lock:
            if not self._active or self._current is not None:
                return
            args = None if self._draining and not self._drain_left else self._take_run()
            if args is None:
                if self._draining:  # drained: the worker stops
                    self._active = self._draining = False
                return
            self._drain_left -= self._draining  # one run of the drain
            self._idle.clear()
            try:
                task = self._submit(args, delay)
            except BaseException:
                self._active = self._draining = False
                self._idle.set()
                self._give_back(args)
                raise
            self._current = task
        task.add_done_callback(self._ran)

    def _take_run(self) -> tuple[Any, ...] | None:
        """The args of the next run, or ``None`` if there is nothing to run.
        Called with the worker's lock held."""
        return self._args

    def _give_back(self, args: tuple[Any, ...]) -> None:
        """A run could not be submitted: keep what it would have consumed."""

    def _submit(self, args: tuple[Any, ...], delay: float | None) -> Task:
        sup = self._supervisor()
        tt = self._task_type()
        kwargs = dict(self._kwargs)
        if self._run_o is not None:
            kwargs["o"] = self._run_o
        if tt == "mp":
            kwargs["_worker_name"] = self._run_name
            func: Callable[..., Any] = self.executor
        else:
            kwargs["_worker"] = self
            kwargs["_worker_name"] = self._run_name
            func = self._call_async if tt == "coroutine" else self._call
        spec = TaskSpec(
            tt=tt,
            priority=self._run_priority,
            name=self._run_name,
            delay=delay,
            options={"loop": self._run_loop} if tt == "coroutine" and self._run_loop is not None else None,
        )
        return sup.submit(func, args, kwargs, spec=spec)

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        _run_context.worker = self
        try:
            return self.executor(*args, **kwargs)
        finally:
            _run_context.worker = None

    async def _call_async(self, *args: Any, **kwargs: Any) -> Any:
        return await self.executor(*args, **kwargs)

    def _ran(self, future: Future[Any]) -> None:
        """Done callback of a run (any thread): handle the outcome, go on."""
        task = cast(Task, future)
        keep_going = True
        if task.cancelled():
            keep_going = self._keep_after_cancel()
            if not keep_going:
                with self._lock:
                    self._give_back(task.args)
        else:
            error = task.exception()
            if error is not None:
                self._report(error)
            else:
                result = task.result()
                if self._task_type() == "mp":
                    try:
                        result = self.process_result(result)
                    except Exception as exc:
                        self._report(exc)
                if result is False:
                    keep_going = False
        with self._lock:
            self._current = None
            stopped_itself = not keep_going and self._active
            if not keep_going:
                self._active = self._draining = False
        if stopped_itself and not task.cancelled():
            self._report_left()  # the executor returned False
        self._after_run(task)
        with self._lock:
            if self._current is None:
                self._idle.set()

    def _keep_after_cancel(self) -> bool:
        """A run was cancelled (by ``stop()``, or by the user): stop."""
        return False

    def _after_run(self, task: Task) -> None:
        """Schedule what follows a run; the base worker runs again at once."""
        self._schedule_next()

    def _schedule_next(self, delay: float | None = None) -> None:
        try:
            self._schedule(delay)
        except Exception as exc:  # e.g. the supervisor is stopping
            logger.debug("worker %s stops: %s", self.name, exc)

    def _report(self, error: BaseException) -> None:
        if self.on_error is None:
            logger.error("worker %s: executor raised %s: %s", self.name, type(error).__name__, error)
            return
        try:
            self.on_error(error, **self.on_error_kwargs)
        except Exception:
            logger.exception("worker %s: on_error raised", self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {'active' if self._active else 'stopped'}>"


# The run a thread is executing, so that stop() from inside it does not wait
# for itself.
_run_context = threading.local()


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class BackgroundAsyncWorker(BackgroundWorker):
    """A :class:`BackgroundWorker` whose executor is ``async def`` (runs on an aloop)."""


class BackgroundIntervalWorker(BackgroundWorker):
    """Runs its executor every ``interval`` seconds, or with ``delay``
    seconds between runs; ``delay_before`` waits before each run.

    Interval runs are drift-free: run *k* is due at ``start + k * interval``
    whatever each run takes (a run that overruns skips the ticks it missed).
    ``trigger()`` runs the executor at once, out of schedule.

    :param interval: seconds between run starts.
    :param delay: seconds between the end of a run and the next start.
    :param delay_before: seconds to wait before every run.
    """

    def __init__(
        self,
        *args: Any,
        interval: float | None = None,
        delay: float | None = None,
        delay_before: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.interval, self.delay, self.delay_before = self._check(interval, delay, delay_before)
        self._t0 = 0.0
        self._tick = 0
        self._triggered = False

    @staticmethod
    def _check(interval: Any, delay: Any, delay_before: Any) -> tuple[Any, Any, Any]:
        if interval is not None and delay is not None:
            raise ValueError("interval and delay are exclusive: give one of them")
        for label, value in (("interval", interval), ("delay", delay), ("delay_before", delay_before)):
            if value is not None and not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{label} must be a number of seconds >= 0, got {value!r}")
        return interval, delay, delay_before

    def _configure(self, kwargs: dict[str, Any]) -> None:
        self._run_interval, self._run_delay, self._run_delay_before = self._check(
            kwargs.pop("_interval", self.interval),
            kwargs.pop("_delay", self.delay),
            kwargs.pop("_delay_before", self.delay_before),
        )
        self._t0 = time.monotonic()
        self._tick = 0

    def _started(self) -> None:
        self._schedule(self._run_delay_before)

    def _after_run(self, task: Task) -> None:
        with self._lock:
            triggered, self._triggered = self._triggered, False
        if triggered:
            self._schedule_next(0)
            return
        wait = self._run_delay_before or 0
        if self._run_interval:
            now = time.monotonic()
            # Next tick strictly after now; missed ticks are skipped.
            self._tick = max(self._tick + 1, int((now - self._t0) / self._run_interval) + 1)
            wait += max(0.0, self._t0 + self._tick * self._run_interval - now)
        elif self._run_delay:
            wait += self._run_delay
        self._schedule_next(wait or None)

    def _keep_after_cancel(self) -> bool:
        return self._triggered  # trigger() cancelled the scheduled run

    def trigger(self, force: bool = False) -> Awaitable[None]:
        """Run the executor now, out of schedule (thread-safe; awaitable too, as in 0.7).

        A run in progress is followed by one more run at once (what 0.7's *force* asked).
        """
        with self._lock:
            if not self._active:
                return DONE
            self._triggered = True
            current = self._current
        if current is None:
            self._schedule_next(None)
        elif current.status == 0:
            current.cancel()  # the scheduled run; _after_run starts one now
        return DONE

    trigger_threadsafe = alias("trigger_threadsafe", "trigger")


class BackgroundQueueWorker(BackgroundWorker):
    """Runs its executor once per item ``put()`` into its queue, in order.

    The executor gets the item as its first argument.  ``q``/``queue`` may be
    ``True`` (FIFO) or a queue class, e.g. :class:`queue.PriorityQueue`
    (asyncio queue classes are accepted and mapped to their thread-safe
    twins).  ``put()`` is thread-safe.  ``stop()`` processes the items
    queued when it is called, then stops (see :meth:`BackgroundWorker.stop`).
    """

    def __init__(self, *args: Any, q: Any = True, queue: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kind = queue if queue is not None else q
        cls = _QUEUE_CLASSES.get(kind, kind)
        if not (isinstance(cls, type) and hasattr(cls, "put") and hasattr(cls, "get_nowait")):
            raise TypeError(f"q/queue must be True or a queue class, got {kind!r}")
        self._queue: Any = cls()

    def put(self, item: Any) -> Awaitable[None]:
        """Queue *item* for the executor (thread-safe; awaitable too, as in 0.7).

        :raises SupervisorStoppedError: the worker is active but its
            supervisor stopped; the item stays queued for a later ``start()``.
        """
        self._queue.put(item)
        self._schedule()
        return DONE

    put_threadsafe = alias("put_threadsafe", "put")

    def _take_run(self) -> tuple[Any, ...] | None:
        try:
            item = self._queue.get_nowait()
        except queue_module.Empty:
            return None
        return (item, *self._args)

    def _give_back(self, args: tuple[Any, ...]) -> None:
        self._queue.put(args[0])

    def _left(self) -> int:
        return self.qsize()

    def _started(self) -> None:
        self._schedule()

    def qsize(self) -> int:
        """Items waiting in the queue."""
        return int(self._queue.qsize())


class BackgroundEventWorker(BackgroundWorker):
    """Runs its executor once per ``trigger()`` (thread-safe); triggers that
    arrive while it runs are folded into one more run, which ``stop()``
    still makes."""

    _left_message = "%d trigger not run yet; start() runs it"

    def __init__(self, *args: Any, e: bool = True, event: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending = False

    def trigger(self, force: bool = False) -> Awaitable[None]:
        """Ask for one run of the executor (thread-safe; awaitable too; *force*: as always)."""
        with self._lock:
            self._pending = True
        self._schedule()
        return DONE

    trigger_threadsafe = alias("trigger_threadsafe", "trigger")

    def _take_run(self) -> tuple[Any, ...] | None:
        if not self._pending:
            return None
        self._pending = False
        return self._args

    def _give_back(self, args: tuple[Any, ...]) -> None:
        self._pending = True

    def _left(self) -> int:
        return int(self._pending)

    def _started(self) -> None:
        self._schedule()


def background_worker(f: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
    """Make a worker of a function: ``@background_worker`` or
    ``@background_worker(interval=1)`` / ``(q=True)`` / ``(e=True)``.

    Picks the class from the arguments: ``interval``/``delay``/``delay_before``
    -> :class:`BackgroundIntervalWorker`; ``q``/``queue`` ->
    :class:`BackgroundQueueWorker`; ``e``/``event`` ->
    :class:`BackgroundEventWorker`; else :class:`BackgroundAsyncWorker` for
    an ``async def`` and :class:`BackgroundWorker` otherwise.  Returns the
    worker (call ``.start()``).
    """
    if f is None:
        return lambda func: background_worker(func, **kwargs)
    if not callable(f):
        raise TypeError(f"background_worker needs a callable, got {f!r}")
    if {"interval", "delay", "delay_before"} & kwargs.keys():
        cls: type[BackgroundWorker] = BackgroundIntervalWorker
    elif kwargs.get("q") or kwargs.get("queue"):
        cls = BackgroundQueueWorker
    elif kwargs.pop("e", False) or kwargs.pop("event", False):
        cls = BackgroundEventWorker
    else:
        cls = BackgroundAsyncWorker if inspect.iscoroutinefunction(f) else BackgroundWorker
    kwargs.setdefault("worker_name", kwargs.pop("name", None) or f.__name__)
    return cls(func=f, **kwargs)


class WorkerRegistry:
    """The workers started on one supervisor (extension ``"workers"``).

    The supervisor stops them first thing when it stops: a running worker
    would keep submitting while the supervisor drains.
    """

    def __init__(self) -> None:
        self._workers: weakref.WeakSet[BackgroundWorker] = weakref.WeakSet()

    def add(self, worker: BackgroundWorker) -> None:
        """Remember a started worker (weakly)."""
        self._workers.add(worker)

    def get_workers(self) -> list[BackgroundWorker]:
        """Workers started on this supervisor and still active."""
        return [w for w in list(self._workers) if w.is_active()]

    def stop_all(self) -> None:
        """Stop every worker without waiting for its run in progress."""
        for worker in list(self._workers):
            worker.stop(wait=False)


@hookimpl
def atasker_configure(supervisor: TaskSupervisor) -> None:
    """Add the ``"workers"`` extension."""
    supervisor.add_extension("workers", WorkerRegistry())


@hookimpl
def atasker_supervisor_stopping(supervisor: TaskSupervisor) -> None:
    """Stop the workers before the supervisor drains."""
    supervisor.extension("workers").stop_all()
