"""The task supervisor: lifecycle and dispatch, nothing executor-specific.

::

    submit(f) ─▶ Task ─▶ store.task_queued ─▶ hook task_queued
                   │
                   │ delay? ──▶ timer thread ──(due)──┐
                   ▼                                  ▼
             policy.push(task) ◀──────────────────────┘
                   │
    (submit, task_done, set_pool wake it; nothing polls)
                   ▼
             _admit(): policy.pop_next(pool) while the pool has room
                   │
                   ▼
             store.task_started ─▶ hook task_started ─▶ executor.start(task)
                                                              │
             task_done(task, result | exception) ◀────────────┘
                   │
                   ▼
             handle resolved ─▶ callback ─▶ store.task_finished
             ─▶ hook task_finished ─▶ free the slot, _admit() the next

One lock (``_lock``) guards pools and queues; it is never held while user
code, an executor, a store or a hook runs.  Every public method may be called
from any thread, from inside tasks and from coroutines.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from atasker.builtin.coroutine.aloop import AloopAPI
from atasker.builtin.mp.api import ProcessAPI
from atasker.core.task import (
    TASK_NORMAL,
    TASK_STATUS_CANCELED,
    TASK_STATUS_QUEUED,
    TASK_STATUS_STARTED,
    Task,
    pool_thread,
    validate_priority,
)
from atasker.errors import AtaskerError, SupervisorStoppedError, UnknownTaskTypeError
from atasker.extras.workers import WorkerAPI
from atasker.plugin.manager import PluginManager, Registry, env_providers, make_plugin_manager
from atasker.plugin.protocols import Executor, Pool, QueuePolicy, StatusStore

if TYPE_CHECKING:
    from atasker.tools.liveview import LiveView

__all__ = ["DEFAULT_TIMEOUT_CRITICAL", "DEFAULT_TIMEOUT_WARNING", "TaskSupervisor"]

logger = logging.getLogger("atasker")

DEFAULT_TIMEOUT_WARNING = 5.0
DEFAULT_TIMEOUT_CRITICAL = 10.0

_RUNNING = "RUNNING"  # concurrent.futures._base.RUNNING; set without the condition, see _admit
_RUNNING = "RUNNING"  # concurrent.futures._base.RUNNING


class _Slot:
    """One task type in one supervisor: its pool, queue policy and executor."""

    __slots__ = ("executor", "fast_path", "policy", "pool", "running")

    def __init__(self, pool: Pool, policy: QueuePolicy, executor: Executor) -> None:
        self.pool = pool
        self.policy = policy
        self.executor = executor
        self.running: set[Task] = set()
        # A policy may declare that, with nothing waiting, it admits exactly
        # what Pool.may_start allows; the supervisor then skips push/pop.
        self.fast_path = bool(getattr(policy, "fast_path", False))


class _Timer:
    """One thread that runs callbacks at given times (delays, watchdog).

    Sleeps on a condition until the earliest deadline; scheduling an earlier
    one wakes it.  Never polls.
    """

    def __init__(self, name: str) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), fn, args))
            self._cond.notify()

    def pending(self) -> list[tuple[Callable[..., None], tuple[Any, ...]]]:
        with self._cond:
            return [(fn, args) for _, _, fn, args in self._heap]

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap:
                        delay = self._heap[0][0] - time.monotonic()
                        if delay <= 0:
                            break
                        self._cond.wait(delay)
                    else:
                        self._cond.wait()
                if self._stopped:
                    return
                _, _, fn, args = heapq.heappop(self._heap)
            try:
                fn(*args)
            except Exception:  # a watchdog callback must not kill the timer
                logger.exception("atasker timer callback %r failed", fn)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()


class TaskSupervisor(AloopAPI, ProcessAPI, WorkerAPI):
    """Runs tasks of every task type under one set of priorities.

    The supervisor starts itself on first use; ``start()`` is needed only to
    pass options.  Every public method is thread-safe.

    :param pool_size: thread pool size (``0`` is unlimited); default
        ``min(32, cpu_count + 4)``.
    :param reserve_normal: extra thread slots for NORMAL and above (5).
    :param reserve_high: extra thread slots for HIGH and above (5).
    :param plugins: plugin objects or modules to register (after entry points).
    :param block_plugins: plugin names never to register, built-ins included.
    :param autoload: load entry-point plugins (default: unless
        ``ATASKER_DISABLE_PLUGIN_AUTOLOAD=1``).
    :param providers: ``{name: plugin_name}`` -- which plugin provides a task
        type that two plugins register (also ``ATASKER_PROVIDERS``).
    :param queue_policy: queue policy name (default ``ATASKER_QUEUE_POLICY``
        or ``"priority"``).
    :param status_store: status store URL (default ``ATASKER_STATUS_STORE`` or
        ``"memory://"``).
    :param timeout_warning: seconds a task may wait for a slot before a
        warning is logged and ``timeout_warning_func(task)`` is called.
    :param timeout_critical: the same, logged as critical, with
        ``timeout_critical_func(task)``.
    """

    def __init__(
        self,
        pool_size: int | None = None,
        reserve_normal: int | None = None,
        reserve_high: int | None = None,
        *,
        plugins: Iterable[Any] = (),
        block_plugins: Iterable[str] = (),
        autoload: bool | None = None,
        providers: dict[str, str] | None = None,
        queue_policy: str | None = None,
        status_store: str | None = None,
        timeout_warning: float = DEFAULT_TIMEOUT_WARNING,
        timeout_critical: float = DEFAULT_TIMEOUT_CRITICAL,
        timeout_warning_func: Callable[[Task], Any] | None = None,
        timeout_critical_func: Callable[[Task], Any] | None = None,
        name: str = "supervisor",
    ) -> None:
        self.name = name
        self.timeout_warning = timeout_warning
        self.timeout_critical = timeout_critical
        self.timeout_warning_func = timeout_warning_func
        self.timeout_critical_func = timeout_critical_func
        self._plugins = list(plugins)
        self._block_plugins = list(block_plugins)
        self._autoload = autoload
        self._providers = dict(providers or {})
        self._queue_policy_name = queue_policy
        self._status_store_url = status_store
        self._pool_config: dict[str, dict[str, int]] = {}
        if pool_size is not None or reserve_normal is not None or reserve_high is not None:
            self._pool_config["thread"] = self._check_sizes(pool_size, reserve_normal, reserve_high)

        self._lock = threading.Lock()
        # Serialises start/stop and lazy executor creation (may be slow).
        self._config_lock = threading.RLock()
        self._all_done = threading.Condition(self._lock)
        self._stopped_event = threading.Event()
        self._pm: PluginManager | None = None
        self._registries: dict[str, Registry[Any]] | None = None
        self._slots: dict[str, _Slot] = {}
        self._store: StatusStore | None = None
        self._timer: _Timer | None = None
        self._active = False
        self._stopping = False
        # While stop(wait=...) drains, tasks may still submit follow-up work.
        self._draining = False
        self._ever_started = False
        # Accepted minus ended tasks.  Ends are counted by an itertools.count
        # (next() is atomic under the GIL) so that finishing a task takes the
        # supervisor lock once, not twice: a busy pool contends on it.
        self._accepted = 0
        self._ended = itertools.count()
        self._reads = 0
        self._watch: collections.deque[Task] = collections.deque()
        self._watch_critical: collections.deque[Task] = collections.deque()
        self._watch_scheduled = False
        self._watch_critical_scheduled = False
        self._on_queued: Any = None
        self._on_started: Any = None
        self._on_finished: Any = None

    # ------------------------------------------------------------------ setup

    @property
    def plugin_manager(self) -> PluginManager:
        """This supervisor's plugin manager (built on first access)."""
        with self._config_lock:
            if self._pm is None:
                self._pm = make_plugin_manager(self._plugins, self._block_plugins, self._autoload)
                self._pm.on_change(self._plugins_changed)
                self._plugins_changed()
            return self._pm

    def register_plugin(self, plugin: Any, name: str | None = None) -> str | None:
        """Register a plugin object or module on this supervisor.

        May be called while running: new task types become usable, observer
        hooks take effect for the next event.  Returns the plugin's name.
        """
        return self.plugin_manager.register(plugin, name=name)

    def unregister_plugin(self, plugin: Any = None, name: str | None = None) -> Any:
        """Unregister a plugin (by object or name).  Executors already created stay."""
        return self.plugin_manager.unregister(plugin, name=name)

    def _plugins_changed(self) -> None:
        pm = self._pm
        assert pm is not None
        self._registries = None

        def caller(hook_name: str) -> Any:
            return getattr(pm.hook, hook_name) if pm.has_impls(hook_name) else None

        self._on_queued = caller("atasker_task_queued")
        self._on_started = caller("atasker_task_started")
        self._on_finished = caller("atasker_task_finished")

    def _registry(self, kind: str) -> Registry[Any]:
        with self._config_lock:
            pm = self.plugin_manager
            if self._registries is None:
                providers = {**env_providers(), **self._providers}
                self._registries = {
                    "task type": Registry(
                        pm,
                        "atasker_register_task_types",
                        "task type",
                        lambda r: r.name,
                        providers,
                        UnknownTaskTypeError,
                    ),
                    "queue policy": Registry(
                        pm, "atasker_register_queue_policies", "queue policy", lambda r: r.name, providers
                    ),
                    "status store": Registry(
                        pm, "atasker_register_status_stores", "status store", lambda r: r.scheme, providers
                    ),
                }
            return self._registries[kind]

    def task_types(self) -> list[str]:
        """Names of the task types the loaded plugins provide."""
        return self._registry("task type").names()

    def start(
        self,
        *,
        queue_policy: str | None = None,
        status_store: str | None = None,
        trace: str | os.PathLike[str] | None = None,
    ) -> None:
        """Start the supervisor (idempotent; it also starts on first use).

        Loads plugins, selects the queue policy and status store, starts the
        timer thread.  Executors start lazily, on first use of their task type.

        :param queue_policy: overrides the constructor's ``queue_policy``.
        :param status_store: overrides the constructor's ``status_store``.
        :param trace: write a task timeline (Chrome trace-event JSON, see
            :mod:`atasker.builtin.trace`) to this file until the supervisor
            stops; ``{name}`` and ``{pid}`` expand.  Default:
            ``ATASKER_TRACE``; off (no hook registered) when neither is set.
            Given to an active supervisor, it turns tracing on.
        :raises UnknownTaskTypeError, PluginConflictError: for a policy or store
            name no plugin provides (or two do).
        :raises OSError: the trace file cannot be opened.
        """
        with self._config_lock:
            if self._active:
                if trace is not None:
                    from atasker.builtin import trace as _trace

                    _trace.attach(self, trace)
                return
            if queue_policy is not None:
                self._queue_policy_name = queue_policy
            if status_store is not None:
                self._status_store_url = status_store
            policy_name = self._queue_policy_name or os.environ.get("ATASKER_QUEUE_POLICY") or "priority"
            store_url = self._status_store_url or os.environ.get("ATASKER_STATUS_STORE") or "memory://"
            # Resolve both before changing any state, so a bad name leaves
            # the supervisor stopped and usable.
            self._policy_type = self._registry("queue policy").get(policy_name)
            scheme = store_url.split(":", 1)[0]
            store = self._registry("status store").get(scheme).factory(store_url, self)
            # -- tracing (atasker.builtin.trace): nothing imported or registered unless asked for
            recorder = None
            if trace is not None or os.environ.get("ATASKER_TRACE"):
                from atasker.builtin import trace as _trace

                try:
                    recorder = _trace.open_recorder(self, trace)
                except BaseException:
                    store.close()
                    raise
            # -- end tracing
            self._store = store
            self._slots = {}
            self._timer = _Timer(f"atasker_{self.name}_timer")
            with self._lock:
                self._active = True
                self._stopping = False
                self._accepted = self._reads = 0
                self._ended = itertools.count()
            self._stopped_event.clear()
            if not self._ever_started:
                self._ever_started = True
                _register_atexit(self)
            if recorder is not None:  # it closes and unregisters itself on stop
                self.register_plugin(recorder, name=_trace.PLUGIN_NAME)
        self._call_observer("atasker_supervisor_started", supervisor=self)

    def _autostart(self) -> None:
        with self._config_lock:
            if self._active:
                return
            if self._ever_started:
                raise SupervisorStoppedError(f"task supervisor {self.name!r} is stopped; call start() to use it again")
            self.start()

    def _slot(self, tt: str) -> _Slot:
        slot = self._slots.get(tt)
        if slot is not None:
            return slot
        with self._config_lock:
            slot = self._slots.get(tt)
            if slot is not None:
                return slot
            task_type = self._registry("task type").get(tt)
            config = self._pool_config.get(tt, {})
            default_size = task_type.pool_size() if callable(task_type.pool_size) else task_type.pool_size
            pool = Pool(
                tt,
                pool_size=config.get("pool_size", default_size),
                reserve_normal=config.get("reserve_normal", task_type.reserve_normal),
                reserve_high=config.get("reserve_high", task_type.reserve_high),
            )
            policy = self._policy_type.factory(pool)
            executor = task_type.executor_factory(self, pool)
            pool.configure(capacity=executor.capacity())
            slot = _Slot(pool, policy, executor)
            self._slots[tt] = slot
            return slot

    def executor(self, tt: str) -> Executor:
        """The executor of task type *tt* (created on first use)."""
        self._autostart()
        return self._slot(tt).executor

    # ------------------------------------------------------------- submission

    def submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        tt: str = "thread",
        priority: int = TASK_NORMAL,
        name: str | None = None,
        delay: float | None = None,
        callback: Callable[[Any], Any] | None = None,
        timeout: float | None = None,
        options: dict[str, Any] | None = None,
    ) -> Task:
        """Queue ``func(*args, **kwargs)`` as a task; return its handle at once.

        :param tt: task type name (``"thread"``, ``"mp"``, a plugin's).
        :param priority: ``TASK_LOW`` / ``NORMAL`` / ``HIGH`` / ``CRITICAL`` or
            any int >= 0 (lower is more urgent).
        :param name: shown in task info and logs (default: the function's name).
        :param delay: seconds to wait before joining the queue; holds no slot.
        :param callback: ``callback(result)``, called in this process after
            the task succeeded, before its handle resolves (errors are on the
            handle, not the callback; a callback that raises is logged).
        :param timeout: per-task run timeout, for task types that support it.
        :param options: task-type specific options (``{"loop": ...}`` for
            coroutine tasks), read by the executor from ``task.options``.
        :raises TypeError: *func* is not callable.
        :raises InvalidPriorityError: bad priority.
        :raises UnknownTaskTypeError: no plugin provides *tt*.
        :raises SupervisorStoppedError: the supervisor is stopping or stopped.
        """
        if not callable(func):
            raise TypeError(f"task function must be callable, got {type(func).__name__}: {func!r}")
        if type(priority) is not int or priority < 0:
            priority = validate_priority(priority)
        if delay is not None and not (isinstance(delay, (int, float)) and delay >= 0):
            raise ValueError(f"delay must be a number of seconds >= 0, got {delay!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        if not self._active:
            self._autostart()
        slot = self._slots.get(tt) or self._slot(tt)
        if name is None:
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
        task = Task(
            func,
            args,
            kwargs if kwargs is not None else {},
            name=name,
            tt=tt,
            priority=priority,
            supervisor=self,
            callback=callback,
            delay=delay or None,
            timeout=timeout,
            options=options,
        )
        slot.executor.validate(task)
        task.time_queued = time.time()
        with self._lock:
            if not self._active or (self._stopping and not self._draining):
                raise SupervisorStoppedError(
                    f"task supervisor {self.name!r} is stopping or stopped; task {name!r} rejected"
                )
            self._accepted += 1
        store = self._store
        assert store is not None
        try:
            store.task_queued(task)
        except BaseException:
            # The task was never queued: un-count it, so stop() cannot wait
            # for it, and let the caller see the store's error.
            with self._lock:
                self._accepted -= 1
                if self._stopping:
                    self._all_done.notify_all()
            raise
        if self._on_queued is not None:
            self._observe(self._on_queued, task)
        if task.delay:
            assert self._timer is not None
            self._timer.call_at(time.monotonic() + task.delay, self._enqueue, slot, task)
        else:
            self._enqueue(slot, task)
        return task

    def _enqueue(self, slot: _Slot, task: Task) -> None:
        with self._lock:
            if task.status != TASK_STATUS_QUEUED:
                return  # cancelled while delayed
            policy = slot.policy
            if slot.fast_path and not len(policy) and slot.pool.may_start(task.band):
                # Nothing waits and there is room: any queue order would start
                # this task now, so skip the push/pop round trip.
                policy = None
            else:
                policy.push(task)
                task.in_queue = True
            started = self._admit(slot, task if policy is None else None)
            waiting = task.status == TASK_STATUS_QUEUED
            if waiting:
                self._watch.append(task)
                schedule_watch = not self._watch_scheduled
                self._watch_scheduled = True
            else:
                schedule_watch = False
        if schedule_watch and self._timer is not None:
            self._timer.call_at(time.monotonic() + self.timeout_warning, self._check_watch, False)
        if started:
            self._launch(slot, started)

    def _admit(self, slot: _Slot, first: Task | None = None) -> list[Task]:
        """Pop every task the policy lets start now (*first*: one already
        admitted by the fast path).  Call with ``_lock`` held."""
        started: list[Task] = []
        pool, policy = slot.pool, slot.policy
        while True:
            if first is not None:
                task, first = first, None
            else:
                task = policy.pop_next(pool)
                if task is None:
                    # Started tasks leave the watchdog's queue-ordered deque
                    # from its front, so it never holds finished tasks long.
                    watch = self._watch
                    while watch and watch[0].status != TASK_STATUS_QUEUED:
                        watch.popleft()
                    return started
                task.in_queue = False
            # The future goes RUNNING without taking its condition: only
            # _cancel_queued could race, and it decides under this same lock.
            task._state = _RUNNING
            task.status = TASK_STATUS_STARTED
            task.time_started = time.time()
            pool.running += 1
            rbp = pool.running_by_priority
            rbp[task.priority] = rbp.get(task.priority, 0) + 1
            slot.running.add(task)
            started.append(task)

    def _launch(self, slot: _Slot, tasks: list[Task]) -> None:
        executor = slot.executor
        for task in tasks:
            self._announce_started(task)
            try:
                executor.start(task)
            except BaseException as exc:
                self.task_done(task, exception=exc)

    def _announce_started(self, task: Task) -> None:
        store = self._store
        if store is not None:
            store.task_started(task)
        if self._on_started is not None:
            self._observe(self._on_started, task)

    # ------------------------------------------------------------- completion

    def task_done(
        self,
        task: Task,
        result: Any = None,
        exception: BaseException | None = None,
        cancelled: bool = False,
        take_next: bool = False,
    ) -> Task | None:
        """Report that a started task ended.  For executors; call exactly once.

        Drops the live record, frees the slot and starts what may start now,
        then resolves the handle (result, exception, or cancelled), calls the
        callback and runs ``atasker_task_finished``.  So once a handle is
        resolved, ``get_task_info`` already returns ``None`` and the pool
        counts no longer include the task.  Any thread may call it.

        :param take_next: the calling worker can run another task at once:
            instead of handing the next admitted task to
            :meth:`Executor.start`, return it for the caller to run (it is
            already started: counted, stored and announced).  Saves a thread
            hand-off per task in a busy pool.
        :returns: with *take_next*, a task to run now or ``None``.
        """
        task.time_finished = time.time()
        if cancelled:
            task.outcome = "cancelled"
        elif exception is not None:
            task.outcome = "failed"
            task.error = exception
        else:
            task.outcome = "completed"
        next_task = self._release(task, was_running=True, take_next=take_next)
        if next_task is not None:
            # The callback and observers below run while this thread holds
            # the next task too: a stop() they call must not wait for it.
            pool_thread.held += 1
            try:
                self._resolve(task, result, exception, cancelled)
            finally:
                pool_thread.held -= 1
        else:
            self._resolve(task, result, exception, cancelled)
        return next_task

    def _resolve(self, task: Task, result: Any, exception: BaseException | None, cancelled: bool) -> None:
        """Resolve the handle, run the callback and the finished observers."""
        if cancelled:
            _force_cancel(task)
        elif exception is not None:
            # Logged before the handle resolves, so a waiter finds the record.
            logger.error(
                "task %s (%s) failed: %s: %s",
                task.id,
                task.name,
                type(exception).__name__,
                exception,
                exc_info=exception if not isinstance(exception, AtaskerError) else None,
            )
            task.set_exception(exception)
        else:
            # The callback runs before the handle resolves: whoever waits on
            # the handle can rely on the callback having run.
            if task.callback is not None:
                try:
                    task.callback(result)
                except BaseException as exc:  # even SystemExit: the handle must still resolve
                    self._internal_error(exc, f"callback of task {task.id} ({task.name})")
            task.set_result(result)
        self._finished(task)

    def _release(self, task: Task, was_running: bool, take_next: bool = False) -> Task | None:
        """Drop the record, free the slot, start what may start now."""
        store = self._store
        if store is not None:
            try:
                store.task_finished(task)
            except Exception as exc:
                self._internal_error(exc, "status store task_finished")
        if not was_running:
            return None
        slot = self._slots[task.tt]
        with self._lock:
            pool = slot.pool
            pool.running -= 1
            pool.running_by_priority[task.priority] -= 1
            slot.running.discard(task)
            started = self._admit(slot) if len(slot.policy) else None
        if not started:
            return None
        if take_next:
            next_task = started.pop(0)
            self._announce_started(next_task)
            if started:
                self._launch(slot, started)
            return next_task
        self._launch(slot, started)
        return None

    def _unfinished(self) -> int:
        """Tasks accepted and not yet ended.  Call with ``_lock`` held.

        Reading an ``itertools.count`` means drawing from it, so each read
        is counted and subtracted.
        """
        self._reads += 1
        return self._accepted - (next(self._ended) - self._reads + 1)

    def _finished(self, task: Task) -> None:
        """Observers, then the count ``stop(wait=True)`` waits on."""
        if self._on_finished is not None:
            self._observe(self._on_finished, task)
        next(self._ended)
        if self._stopping:
            with self._lock:
                self._all_done.notify_all()

    def _cancel_queued(self, task: Task) -> bool:
        """Cancel a queued or delayed task (Task.cancel); ``False`` if it started."""
        with self._lock:
            if task.status != TASK_STATUS_QUEUED:
                return False
            task.status = TASK_STATUS_CANCELED
            if task.in_queue:
                task.in_queue = False
                slot = self._slots.get(task.tt)
                if slot is not None:
                    slot.policy.remove(task)
        # Status -1 under the lock means no dispatcher will start it: the
        # future is still PENDING, so Future.cancel succeeds and notifies.
        Future.cancel(task)
        # CANCELLED -> CANCELLED_AND_NOTIFIED: tells concurrent.futures.wait()
        # and as_completed() waiters, as an executor does for cancelled work.
        task.set_running_or_notify_cancel()
        task.time_finished = time.time()
        task.outcome = "cancelled"
        self._release(task, was_running=False)
        self._finished(task)
        return True

    def _cancel_running(self, task: Task) -> bool:
        slot = self._slots.get(task.tt)
        if slot is None:
            return False
        return bool(slot.executor.cancel(task))

    # --------------------------------------------------------------- watchdog

    def _check_watch(self, critical: bool) -> None:
        """Timer callback: warn about tasks still waiting for a slot."""
        limit = self.timeout_critical if critical else self.timeout_warning
        watch = self._watch_critical if critical else self._watch
        now = time.time()
        overdue: list[Task] = []
        next_at = None
        with self._lock:
            while watch:
                task = watch[0]
                if task.status != TASK_STATUS_QUEUED:
                    watch.popleft()
                    continue
                due = (task.time_queued or now) + limit
                if due > now:
                    next_at = due
                    break
                watch.popleft()
                overdue.append(task)
                if not critical:
                    self._watch_critical.append(task)
            if critical:
                self._watch_critical_scheduled = next_at is not None
            else:
                self._watch_scheduled = next_at is not None
            schedule_critical = bool(overdue) and not critical and not self._watch_critical_scheduled
            if schedule_critical:
                self._watch_critical_scheduled = True
        timer = self._timer
        if timer is None:
            return
        if next_at is not None:
            timer.call_at(time.monotonic() + (next_at - now), self._check_watch, critical)
        if schedule_critical:
            first = overdue[0].time_queued or now
            timer.call_at(time.monotonic() + max(0.0, first + self.timeout_critical - now), self._check_watch, True)
        func = self.timeout_critical_func if critical else self.timeout_warning_func
        level = logging.CRITICAL if critical else logging.WARNING
        for task in overdue:
            logger.log(
                level,
                "task %s (%s, %s, priority %s) still waiting for a slot after %.3f s; "
                "increase the pool size or reserves",
                task.id,
                task.name,
                task.tt,
                task.priority,
                now - (task.time_queued or now),
            )
            if func is not None:
                try:
                    func(task)
                except Exception as exc:
                    self._internal_error(exc, "timeout function")

    # -------------------------------------------------------------- observers

    def _observe(self, hook: Any, task: Task) -> None:
        try:
            hook(task=task)
        except Exception as exc:
            self._internal_error(exc, f"hook {hook.name}")

    def _call_observer(self, hook_name: str, **kwargs: Any) -> None:
        pm = self._pm
        if pm is None or not pm.has_impls(hook_name):
            return
        try:
            getattr(pm.hook, hook_name)(**kwargs)
        except Exception as exc:
            self._internal_error(exc, f"hook {hook_name}")

    def _internal_error(self, exc: BaseException, where: str) -> None:
        logger.error("atasker: %s raised %s: %s", where, type(exc).__name__, exc, exc_info=exc)
        pm = self._pm
        if pm is not None and pm.has_impls("atasker_internalerror"):
            try:
                pm.hook.atasker_internalerror(exc=exc, where=where)
            except Exception:
                logger.exception("atasker_internalerror hook raised")

    # ------------------------------------------------------------ pool config

    @staticmethod
    def _check_sizes(pool_size: int | None, reserve_normal: int | None, reserve_high: int | None) -> dict[str, int]:
        sizes = {}
        for key, value in (
            ("pool_size", pool_size),
            ("reserve_normal", reserve_normal),
            ("reserve_high", reserve_high),
        ):
            if value is None:
                continue
            if type(value) is not int or value < 0:
                raise ValueError(f"{key} must be an int >= 0, got {value!r}")
            sizes[key] = value
        return sizes

    def set_pool(
        self,
        tt: str,
        pool_size: int | None = None,
        reserve_normal: int | None = None,
        reserve_high: int | None = None,
    ) -> None:
        """Change a task type's pool size and reserves, also while running.

        Arguments left ``None`` keep their value.  A change that makes room
        starts waiting tasks at once.  ``pool_size=0`` is unlimited.
        """
        sizes = self._check_sizes(pool_size, reserve_normal, reserve_high)
        with self._config_lock:
            self._pool_config.setdefault(tt, {}).update(sizes)
            slot = self._slots.get(tt) if self._active else None
        if slot is None:
            return
        with self._lock:
            slot.pool.configure(**sizes)
            started = self._admit(slot)
        slot.executor.resize(slot.pool)
        with self._lock:
            slot.pool.configure(capacity=slot.executor.capacity())
            started += self._admit(slot)
        if started:
            self._launch(slot, started)

    def pool_config(self, tt: str) -> dict[str, int]:
        """The pool sizes set for task type *tt*, and only those.

        What :meth:`set_pool` (or, for ``"thread"``, the constructor) set:
        a sizes key the user never set is absent, so an executor can tell a
        user's choice from its task type's default (``atasker-dask`` follows
        the cluster with the sizes that are absent).  A copy; it survives
        ``stop()`` and ``start()`` like the sizes themselves.
        """
        with self._config_lock:
            return dict(self._pool_config.get(tt, {}))

    def set_thread_pool(
        self,
        pool_size: int | None = None,
        reserve_normal: int | None = None,
        reserve_high: int | None = None,
    ) -> None:
        """:meth:`set_pool` for thread tasks (the original atasker's API)."""
        self.set_pool("thread", pool_size, reserve_normal, reserve_high)

    # ------------------------------------------------------------ information

    def get_task_info(self, task: Task | int) -> Task | None:
        """The record of a queued or running task; ``None`` once it completed.

        :param task: a task handle or a task id.
        """
        task_id = task.id if isinstance(task, Task) else task
        store = self._store
        return store.get(task_id) if store is not None else None

    def get_info(self) -> dict[str, Any]:
        """Pool sizes, running and waiting counts per task type and priority."""
        with self._lock:
            info: dict[str, Any] = {
                "name": self.name,
                "active": self._active and not self._stopping,
                "unfinished": self._unfinished(),
                "task_types": {},
            }
            for tt, slot in self._slots.items():
                entry = slot.pool.info()
                entry["waiting"] = slot.policy.waiting()
                entry["waiting_total"] = len(slot.policy)
                info["task_types"][tt] = entry
        timer = self._timer
        info["delayed"] = (
            sum(1 for fn, args in timer.pending() if fn == self._enqueue and args[1].status == 0)
            if timer is not None
            else 0
        )
        return info

    @property
    def status_store(self) -> StatusStore | None:
        """The status store in use (``None`` before the first start)."""
        return self._store

    def get_tasks(self) -> list[Task]:
        """Every task not yet ended: running, queued and delayed (a snapshot)."""
        with self._lock:
            tasks = [t for slot in self._slots.values() for t in list(slot.running)]
            tasks += [t for slot in self._slots.values() for t in slot.policy.tasks()]
        timer = self._timer
        if timer is not None:
            tasks += [args[1] for fn, args in timer.pending() if fn == self._enqueue and args[1].status == 0]
        return tasks

    def is_active(self) -> bool:
        """Whether the supervisor is started and not stopping."""
        return self._active and not self._stopping

    # -------------------------------------------------------------- lifecycle

    def live(self, total: int | None = None, **options: Any) -> LiveView:
        """A live terminal view of this supervisor, as a context manager.

        ``with supervisor.live(total=100): ...`` shows per task type the
        tasks running, pool and reserves in use, waiting per priority and
        tasks per second (a progress bar with *total*).  See
        :class:`atasker.tools.liveview.LiveView` for the options.
        """
        from atasker.tools.liveview import LiveView

        return LiveView(self, total=total, **options)

    def block(self) -> None:
        """Block the calling thread until the supervisor is stopped."""
        self._stopped_event.wait()

    def stop(self, wait: bool | float = True, cancel_tasks: bool = False) -> bool:
        """Stop the supervisor; then submissions raise :class:`SupervisorStoppedError`.

        While a ``wait`` stop drains (without ``cancel_tasks``), running tasks
        may still submit follow-up tasks, and stop waits for those too.

        :param wait: ``True`` -- wait for every queued and running task;
            a number -- wait at most that many seconds, then cancel what is
            still queued and log what is still running; ``False`` -- cancel
            queued tasks and return without waiting for running ones (their
            handles still resolve).
        :param cancel_tasks: cancel queued and delayed tasks first (status
            ``-1``, handles cancelled); running tasks finish.
        :returns: ``True`` if every task ended before it returned.

        Called from one of this supervisor's own thread tasks, stop waits for
        every *other* task (the calling one cannot end before stop returns)
        and returns ``True`` once they have ended; the calling task then ends
        as usual.  From a thread that reports other tasks' outcomes (the
        callbacks of ``atasker-dask`` tasks run on one) only ``wait=False``
        works: waiting there raises ``RuntimeError``.  Do not call it with
        ``wait`` from a coroutine task: the event loop would be blocked.
        """
        # The calling task, if it is one of ours, is not waited for.
        own = 1 + pool_thread.held if pool_thread.supervisor is self else 0
        waits = wait is not False and wait != 0
        if own and pool_thread.reports_others and waits and self._active and not self._stopping:
            raise RuntimeError(
                f"stop(wait={wait!r}) called on {threading.current_thread().name}, which reports the "
                f"outcomes of supervisor {self.name!r}'s other tasks: it would wait for itself; call "
                "stop(wait=False) there, or stop from another thread"
            )
        if self._active and not self._stopping:
            self._before_stop(wait, cancel_tasks)
        with self._lock:
            if not self._active or self._stopping:
                return self._unfinished() == 0
            self._stopping = True
            self._draining = wait is not False and not cancel_tasks
        if cancel_tasks or wait is False:
            self._cancel_all_queued()
        all_done = True
        # Wait without _config_lock: tasks may still call set_pool() etc.
        if wait is not False:
            deadline = None if wait is True else time.monotonic() + float(wait)
            with self._lock:
                while self._unfinished() > own:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._all_done.wait(remaining)
                all_done = self._unfinished() <= own
                self._draining = False
            if not all_done:
                self._cancel_all_queued()
                running = [t for s in list(self._slots.values()) for t in list(s.running)]
                logger.warning(
                    "task supervisor %r stopped after %s s with %d task(s) still running: %s",
                    self.name,
                    wait,
                    len(running),
                    ", ".join(f"{t.id} ({t.name})" for t in running[:20]),
                )
        else:
            with self._lock:
                all_done = self._unfinished() <= own
        with self._config_lock:
            for slot in self._slots.values():
                try:
                    slot.executor.shutdown(wait=all_done)
                except Exception as exc:
                    self._internal_error(exc, f"shutdown of {slot.pool.tt} executor")
            self._on_stop(wait, cancel_tasks, all_done)
            if self._timer is not None:
                self._timer.stop()
                self._timer = None
            with self._lock:
                self._active = False
                self._stopping = False
            self._watch.clear()
            self._watch_critical.clear()
            self._watch_scheduled = self._watch_critical_scheduled = False
            self._stopped_event.set()
        self._call_observer("atasker_supervisor_stopped", supervisor=self)
        # A store is closed once it has every final record (the calling
        # task's comes after this; the at-exit fallback closes it then).
        if self._store is not None and all_done and not own:
            self._store.close()
        return all_done

    def _cancel_all_queued(self) -> None:
        with self._lock:
            queued = [t for slot in self._slots.values() for t in slot.policy.tasks()]
        timer = self._timer
        if timer is not None:
            queued += [args[1] for fn, args in timer.pending() if fn == self._enqueue]
        for task in queued:
            task.cancel()

    def __repr__(self) -> str:
        state = "active" if self.is_active() else "stopped"
        return f"<TaskSupervisor {self.name!r} {state}>"


def _force_cancel(task: Future) -> None:
    """Mark a *running* future cancelled (Future.cancel refuses once running).

    Used when an executor really stopped a running task (a killed process,
    a cancelled coroutine), so that ``cancelled()`` tells the truth.
    """
    from concurrent.futures._base import CANCELLED_AND_NOTIFIED

    with task._condition:  # type: ignore[attr-defined]
        if task.done():
            return
        task._state = CANCELLED_AND_NOTIFIED  # type: ignore[attr-defined]
        for waiter in task._waiters:  # type: ignore[attr-defined]
            waiter.add_cancelled(task)
        task._condition.notify_all()  # type: ignore[attr-defined]
    task._invoke_callbacks()  # type: ignore[attr-defined]


_supervisors: weakref.WeakSet[TaskSupervisor] = weakref.WeakSet()
_atexit_registered = False


def _register_atexit(supervisor: TaskSupervisor) -> None:
    """Stop started supervisors before the interpreter joins its threads.

    ``threading._register_atexit`` (what ``concurrent.futures`` uses) runs
    before non-daemon threads are joined, so queued work still finishes and
    the script exits cleanly without an explicit ``stop()``.
    """
    global _atexit_registered
    _supervisors.add(supervisor)
    if _atexit_registered:
        return
    try:
        threading._register_atexit(_stop_all)  # type: ignore[attr-defined]
    except RuntimeError:  # the interpreter is already shutting down
        return
    _atexit_registered = True


def _forget_supervisors_in_child() -> None:
    """A forked child inherits the at-exit hook and copies of the supervisors,
    but not their threads or workers: stopping those copies at the child's
    exit would act on the parent's resources (e.g. its worker pipes)."""
    _supervisors.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_supervisors_in_child)


def _stop_all() -> None:
    for supervisor in list(_supervisors):
        try:
            supervisor.stop(wait=True)
        except Exception:
            logger.exception("stopping %r at exit failed", supervisor)
