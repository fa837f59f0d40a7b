"""Built-in plugin ``atasker.builtin.coroutine``: task type ``"coroutine"``
(TT_COROUTINE) and aloops, asyncio loops the supervisor runs in threads.

* :mod:`.executor` -- :class:`CoroutineExecutor`;
* :mod:`.aloop` -- :class:`ALoop`, an event loop in a thread of its own;
* :mod:`.aloops` -- :class:`Aloops`, the supervisor's aloop methods;
* :mod:`.feeder` -- how tasks reach a loop from any thread;
* :mod:`.jobs` -- async job schedulers (``create_async_job_scheduler``).

Blocking this plugin removes all of it.
"""

from __future__ import annotations

from atasker.builtin.coroutine.aloop import ALoop
from atasker.builtin.coroutine.aloops import Aloops, atasker_configure, atasker_supervisor_stopped
from atasker.builtin.coroutine.errors import AloopStoppedError, UnknownAloopError
from atasker.builtin.coroutine.executor import TT_COROUTINE, CoroutineExecutor, atasker_register_task_types
from atasker.builtin.coroutine.jobs import AsyncJob, AsyncJobScheduler, atasker_supervisor_stopping

__all__ = [
    "TT_COROUTINE",
    "ALoop",
    "AloopStoppedError",
    "Aloops",
    "AsyncJob",
    "AsyncJobScheduler",
    "CoroutineExecutor",
    "UnknownAloopError",
    "atasker_configure",
    "atasker_register_task_types",
    "atasker_supervisor_stopped",
    "atasker_supervisor_stopping",
]
