"""Built-in plugin ``atasker.builtin.coroutine``: task type ``"coroutine"``
(TT_COROUTINE) and aloops, asyncio loops the supervisor runs in threads.

* :mod:`.executor` -- :class:`CoroutineExecutor`;
* :mod:`.aloop` -- :class:`ALoop` and the supervisor's aloop methods.

Blocking this plugin removes all of it.
"""

from __future__ import annotations

from atasker.builtin.coroutine.aloop import ALoop, Aloops, atasker_configure, atasker_supervisor_stopped
from atasker.builtin.coroutine.executor import TT_COROUTINE, CoroutineExecutor, atasker_register_task_types

__all__ = [
    "TT_COROUTINE",
    "ALoop",
    "Aloops",
    "CoroutineExecutor",
    "atasker_configure",
    "atasker_register_task_types",
    "atasker_supervisor_stopped",
]
