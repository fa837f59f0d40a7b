"""The task supervisor: the façade that composes the core and the plugins.

::

    TaskSupervisor ─┬─ PluginManager (pluggy) ─ built-ins, entry points, your plugins
                    │      └─ registries: task types, queue policies, status stores
                    ├─ Dispatcher (core/dispatch.py): accept ─ admit ─ launch ─ task_done
                    ├─ Timer (core/timer.py): delays and every plugin's deadlines
                    ├─ extensions: objects plugins add in atasker_configure
                    │      (aloops, the process pool, workers, ...), which the
                    │      seed's methods (create_aloop, create_mp_pool, ...) call
                    └─ Lifecycle (core/lifecycle.py): start/stop/drain; at exit, after fork

The supervisor inherits nothing and knows no built-in: every task type,
queue policy and status store -- thread, process and coroutine tasks too --
comes from a plugin through the hooks of :mod:`atasker.plugin.hookspecs`,
the same ones a third-party package has.  Every public method is
thread-safe and may be called from tasks and coroutines.

Lock order: ``_config_lock`` (start/stop, lazy executor creation) before
the dispatcher's lock; neither is held while user code, an executor, a
store or a hook runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor as FuturesExecutor
from contextvars import copy_context
from typing import Any

from atasker.core.dispatch import Dispatcher, Slot
from atasker.core.info import SupervisorInfo
from atasker.core.lifecycle import Lifecycle
from atasker.core.pool import check_sizes
from atasker.core.slots import make_slot, resize_slot
from atasker.core.task import (
    DEFAULT_SPEC,
    DEFAULT_TASK_TYPE,
    TASK_NORMAL,
    SpecCache,
    Task,
    TaskSpec,
    validate_seconds,
)
from atasker.core.timer import Timer
from atasker.errors import (
    MissingExtensionError,
    SupervisorStoppedError,
)
from atasker.plugin.manager import (
    EXTENSION_PROVIDERS,
    PluginManager,
    env_providers,
    make_plugin_manager,
    report_internal_error,
)
from atasker.plugin.protocols import Executor, StatusStore
from atasker.plugin.registry import Registry, make_registries

__all__ = ["DEFAULT_TIMEOUT_CRITICAL", "DEFAULT_TIMEOUT_WARNING", "TaskSupervisor", "default_supervisor"]


DEFAULT_TIMEOUT_WARNING = 5.0
DEFAULT_TIMEOUT_CRITICAL = 10.0


class TaskSupervisor:
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
        warning is logged and ``timeout_warning_func(task)`` is called (the
        built-in watchdog plugin, ``atasker.builtin.watchdog``).
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
        self.timeout_warning = validate_seconds(timeout_warning, "timeout_warning", zero_ok=True, never_ok=True)
        self.timeout_critical = validate_seconds(timeout_critical, "timeout_critical", zero_ok=True, never_ok=True)
        self.timeout_warning_func = timeout_warning_func
        self.timeout_critical_func = timeout_critical_func
        self._plugins = list(plugins)
        self._block_plugins = list(block_plugins)
        self._autoload = autoload
        self._providers = dict(providers or {})
        self._pool_config: dict[str, dict[str, int]] = {}
        if pool_size is not None or reserve_normal is not None or reserve_high is not None:
            self._pool_config[DEFAULT_TASK_TYPE] = check_sizes(pool_size, reserve_normal, reserve_high)
        self._dispatch = Dispatcher(name, self.report_internal_error)
        # Executors report on the hot path: the bound method of the
        # dispatcher saves a call per task (the method below documents it).
        self.task_done = self._dispatch.task_done  # type: ignore[method-assign]  # same signature, see above
        self._lifecycle = Lifecycle(self, self._dispatch)
        self._lifecycle.queue_policy = queue_policy
        self._lifecycle.status_store = status_store
        # Serialises start/stop and lazy executor creation (may be slow).
        self._config_lock = self._lifecycle.config_lock
        self._pm: PluginManager | None = None
        self._registries: dict[str, Registry[Any]] | None = None
        self._extensions: dict[str, Any] = {}
        self._configured: set[str] = set()
        self._specs = SpecCache()

    # ------------------------------------------------------------ plugins

    @property
    def plugin_manager(self) -> PluginManager:
        """This supervisor's plugin manager (built on first access)."""
        with self._config_lock:
            if self._pm is None:
                pm = make_plugin_manager(self._plugins, self._block_plugins, self._autoload)
                self._pm = pm
                pm.on_change(self._plugins_changed)
                self._plugins_changed()
            return self._pm

    def register_plugin(self, plugin: Any, name: str | None = None) -> str | None:
        """Register a plugin object or module on this supervisor.

        May be called while running: its ``atasker_configure`` runs now, new
        task types become usable, observer hooks take effect for the next
        event.  Returns the plugin's name.

        :raises pluggy.PluginValidationError: a hook it implements is unknown
            (misspelled) or has a bad signature; nothing is registered.
        """
        return self.plugin_manager.register_checked(plugin, name)

    def unregister_plugin(self, plugin: Any = None, name: str | None = None) -> Any:
        """Unregister a plugin (by object or name).  Executors already created stay."""
        return self.plugin_manager.unregister(plugin, name=name)

    def _plugins_changed(self) -> None:
        pm = self._pm
        assert pm is not None
        pm.configure_new(self, self._configured)

        self._dispatch.take_hooks(pm)

    def registry(self, kind: str) -> Registry[Any]:
        """The registry of ``"task type"``, ``"queue policy"``, ``"status store"``
        or ``"command"`` records the plugins registered (for tools such as
        ``atasker plugins``)."""
        with self._config_lock:
            pm = self.plugin_manager
            if self._registries is None:
                self._registries = make_registries(pm, {**env_providers(), **self._providers})
            return self._registries[kind]

    def task_types(self) -> list[str]:
        """Names of the task types the loaded plugins provide."""
        return self.registry("task type").names()

    def add_extension(self, name: str, extension: Any) -> None:
        """Offer *extension* under *name* to this supervisor's users and plugins.

        For plugins, in ``atasker_configure``.  The seed's methods delegate to
        the extensions of the built-ins (``create_aloop`` to ``"aloops"``,
        ``create_mp_pool`` to ``"mp"``, ...); any plugin reaches any extension
        with :meth:`extension`.

        :raises ValueError: another extension has that name.
        """
        with self._config_lock:
            current = self._extensions.get(name)
            if current is not None and current is not extension:
                raise ValueError(f"supervisor {self.name!r} already has an extension named {name!r}: {current!r}")
            self._extensions[name] = extension

    def extension(self, name: str, needed_by: str | None = None) -> Any:
        """The extension a plugin added under *name*.

        :param needed_by: what needs it (``"create_aloop()"``), for the error.
        :raises MissingExtensionError: no registered plugin added it; names
            the plugin that would, and whether it is blocked.
        """
        ext = self._extensions.get(name)
        if ext is not None:
            return ext
        pm = self.plugin_manager  # builds it: its plugins add their extensions
        ext = self._extensions.get(name)
        if ext is not None:
            return ext
        what = needed_by or f"extension {name!r}"
        provider = EXTENSION_PROVIDERS.get(name)
        if provider is None:
            raise MissingExtensionError(f"{what}: no registered plugin adds the extension {name!r}")
        why = "is blocked" if pm.is_blocked(provider) else "is not registered"
        raise MissingExtensionError(
            f"{what} needs plugin {provider!r} (extension {name!r}), which {why} on supervisor {self.name!r}"
        )

    # ------------------------------------------------------------- lifecycle

    def start(
        self,
        *,
        queue_policy: str | None = None,
        status_store: str | None = None,
        trace: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        """Start the supervisor (idempotent; it also starts on first use).

        Loads plugins, resolves the queue policy and status store, starts the
        timer thread and calls ``atasker_supervisor_starting``.  Executors
        start lazily, on first use of their task type.

        :param queue_policy: overrides the constructor's ``queue_policy``.
        :param status_store: overrides the constructor's ``status_store``.
        :param trace: write a task timeline (Chrome trace-event JSON) to this
            file until the supervisor stops; ``{name}`` and ``{pid}`` expand.
            Default: ``ATASKER_TRACE``; off when neither is set.  Given to an
            active supervisor, it turns tracing on.  Handled by the built-in
            plugin ``atasker.builtin.trace``.
        :param options: options of other plugins (see
            ``atasker_supervisor_starting``).
        :raises UnknownQueuePolicyError: no plugin provides the policy.
        :raises UnknownStatusStoreError: no plugin provides the store's scheme.
        :raises PluginConflictError: two plugins provide the name.
        :raises TypeError: an option no plugin handles.
        :raises OSError: the trace file cannot be opened.
        """
        self._lifecycle.start(queue_policy, status_store, {"trace": trace, **options})

    def ensure_started(self) -> None:
        """Start the supervisor if it never ran (what first use does).

        :raises SupervisorStoppedError: it ran and was stopped (``start()``
            starts it again).
        """
        self._lifecycle.ensure_started()

    def stop(self, wait: bool | float = True, stop_schedulers: bool | None = None, cancel_tasks: bool = False) -> bool:
        """Stop the supervisor: from then on, submissions raise :class:`SupervisorStoppedError`.

        A draining stop finishes the tasks accepted before it began and
        accepts no new ones, from outside threads nor from tasks.

        :param wait: ``True`` (or ``inf``) -- wait for every queued and
            running task; seconds -- wait at most that long, then cancel what
            is still queued and log what is still running; ``False`` -- cancel
            queued tasks, do not wait for running ones (their handles resolve).
        :param stop_schedulers: the original's; accepted with a
            ``DeprecationWarning`` (workers always stop first).
        :param cancel_tasks: cancel queued and delayed tasks first (status
            ``-1``, handles cancelled); running tasks finish.
        :returns: ``True`` if every task ended before it returned.
        :raises TypeError, ValueError: *wait* is not a bool or seconds >= 0
            (``None``, ``"5"``, NaN); nothing changed.

        A stop while another is under way waits for it as *wait* says and
        returns its result.  Called from one of this supervisor's own thread
        tasks (or its callback), stop waits for every *other* task and
        returns ``True`` once they have ended.  From a thread that reports
        other tasks' outcomes (process and ``atasker-dask`` callbacks) only
        ``wait=False`` works: waiting there raises ``RuntimeError``.  From a
        signal handler or on the timer thread (``timeout_warning_func``) it
        returns ``False`` at once and a new thread stops (:meth:`block`
        waits for it).  Never wait from a coroutine task: it blocks the loop.
        """
        if stop_schedulers is not None:
            self.extension("compat", "stop(stop_schedulers=...)").stop_schedulers_given()
        return self._lifecycle.stop(wait, cancel_tasks)

    def block(self) -> None:
        """Block the calling thread until the supervisor is stopped."""
        self._lifecycle.stopped.wait()

    def _slot(self, tt: str) -> Slot:
        return self._dispatch.slots.get(tt) or make_slot(self, tt)

    def executor(self, tt: str) -> Executor:
        """The executor of task type *tt* (created on first use)."""
        self.ensure_started()
        return self._slot(tt).executor

    def as_executor(self, tt: str = DEFAULT_TASK_TYPE, priority: int = TASK_NORMAL, **fields: Any) -> FuturesExecutor:
        """A :class:`concurrent.futures.Executor` of *tt* tasks; see :class:`atasker.SupervisorExecutor`."""
        face: FuturesExecutor = self.extension("futures", "as_executor()").as_executor(tt, priority, **fields)
        return face

    @property
    def timer(self) -> Timer:
        """The supervisor's timer (for plugins' deadlines), while it runs.

        :raises SupervisorStoppedError: the supervisor is not running.
        """
        timer = self._dispatch.timer
        if timer is None or not self._dispatch.active:
            raise SupervisorStoppedError(f"task supervisor {self.name!r} is not running: it has no timer")
        return timer

    # ------------------------------------------------------------- submission

    def submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        spec: TaskSpec | None = None,
        **fields: Any,
    ) -> Task:
        """Queue ``func(*args, **kwargs)`` as a task; return its handle at once.

        :param spec: a :class:`TaskSpec` (made once and reused, as
            ``background_task`` does); *fields* override it.
        :param fields: :class:`TaskSpec` fields: ``tt`` (task type name,
            default ``"thread"``), ``priority`` (``TASK_LOW`` / ``NORMAL`` /
            ``HIGH`` / ``CRITICAL`` or any int >= 0, lower is more urgent),
            ``name`` (default: the function's name), ``delay`` (seconds
            before it joins the queue; holds no slot), ``callback``
            (``callback(result)``, called in this process after the task
            succeeded, before its handle resolves; errors are on the handle,
            a callback that raises is logged), ``timeout`` (run timeout, for
            task types that support it), ``options`` (task-type specific,
            read by the executor from ``task.options``).
        :raises TypeError: *func* is not callable, or an unknown field.
        :raises InvalidPriorityError: bad priority.
        :raises UnknownTaskTypeError: no plugin provides *tt*.
        :raises SupervisorStoppedError: the supervisor is stopping or stopped.

        The task runs in a copy of the caller's :mod:`contextvars` context
        (thread and coroutine tasks; the callback too, for every task type).
        """
        if not callable(func):
            raise TypeError(f"task function must be callable, got {type(func).__name__}: {func!r}")
        if type(args) is not tuple:
            if not isinstance(args, (tuple, list)):
                raise TypeError(f"args must be a tuple or a list, got {type(args).__name__}: {args!r}")
            args = tuple(args)
        if spec is None:
            spec = self._specs.get(fields) if fields else DEFAULT_SPEC
        elif fields:
            spec = spec.replace(**fields)
        dispatch = self._dispatch
        if not dispatch.active:
            self.ensure_started()
        slot = dispatch.slots.get(spec.tt) or self._slot(spec.tt)
        name = spec.name
        if name is None:
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
        task = Task(func, args, kwargs if kwargs is not None else {}, spec, name, self, copy_context())
        if dispatch.call_wrappers:
            dispatch.wrap_call(task)
        slot.executor.validate(task)
        task.time_queued = time.time()
        dispatch.accept(slot, task)
        return task

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
        then runs the callback, resolves the handle (result, exception, or
        cancelled) and runs ``atasker_task_finished``.  So once a handle is
        resolved, ``get_task_info`` already returns ``None`` and the pool
        counts no longer include the task.  Any thread may call it.

        :param take_next: the calling worker can run another task at once:
            instead of handing the next admitted task to
            :meth:`Executor.start`, return it for the caller to run (it is
            already started: counted, stored and announced).  Saves a thread
            hand-off per task in a busy pool.
        :returns: with *take_next*, a task to run now or ``None``.
        """
        return self._dispatch.task_done(task, result, exception, cancelled, take_next)

    def cancel_task(self, task: Task) -> bool:
        """Cancel *task* (what ``task.cancel()`` does); see :meth:`Task.cancel`."""
        if task.done():
            return task.cancelled()
        return self._dispatch.cancel(task)

    # ------------------------------------------------------------ pool config

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

        :raises UnknownTaskTypeError: no plugin provides *tt*.
        :raises ValueError: a size that is not an int >= 0.
        """
        resize_slot(self, tt, pool_size, reserve_normal, reserve_high)

    def pool_config(self, tt: str) -> dict[str, int]:
        """The pool sizes :meth:`set_pool` (or the constructor, for ``"thread"``)
        set for *tt*, and only those: an executor tells a user's choice from
        its default by the absent keys (``atasker-dask`` follows the cluster
        for those).  A copy; it survives ``stop()`` and ``start()``."""
        with self._config_lock:
            return dict(self._pool_config.get(tt, {}))

    # ------------------------------------------------------------ information

    def get_task_info(self, task: Task | int) -> Task | None:
        """The record of a queued or running task; ``None`` once it completed.

        :param task: a task handle or a task id.
        """
        task_id = task.id if isinstance(task, Task) else task
        store = self._dispatch.store
        return store.get(task_id) if store is not None else None

    def get_info(self, *legacy: Any, **legacy_kw: Any) -> SupervisorInfo:
        """Pool sizes, running and waiting counts per task type and priority.

        A dict whose keys are also attributes; an extension with an
        ``add_info(info)`` method adds attributes (see :class:`SupervisorInfo`).
        The original's arguments (``tt=``, ``aloops=``, ...) are ignored.
        """
        return SupervisorInfo.collect(self.name, self._dispatch.info(), self.is_active(), self._extensions.values())

    @property
    def status_store(self) -> StatusStore | None:
        """The status store in use (``None`` before the first start)."""
        return self._dispatch.store

    def get_tasks(self, tt: str | None = None) -> list[Task]:
        """Every task not yet ended: running, queued and delayed (a snapshot).

        :param tt: only tasks of this task type.
        """
        dispatch = self._dispatch
        tasks = dispatch.running_tasks(tt) + dispatch.waiting_tasks(include_delayed=True)
        return tasks if tt is None else [t for t in tasks if t.tt == tt]

    def is_active(self) -> bool:
        """Whether the supervisor is started and not stopping."""
        return self._dispatch.active and not self._dispatch.stopping

    def report_internal_error(self, exc: BaseException, where: str) -> None:
        """Log an error of a plugin, callback or store and go on.

        For plugins whose own threads catch what must not kill them; runs
        the ``atasker_internalerror`` hook.  Never raises.

        :param where: what raised, e.g. ``"process pool manager thread"``.
        """
        report_internal_error(self._pm, exc, where)

    # ------------------------------------------- the seed's methods: delegators

    def set_thread_pool(
        self, pool_size: int | None = None, reserve_normal: int | None = None, reserve_high: int | None = None
    ) -> None:
        """:meth:`set_pool` for thread tasks (the original atasker's API; plugin ``atasker.builtin.thread``)."""
        self.extension("thread", "set_thread_pool()").set_thread_pool(pool_size, reserve_normal, reserve_high)

    def create_mp_pool(self, **kwargs: Any) -> None:
        """Configure the process pool; see :meth:`atasker.builtin.mp.api.ProcessPoolControl.create_mp_pool`."""
        self.extension("mp", "create_mp_pool()").create_mp_pool(**kwargs)

    def set_mp_pool(
        self, pool_size: int | None = None, reserve_normal: int | None = None, reserve_high: int | None = None
    ) -> None:
        """Resize the process pool; see :meth:`atasker.builtin.mp.api.ProcessPoolControl.set_mp_pool`."""
        self.extension("mp", "set_mp_pool()").set_mp_pool(pool_size, reserve_normal, reserve_high)

    def create_aloop(
        self, name: str, default: bool = False, daemon: bool = False, start: bool = True, **kw: Any
    ) -> Any:
        """Create an aloop; see :meth:`atasker.builtin.coroutine.aloops.Aloops.create_aloop`."""
        return self.extension("aloops", "create_aloop()").create_aloop(name, default, daemon, start, **kw)

    def get_aloop(self, name: str | None = None) -> Any:
        """The aloop called *name* (default: the default aloop) or ``None``; see ``Aloops.get_aloop``."""
        return self.extension("aloops", "get_aloop()").get_aloop(name)

    def get_aloops(self) -> dict[str, Any]:
        """Every aloop by name; see ``Aloops.get_aloops``."""
        aloops: dict[str, Any] = self.extension("aloops", "get_aloops()").get_aloops()
        return aloops

    def start_aloop(self, name: str) -> Any:
        """Start (or restart) an aloop; see ``Aloops.start_aloop``."""
        return self.extension("aloops", "start_aloop()").start_aloop(name)

    def stop_aloop(self, name: str, wait: bool | float = True, cancel_tasks: bool = False) -> bool:
        """Stop an aloop; see ``Aloops.stop_aloop``."""
        done: bool = self.extension("aloops", "stop_aloop()").stop_aloop(name, wait, cancel_tasks)
        return done

    def set_default_aloop(self, aloop: Any) -> None:
        """Set the default aloop; see ``Aloops.set_default_aloop``."""
        self.extension("aloops", "set_default_aloop()").set_default_aloop(aloop)

    def set_coroutine_pool(
        self, pool_size: int | None = None, reserve_normal: int | None = None, reserve_high: int | None = None
    ) -> None:
        """:meth:`set_pool` for coroutine tasks; see ``Aloops.set_coroutine_pool``."""
        self.extension("aloops", "set_coroutine_pool()").set_coroutine_pool(pool_size, reserve_normal, reserve_high)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], **options: Any) -> Any:
        """``fn`` over the items as a few chunk tasks, results in order; see ``atasker.extras.batch.Batches.map``."""
        return self.extension("map", "map()").map(fn, *iterables, **options)

    def get_workers(self) -> list[Any]:
        """Workers started on this supervisor and still active (plugin ``atasker.extras.workers``)."""
        workers: list[Any] = self.extension("workers", "get_workers()").get_workers()
        return workers

    def live(self, total: int | None = None, **options: Any) -> Any:
        """A live terminal view of this supervisor, as a context manager.

        ``with supervisor.live(total=100): ...``; see
        :class:`atasker.tools.liveview.LiveView` (plugin ``atasker.tools.liveview``).
        """
        return self.extension("live", "live()").view(total=total, **options)

    # ------------------- the original's methods: delegators (plugin atasker.builtin.compat)

    #: Accepted and ignored: the original polled every ``poll_delay`` seconds; nothing polls here.
    poll_delay = 0.1

    def put_task(self, task: Any, *args: Any, **kwargs: Any) -> Any:
        """Deprecated: :meth:`submit` a Thread, a ``(target, args, kwargs, callback)`` or a target; see ``Compat``."""
        return self.extension("compat", "put_task()").put_task(task, *args, **kwargs)

    def mark_task_completed(self, task: Any = None, task_id: Any = None, tt: Any = None) -> Any:
        """Deprecated and ignored (a task completes when its function returns); ``True``."""
        return self.extension("compat", "mark_task_completed()").mark_task_completed(task, task_id, tt)

    def get_task(self, task_id: Any) -> Any:
        """Deprecated: :meth:`get_task_info`, which also knows the ids of ``put_task``."""
        return self.extension("compat", "get_task()").get_task(task_id)

    def register_scheduler(self, scheduler: Any) -> Any:
        """Deprecated: run ``scheduler.loop()`` on an aloop until it ends; see ``Compat``."""
        return self.extension("compat", "register_scheduler()").register_scheduler(scheduler)

    def register_sync_scheduler(self, scheduler: Any) -> Any:
        """Deprecated: call ``scheduler.stop()`` when the supervisor stops."""
        return self.extension("compat", "register_sync_scheduler()").register_sync_scheduler(scheduler)

    def unregister_scheduler(self, scheduler: Any) -> Any:
        """Deprecated: cancel a scheduler's loop; ``False`` if it was not registered."""
        return self.extension("compat", "unregister_scheduler()").unregister_scheduler(scheduler)

    def unregister_sync_scheduler(self, scheduler: Any) -> Any:
        """Deprecated: forget a sync scheduler; ``False`` if it was not registered."""
        return self.extension("compat", "unregister_sync_scheduler()").unregister_sync_scheduler(scheduler)

    @property
    def mp_pool(self) -> Any:
        """Deprecated: the process pool once sized, else ``None``; see ``ProcessPoolControl.mp_pool``."""
        return self.extension("mp", "mp_pool").mp_pool

    def create_async_job_scheduler(self, name: str, aloop: Any = None, **kwargs: Any) -> Any:
        """Create an async job scheduler on an aloop; see ``AsyncJobs.create_async_job_scheduler``."""
        return self.extension("async_jobs", "async jobs").create_async_job_scheduler(name, aloop, **kwargs)

    def create_async_job(self, scheduler: Any = None, **kwargs: Any) -> Any:
        """Create an async job (``target=``, ``interval=``, ...); see ``AsyncJobs.create_async_job``."""
        return self.extension("async_jobs", "async jobs").create_async_job(scheduler, **kwargs)

    def cancel_async_job(self, scheduler: Any = None, job: Any = None) -> None:
        """Cancel an async job; see ``AsyncJobs.cancel_async_job``."""
        self.extension("async_jobs", "async jobs").cancel_async_job(scheduler, job)

    def __repr__(self) -> str:
        state = "active" if self.is_active() else "stopped"
        return f"<TaskSupervisor {self.name!r} {state}>"


def default_supervisor() -> TaskSupervisor:
    """``atasker.task_supervisor``: the supervisor used where none is given.

    Read at each call, not at import, so that code (and tests) that replace
    ``atasker.task_supervisor`` are followed.
    """
    import atasker  # the package made it; read it from there, see above

    return atasker.task_supervisor
