"""atasker: background tasks in threads, processes and event loops, under
one supervisor with priorities, per-priority reserves and plugins.

::

    from atasker import background_task, task_supervisor

    @background_task
    def mytask():
        print('I am working in the background!')

    task_id = mytask()
    task_supervisor.get_task_info(task_id)
"""

from __future__ import annotations

__version__ = "1.0.0"

import atasker.builtin.mp.api as _process
from atasker.api import TT_COROUTINE, TT_MP, TT_THREAD, background_task, wait_completed
from atasker.builtin.compat import set_debug
from atasker.builtin.coroutine import ALoop, AloopStoppedError, UnknownAloopError
from atasker.builtin.mp.api import *  # noqa: F403  (the process-task API, see process.__all__)
from atasker.core.info import SupervisorInfo
from atasker.core.pool import Pool
from atasker.core.signals import signals_to_main_thread, unblock_signals
from atasker.core.supervisor import TaskSupervisor, default_supervisor
from atasker.core.task import (
    TASK_CRITICAL,
    TASK_HIGH,
    TASK_LOW,
    TASK_NORMAL,
    TASK_STATUS_CANCELED,
    TASK_STATUS_COMPLETED,
    TASK_STATUS_QUEUED,
    TASK_STATUS_STARTED,
    SupervisorAPI,
    Task,
    TaskInfo,
    TaskSpec,
    priority_band,
)
from atasker.core.timer import MAX_WAIT, wait_timeout
from atasker.errors import (
    AtaskerError,
    InvalidPriorityError,
    MissingExtensionError,
    PluginConflictError,
    PluginLoadError,
    SupervisorStoppedError,
    UnknownQueuePolicyError,
    UnknownStatusStoreError,
    UnknownTaskTypeError,
    WorkerDiedError,
)
from atasker.extras.collections import FunctionCollection, TaskCollection
from atasker.extras.futures import SupervisorExecutor
from atasker.extras.locker import LocalProxy, Locker, LockerTimeoutError, g
from atasker.extras.workers import (
    BackgroundAsyncWorker,
    BackgroundEventWorker,
    BackgroundIntervalWorker,
    BackgroundQueueWorker,
    BackgroundWorker,
    background_worker,
)
from atasker.plugin.hookspecs import hookimpl, hookspec
from atasker.plugin.protocols import (
    BaseExecutor,
    CommandType,
    Executor,
    QueuePolicy,
    QueuePolicyType,
    StatusStore,
    StatusStoreType,
    TaskType,
)
from atasker.tools.liveview import live

#: The default supervisor; it starts itself on first use.
task_supervisor = TaskSupervisor()

__all__ = [
    "MAX_WAIT",
    "TASK_CRITICAL",
    "TASK_HIGH",
    "TASK_LOW",
    "TASK_NORMAL",
    "TASK_STATUS_CANCELED",
    "TASK_STATUS_COMPLETED",
    "TASK_STATUS_QUEUED",
    "TASK_STATUS_STARTED",
    "TT_COROUTINE",
    "TT_MP",
    "TT_THREAD",
    "AtaskerError",
    "BaseExecutor",
    "CommandType",
    "MissingExtensionError",
    "SupervisorAPI",
    "TaskSpec",
    "UnknownQueuePolicyError",
    "UnknownStatusStoreError",
    "BackgroundAsyncWorker",
    "BackgroundEventWorker",
    "BackgroundIntervalWorker",
    "BackgroundQueueWorker",
    "BackgroundWorker",
    "FunctionCollection",
    "LocalProxy",
    "Locker",
    "LockerTimeoutError",
    "TaskCollection",
    "background_worker",
    "g",
    "Executor",
    "InvalidPriorityError",
    "PluginConflictError",
    "PluginLoadError",
    "Pool",
    "QueuePolicy",
    "QueuePolicyType",
    "StatusStore",
    "StatusStoreType",
    "SupervisorInfo",
    "SupervisorExecutor",
    "SupervisorStoppedError",
    "Task",
    "TaskInfo",
    "TaskSupervisor",
    "TaskType",
    "UnknownTaskTypeError",
    "WorkerDiedError",
    "__version__",
    "background_task",
    "signals_to_main_thread",
    "unblock_signals",
    "default_supervisor",
    "hookimpl",
    "hookspec",
    "live",
    "priority_band",
    "set_debug",
    "task_supervisor",
    "wait_completed",
    "wait_timeout",
    "ALoop",
    "AloopStoppedError",
    "UnknownAloopError",
    *_process.__all__,
]
