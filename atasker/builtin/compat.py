"""Built-in plugin ``atasker.builtin.compat``: the original atasker's names.

Code written for the original library (the 0.3.14 documentation this
project grew from, and the 0.7 line) keeps running::

    put_task(thread | target, ...) ─▶ submit(...)           (a Task handle)
    mark_task_completed(...)        ─▶ True (a task completes when its function returns)
    register_scheduler(s)           ─▶ s.loop() on the aloop "__supervisor__" (or s.worker_loop)
    register_sync_scheduler(s)      ─▶ remembered; s.stop() when the supervisor stops
    get_task(task_id)               ─▶ get_task_info(task_id), also for put_task's ids
    get_info().thread_tasks_count   ─▶ attributes added to the info dict (``add_info``)
    start(daemon=...)               ─▶ accepted and ignored

The supervisor's methods of those names delegate to the extension
``"compat"`` this plugin adds; blocking the plugin removes them (a call then
raises :class:`~atasker.MissingExtensionError` naming it).  Names kept only
for compatibility warn with :class:`DeprecationWarning` once per call site,
naming the replacement; ``docs/migrating.rst`` lists every difference.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
import warnings
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from atasker.core.task import TASK_NORMAL, TASK_STATUS_STARTED, Task
from atasker.errors import MissingExtensionError
from atasker.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

__all__ = ["DONE", "Compat", "alias", "deprecated", "set_debug"]

logger = logging.getLogger("atasker")

#: The original's task type numbers (``TT_COROUTINE = 0``, ``TT_THREAD = 1``, ``TT_MP = 2``).
_TT_NUMBERS: dict[Any, str] = {0: "coroutine", 1: "thread", 2: "mp"}
#: The aloop that runs the coroutines of ``register_scheduler`` (the name
#: the original reserved for its own event loop).
SCHEDULER_ALOOP = "__supervisor__"
#: Seconds ``stop(wait=True)`` gives a scheduler's ``loop()`` to end after its ``stop()``.
SCHEDULER_STOP_WAIT = 10.0


def deprecated(what: str, instead: str, stacklevel: int = 4) -> None:
    """Warn that *what* is kept only for code written for the original atasker.

    :param stacklevel: frames up to the user's call (default: the user called
        a supervisor method, which called the extension, which called this).
    """
    warnings.warn(
        f"{what} is kept for code written for the original atasker; use {instead} (see docs/migrating.rst)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def alias(old: str, new: str) -> Callable[..., Any]:
    """A method *old* that warns (``DeprecationWarning``) and calls method *new*."""

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        deprecated(f"{old}()", f"{new}()", stacklevel=3)
        return getattr(self, new)(*args, **kwargs)

    method.__name__ = method.__qualname__ = old
    method.__doc__ = f"Deprecated (the original's name): :meth:`{new}`."
    return method


class _Done:
    """Returned by methods that were coroutines in 0.7 (``await worker.put(x)``): awaiting it returns at once."""

    def __await__(self) -> Generator[None, None, None]:
        yield from ()

    def __repr__(self) -> str:
        return "DONE"


#: See :class:`_Done`.
DONE = _Done()


def set_debug(mode: bool = True) -> None:
    """Log the library's debug messages (logger ``"atasker"`` at ``DEBUG``), or stop.

    As in the original: configure logging (``logging.basicConfig``) to see
    them.  ``set_debug(False)`` gives the logger back its inherited level.
    """
    logging.getLogger("atasker").setLevel(logging.DEBUG if mode else logging.NOTSET)


def _run_thread(thread: threading.Thread) -> None:
    # The original started the Thread object itself: so does this, so that
    # its name, is_alive() and join() behave as the code that made it expects.
    thread.start()
    thread.join()


class Compat:
    """The original atasker's supervisor methods for one supervisor (extension ``"compat"``)."""

    def __init__(self, supervisor: TaskSupervisor) -> None:
        self.supervisor = supervisor
        self._lock = threading.Lock()
        #: put_task's ids (given, or made as the original made them) -> task, until it ends.
        self._ids: dict[Any, Task] = {}
        #: register_scheduler / register_sync_scheduler: scheduler -> its loop's future (None: sync).
        self._schedulers: dict[Any, Future[Any] | None] = {}

    # ------------------------------------------------------------ tasks

    def put_task(self, task: Any, *args: Any, **kwargs: Any) -> Task | None:
        """Queue a task given in either of the original's forms; see :meth:`TaskSupervisor.put_task`."""
        deprecated("put_task()", "supervisor.submit(func, args, kwargs, priority=..., delay=..., tt=...)")
        if isinstance(task, threading.Thread):
            return self._put_thread(task, *args, **kwargs)
        if isinstance(task, tuple):
            return self._put_tuple(task, *args, **kwargs)
        return self._put_target(task, *args, **kwargs)

    def _put_thread(
        self,
        thread: threading.Thread,
        priority: int = TASK_NORMAL,
        delay: float | None = None,
        tt: Any = 1,
        task_id: Any = None,
    ) -> Task:
        # 0.3.14: put_task(thread, priority, delay, tt, task_id); the thread runs in a slot of the thread pool.
        return self._submit(_run_thread, (thread,), {}, None, priority, delay, "thread", task_id, thread.name)

    def _put_tuple(
        self,
        task: tuple[Any, ...],
        priority: int = TASK_NORMAL,
        delay: float | None = None,
        tt: Any = 2,
        task_id: Any = None,
    ) -> Task:
        # 0.3.14: put_task((target, args, kwargs, callback), ..., tt=TT_MP); the target gets _task_id.
        if len(task) != 4:
            raise TypeError(f"put_task() takes a Thread, a callable or (target, args, kwargs, callback), got {task!r}")
        target, args, kw, callback = task
        kw = {**(kw or {}), "_task_id": task_id or str(uuid.uuid4())}
        return self._submit(target, args, kw, callback, priority, delay, tt, kw["_task_id"], None)

    def _put_target(
        self,
        target: Callable[..., Any] | None,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        callback: Callable[[Any], Any] | None = None,
        priority: int = TASK_NORMAL,
        delay: float | None = None,
        tt: Any = 1,
        task_id: Any = None,
        worker: Any = None,
        _send_task_id: bool = True,
    ) -> Task | None:
        # 0.7: put_task(target, args, kwargs, callback, priority, delay, tt, task_id, worker).
        if target is None:
            return None  # as 0.7 did
        task_id = task_id if task_id is not None else str(uuid.uuid4())
        kw = dict(kwargs or {})
        if _send_task_id:
            kw["_task_id"] = task_id
        return self._submit(target, args, kw, callback, priority, delay, tt, task_id, None)

    def _submit(
        self,
        func: Callable[..., Any],
        args: Any,
        kwargs: dict[str, Any],
        callback: Callable[[Any], Any] | None,
        priority: int,
        delay: float | None,
        tt: Any,
        task_id: Any,
        name: str | None,
    ) -> Task:
        fields: dict[str, Any] = {"priority": priority, "tt": _TT_NUMBERS.get(tt, tt)}
        if delay:
            fields["delay"] = delay
        if callback is not None:
            fields["callback"] = callback
        if name is not None:
            fields["name"] = name
        task = self.supervisor.submit(func, tuple(args or ()), kwargs, **fields)
        if task_id is not None:
            with self._lock:
                self._ids[task_id] = task
            task.add_done_callback(lambda _t: self._forget(task_id))
        return task

    def _forget(self, task_id: Any) -> None:
        with self._lock:
            self._ids.pop(task_id, None)

    def mark_task_completed(self, task: Any = None, task_id: Any = None, tt: Any = None) -> bool:
        """Accepted and ignored: a task completes when its function returns; ``True``."""
        deprecated("mark_task_completed()", "nothing: a task completes when its function returns")
        return True

    def get_task(self, task_id: Any) -> Task | None:
        """The task of *task_id* (an id of ``put_task`` too) while it is not ended, else ``None``."""
        deprecated("get_task()", "supervisor.get_task_info(task_id)")
        with self._lock:
            task = self._ids.get(task_id)
        return task if task is not None else self.supervisor.get_task_info(task_id)

    # ------------------------------------------------------------ schedulers

    def register_scheduler(self, scheduler: Any) -> bool:
        """Run ``scheduler.loop()`` (and its ``extra_loops``) until it ends or is unregistered."""
        deprecated("register_scheduler()", "a worker (atasker.BackgroundWorker and its subclasses)")
        loop = getattr(scheduler, "worker_loop", None)
        if not isinstance(loop, asyncio.AbstractEventLoop):
            sup = self.supervisor
            aloop = sup.get_aloop(SCHEDULER_ALOOP)
            if aloop is None:
                try:
                    aloop = sup.create_aloop(SCHEDULER_ALOOP, daemon=True)
                except ValueError:  # another thread made it meanwhile
                    aloop = sup.get_aloop(SCHEDULER_ALOOP)
            loop = aloop.get_loop()
        with self._lock:
            self._schedulers[scheduler] = asyncio.run_coroutine_threadsafe(self._run_scheduler(scheduler), loop)
        return True

    async def _run_scheduler(self, scheduler: Any) -> None:
        loop = asyncio.get_running_loop()
        extra = [loop.create_task(getattr(scheduler, name)()) for name in getattr(scheduler, "extra_loops", ())]
        try:
            await scheduler.loop()
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self.supervisor.report_internal_error(exc, f"scheduler {scheduler!r}")
        finally:
            for t in extra:
                t.cancel()

    def register_sync_scheduler(self, scheduler: Any) -> bool:
        """Remember *scheduler*: its ``stop()`` is called when the supervisor stops."""
        deprecated("register_sync_scheduler()", "a worker (atasker.BackgroundWorker and its subclasses)")
        with self._lock:
            self._schedulers[scheduler] = None
        return True

    def unregister_scheduler(self, scheduler: Any) -> bool:
        """Cancel the loop of *scheduler*; ``False`` if it was not registered."""
        deprecated("unregister_scheduler()", "worker.stop()")
        with self._lock:
            if scheduler not in self._schedulers:
                return False
            future = self._schedulers.pop(scheduler)
        if future is not None:
            future.cancel()
        return True

    def unregister_sync_scheduler(self, scheduler: Any) -> bool:
        """Forget *scheduler*; ``False`` if it was not registered."""
        deprecated("unregister_sync_scheduler()", "worker.stop()")
        with self._lock:
            return self._schedulers.pop(scheduler, False) is not False

    def stop_schedulers(self, wait: bool | float) -> None:
        """Call ``stop(wait=...)`` of every registered scheduler (the supervisor is stopping).

        Then give each ``loop()`` still running up to *wait* seconds
        (``True``: :data:`SCHEDULER_STOP_WAIT`) to end, and cancel it.
        """
        with self._lock:
            schedulers = list(self._schedulers.items())
            self._schedulers.clear()
        for scheduler, _ in schedulers:
            try:
                scheduler.stop(wait=bool(wait))
            except Exception as exc:
                self.supervisor.report_internal_error(exc, f"stop() of scheduler {scheduler!r}")
        timeout = 0.0 if wait is False else SCHEDULER_STOP_WAIT if wait is True else float(wait)
        for scheduler, future in schedulers:
            if future is None or future.done():
                continue
            try:
                future.result(timeout)
            except BaseException:  # timed out, cancelled, or it raised (already reported)
                if not future.done():
                    logger.warning(
                        "atasker: scheduler %r did not end its loop() in %s s: cancelled", scheduler, timeout
                    )
            future.cancel()

    def stop_schedulers_given(self) -> None:
        """``stop(stop_schedulers=...)`` was passed: warn (workers always stop with the supervisor)."""
        deprecated("stop(stop_schedulers=...)", "stop(wait, cancel_tasks=...): workers always stop with the supervisor")

    # ------------------------------------------------------------ get_info

    def add_info(self, info: Any) -> None:
        """Add the original's ``get_info()`` attributes to *info* (a :class:`SupervisorInfo`).

        Counts and sizes now, from the snapshot; lists of tasks, aloops and
        schedulers on first access.
        """
        sup = self.supervisor
        info.id = sup.name
        info.started = info["active"]
        pools = info.get("task_types", {})
        for tt in ("thread", "mp"):
            pool = pools.get(tt)
            if pool is None and tt == "mp":
                info.mp_tasks_count = 0
                info.add_lazy("mp_tasks", list)
                continue  # as the original: mp_* sizes only once the process pool exists
            for key in ("pool_size", "reserve_normal", "reserve_high"):
                setattr(info, f"{tt}_{key}", pool[key] if pool else self._default_size(tt, key))
            setattr(info, f"{tt}_tasks_count", pool["running"] if pool else 0)
            info.add_lazy(
                f"{tt}_tasks", lambda tt=tt: [t.id for t in sup.get_tasks(tt) if t.status == TASK_STATUS_STARTED]
            )
        info.add_lazy("tasks", lambda: {t.id: t for t in sup.get_tasks()})
        info.add_lazy("task_info", lambda: info.tasks)
        info.add_lazy("schedulers", self._schedulers_copy)
        info.add_lazy("aloops", lambda: self._optional(sup.get_aloops, {}))
        info.add_lazy("async_job_schedulers", self._async_job_schedulers)

    def _schedulers_copy(self) -> dict[Any, Any]:
        with self._lock:
            return dict(self._schedulers)

    def _async_job_schedulers(self) -> dict[str, Any]:
        jobs = self._optional(lambda: self.supervisor.extension("async_jobs"), None)
        return jobs.get_async_job_schedulers() if jobs is not None else {}

    def _default_size(self, tt: str, key: str) -> int:
        config = self.supervisor.pool_config(tt)
        if key in config:
            return config[key]
        value = getattr(self.supervisor.registry("task type").get(tt), key)
        return int(value() if callable(value) else value)

    @staticmethod
    def _optional(get: Callable[[], Any], default: Any) -> Any:
        try:
            return get()
        except (MissingExtensionError, LookupError):
            return default


@hookimpl
def atasker_configure(supervisor: TaskSupervisor) -> None:
    """Add the ``"compat"`` extension."""
    supervisor.add_extension("compat", Compat(supervisor))


@hookimpl
def atasker_supervisor_starting(supervisor: TaskSupervisor, options: Mapping[str, Any]) -> list[str]:
    """Accept (and ignore) the original's ``start(daemon=...)``."""
    return ["daemon"] if "daemon" in options else []


@hookimpl
def atasker_supervisor_stopping(supervisor: TaskSupervisor, wait: bool | float) -> None:
    """Stop the schedulers registered with ``register_scheduler`` / ``register_sync_scheduler``."""
    supervisor.extension("compat").stop_schedulers(wait)
