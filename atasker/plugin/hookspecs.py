"""Hook specifications: the reference of everything a plugin can do.

Three extension points hand out objects when a supervisor is configured
(``atasker_register_*``); the dispatcher then calls those objects directly.
Lifecycle hooks (``atasker_task_*``, ``atasker_supervisor_*``) let plugins
observe; a lifecycle hook with no implementation is skipped entirely, so it
costs nothing on the hot path.

Implement a hook with :data:`atasker.hookimpl`::

    from atasker import hookimpl

    @hookimpl
    def atasker_task_finished(task):
        print(task.name, "took", task.time_finished - task.time_started)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from atasker.core.task import SupervisorAPI, Task
    from atasker.plugin.protocols import CommandType, QueuePolicyType, StatusStoreType, TaskType

hookspec = pluggy.HookspecMarker("atasker")
#: Marks a function as a hook implementation (re-exported as ``atasker.hookimpl``).
hookimpl = pluggy.HookimplMarker("atasker")


@hookspec
def atasker_configure(supervisor: SupervisorAPI) -> None:
    """Set up this plugin for one supervisor: the place for per-supervisor state.

    Called once per supervisor and plugin, when the supervisor's plugin
    manager is built (first use of the supervisor), in that thread; a
    plugin registered later is called at its registration (it is
    *historic*, like pytest's ``pytest_configure``).  A plugin whose
    implementation raises is marked broken and unregistered; the others
    are configured all the same.  Read configuration
    (environment, ``supervisor.name``), and add the objects the plugin
    offers with :meth:`TaskSupervisor.add_extension` -- the seed's methods
    such as ``create_aloop`` and ``create_mp_pool`` delegate to the
    extensions the built-ins add here.  Must not start threads or processes.

    :param supervisor: the :class:`TaskSupervisor` being configured.

    Example::

        @hookimpl
        def atasker_configure(supervisor):
            supervisor.add_extension("mycache", Cache(supervisor))
    """


@hookspec
def atasker_supervisor_starting(supervisor: SupervisorAPI, options: Mapping[str, Any]) -> list[str] | None:
    """The supervisor is starting: plugins may open what they need for the run.

    Called by ``start()`` in the starting thread, after the queue policy and
    status store are resolved and before any task is accepted; an exception
    aborts the start (the supervisor stays stopped).  Also called when
    ``start(**options)`` is given options while the supervisor is running.

    :param supervisor: the :class:`TaskSupervisor`.
    :param options: the keyword options given to ``start()`` beyond
        ``queue_policy`` and ``status_store`` (``trace=...``, a plugin's own);
        ``None`` values are left out.
    :returns: the names of the options this plugin handled.  An option no
        plugin handles makes ``start()`` raise :class:`TypeError`.
    """


@hookspec
def atasker_supervisor_stopping(supervisor: SupervisorAPI, wait: bool | float, cancel_tasks: bool) -> None:
    """The supervisor is about to stop: stop producing tasks.

    Called first thing by ``stop()``, in the stopping thread, before queued
    and running tasks are drained (workers stop submitting here).  Once it
    returns, no task is accepted until the next ``start()``.

    :param supervisor: the :class:`TaskSupervisor`.
    :param wait: ``stop()``'s *wait*.
    :param cancel_tasks: ``stop()``'s *cancel_tasks*.
    """


@hookspec(firstresult=True)
def atasker_select_queue_policy(supervisor: SupervisorAPI, task_type: TaskType) -> str | None:
    """Choose the queue policy of one task type, by name.

    Called once per task type and supervisor run, when the task type is
    first used, in the submitting thread.  The first plugin that returns a
    name wins.  Default (no plugin returns one): the policy selected by name
    with ``TaskSupervisor(queue_policy=...)``, ``start(queue_policy=...)``
    or ``ATASKER_QUEUE_POLICY`` (``"priority"`` if none is).

    :param supervisor: the :class:`TaskSupervisor`.
    :param task_type: the :class:`TaskType` that is being set up.
    :returns: a registered queue policy name, or ``None`` to pass.

    Example::

        @hookimpl
        def atasker_select_queue_policy(supervisor, task_type):
            return "fairshare" if task_type.name == "mp" else None
    """


@hookspec
def atasker_register_commands(register: Callable[[CommandType], None]) -> None:
    """Register ``atasker`` sub-commands this plugin provides.

    Called once when the ``atasker`` command starts, in its main thread.
    ``atasker status`` (SQLite store) and ``atasker plot`` (traces) are
    registered this way by their built-in plugins.

    :param register: call it with a :class:`CommandType`.
    """


@hookspec
def atasker_register_task_types(register: Callable[[TaskType], None]) -> None:
    """Register task types (executors) this plugin provides.

    Called once per supervisor and plugin, the first time a task type is
    looked up (first use of the supervisor); for a plugin registered later,
    at the next lookup.  Called in the thread that looks up.  May import
    modules; must not start threads or processes -- executors are created
    lazily, on first use of their task type.

    Two plugins registering one name is a :class:`PluginConflictError`
    raised when that task type is used (other task types keep working),
    unless one plugin is blocked or the user picks one with
    ``TaskSupervisor(providers={"name": "plugin-name"})`` /
    ``ATASKER_PROVIDERS=name=plugin-name``.

    :param register: call it with a :class:`TaskType` for each task type.

    Example::

        @hookimpl
        def atasker_register_task_types(register):
            register(TaskType("subprocess", SubprocessExecutor, pool_size=4))
    """


@hookspec
def atasker_register_queue_policies(register: Callable[[QueuePolicyType], None]) -> None:
    """Register queue policies this plugin provides, by name.

    Default: the built-in ``"priority"`` policy (strict priority order, FIFO
    within a priority, reserves per priority).  Registering a policy never
    activates it: the user selects one by name with
    ``TaskSupervisor(queue_policy="name")``, ``start(queue_policy="name")``
    or ``ATASKER_QUEUE_POLICY=name``, so installing a policy package does not
    change applications that did not ask for it.

    Called once per supervisor and plugin, like
    :func:`atasker_register_task_types`, in the thread that looks up.

    :param register: call it with a :class:`QueuePolicyType`.

    Example::

        @hookimpl
        def atasker_register_queue_policies(register):
            register(QueuePolicyType("fifo", lambda pool: FifoPolicy()))
    """


@hookspec
def atasker_register_status_stores(register: Callable[[StatusStoreType], None]) -> None:
    """Register status stores this plugin provides, by URL scheme.

    Default: the built-in ``"memory"`` store (records live while a task is
    queued or running, dropped on completion).  A store is selected by URL
    with ``status_store="scheme://..."`` or ``ATASKER_STATUS_STORE``; merely
    installing one changes nothing.

    Called once per supervisor and plugin, like
    :func:`atasker_register_task_types`, in the thread that looks up.

    :param register: call it with a :class:`StatusStoreType`.
    """


@hookspec
def atasker_supervisor_started(supervisor: SupervisorAPI) -> None:
    """The supervisor has started (plugins loaded, ready for tasks).

    Called in the thread that started it; may block briefly.

    :param supervisor: the :class:`TaskSupervisor`.
    """


@hookspec
def atasker_supervisor_stopped(
    supervisor: SupervisorAPI, wait: bool | float, cancel_tasks: bool, all_done: bool
) -> None:
    """The supervisor has stopped: executors are shut down, no task is accepted.

    Called in the thread that called ``stop()``, after executors shut down
    and before ``stop()`` returns (and before :meth:`TaskSupervisor.block`
    returns).  Plugins release what they own here (the aloops stop here).
    An implementation may take any subset of the arguments.

    :param supervisor: the :class:`TaskSupervisor`.
    :param wait: ``stop()``'s *wait*.
    :param cancel_tasks: ``stop()``'s *cancel_tasks*.
    :param all_done: every task ended before the wait ran out.
    """


@hookspec
def atasker_task_queued(task: Task) -> None:
    """A task was accepted (status 0, queued or delayed).

    Called in the submitting thread, after the task is queued (it may already
    have started on another thread).  Must not block: it delays the caller.

    :param task: the task handle; read its fields, do not mutate them.
    """


@hookspec
def atasker_wrap_task_call(task: Task, call: Callable[..., Any]) -> Callable[..., Any] | None:
    """Wrap the callable a task runs: capture data at submit, run code around the call.

    Called once per task in the submitting thread, when ``submit()`` has
    made the handle and before the executor validates it (a process task
    pickles its callable then) and before :func:`atasker_task_queued`.
    What is current in the submitting thread (a ``contextvars`` value, a
    tracing span) is current here.  Default: the task runs ``task.func``
    as submitted.  Nothing is called when no plugin implements this hook.

    The callable returned replaces ``task.func`` and is called with the
    task's arguments wherever its executor calls it: a pool thread, an
    event loop (a coroutine task: return an awaitable, and await the one
    *call* returns inside it to run code around the await), a worker
    process (it must pickle: a module-level class or function of an
    importable module, with picklable data) or a remote worker (where
    your module must be importable).  Return ``None`` to leave the task
    as it is (for task types you do not know, for instance).  Keep *call*
    reachable as ``__wrapped__`` (:func:`functools.wraps`): executors
    inspect the signature (process tasks pass ``_task_id`` to a function
    that takes it).

    Several plugins chain, in pluggy's call order: each gets the callable
    the previous one returned.  Only plain implementations take part (not
    ``wrapper=True`` or ``hookwrapper=True`` ones).  An implementation that
    raises is reported through :func:`atasker_internalerror` and the
    callable stays as it was.  If the submission fails after this hook
    (the task cannot be pickled, the supervisor is stopping), the task
    never runs and no other task hook is called for it.  Must not block.

    :param task: the task handle (status 0; ``time_queued`` not set yet).
    :param call: what the task would call: ``task.func``, or what the
        previous plugin returned.
    :returns: the callable to run instead, or ``None``.

    Example::

        @hookimpl
        def atasker_wrap_task_call(task, call):
            request_id = REQUEST_ID.get()  # the submitter's

            @functools.wraps(call)
            def with_request_id(*args, **kwargs):
                token = REQUEST_ID.set(request_id)
                try:
                    return call(*args, **kwargs)
                finally:
                    REQUEST_ID.reset(token)

            return with_request_id if task.tt == "thread" else None
    """


@hookspec
def atasker_task_waiting(task: Task) -> None:
    """A task could not start at once: it waits in its queue for a slot.

    Called in the thread that queued it (the submitter, or the timer thread
    when a delay ends), after it joined the queue; not called for a task
    that starts at once.  Must not block.

    :param task: the task handle (status 0).
    """


@hookspec
def atasker_task_started(task: Task) -> None:
    """A task was admitted by the queue policy and handed to its executor.

    Called in the thread that dispatched it (a submitter or the thread that
    finished the previous task), just before the executor runs it.  Must not
    block: it delays the start.

    :param task: the task handle (status 1, ``time_started`` set).
    """


@hookspec
def atasker_task_finished(task: Task) -> None:
    """A task ended: completed, failed or cancelled.

    Called in the thread that reported the outcome (a pool worker, the
    canceller, ...) after the handle is resolved.  ``task.cancelled()``,
    ``task.exception()`` and ``task.result()`` do not block here.

    :param task: the task handle (``time_finished`` set).
    """


@hookspec
def atasker_internalerror(exc: BaseException, where: str) -> None:
    """An observer hook, callback or store raised; atasker went on.

    Default: the error is logged on the ``atasker`` logger (this hook is
    called as well).  Called in the thread where the error happened; must not
    raise.

    :param exc: the exception.
    :param where: what raised, e.g. ``"hook atasker_task_finished"``.
    """
