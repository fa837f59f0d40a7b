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
    from atasker.core.supervisor import TaskSupervisor
    from atasker.core.task import Task
    from atasker.plugin.protocols import QueuePolicyType, StatusStoreType, TaskType

hookspec = pluggy.HookspecMarker("atasker")
#: Marks a function as a hook implementation (re-exported as ``atasker.hookimpl``).
hookimpl = pluggy.HookimplMarker("atasker")


@hookspec
def atasker_register_task_types(register: Callable[[TaskType], None]) -> None:
    """Register task types (executors) this plugin provides.

    Called once per supervisor, when the supervisor is configured (its first
    ``start()``, explicit or implicit), in the thread that starts it.  May
    import modules; must not start threads or processes -- executors are
    created lazily, on first use of their task type.

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

    Called once per supervisor at configuration time, in the starting thread.

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

    Called once per supervisor at configuration time, in the starting thread.

    :param register: call it with a :class:`StatusStoreType`.
    """


@hookspec
def atasker_supervisor_started(supervisor: TaskSupervisor) -> None:
    """The supervisor has started (plugins loaded, ready for tasks).

    Called in the thread that started it; may block briefly.

    :param supervisor: the :class:`TaskSupervisor`.
    """


@hookspec
def atasker_supervisor_stopped(supervisor: TaskSupervisor) -> None:
    """The supervisor has stopped; every task has ended or was cancelled.

    Called in the thread that called ``stop()``, after executors shut down.

    :param supervisor: the :class:`TaskSupervisor`.
    """


@hookspec
def atasker_task_queued(task: Task) -> None:
    """A task was accepted (status 0, queued or delayed).

    Called in the submitting thread, after the task is queued (it may already
    have started on another thread).  Must not block: it delays the caller.

    :param task: the task handle; read its fields, do not mutate them.
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
