"""Built-in plugin ``atasker.builtin.mp``: task type ``"mp"`` (TT_MP), a
crash-proof pool of worker processes.

* :mod:`.executor` -- :class:`MPExecutor`, the executor the supervisor calls;
* :mod:`.manager` -- worker processes and the manager thread (parent side);
* :mod:`.worker` -- the loop each worker process runs (child side);
* :mod:`.api` -- ``create_mp_pool`` / ``set_mp_pool``, ``co_mp_apply`` and
  the errors a process task can end with.

Blocking this plugin removes all of it.
"""

from __future__ import annotations

from atasker.builtin.mp.api import atasker_supervisor_started
from atasker.builtin.mp.executor import (
    TT_MP,
    MPExecutor,
    atasker_configure,
    atasker_register_task_types,
    check_options,
    cpu_count,
    default_start_method,
)

__all__ = [
    "TT_MP",
    "MPExecutor",
    "atasker_configure",
    "atasker_register_task_types",
    "atasker_supervisor_started",
    "check_options",
    "cpu_count",
    "default_start_method",
]
