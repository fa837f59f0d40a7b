"""Process tasks: ``create_mp_pool``, ``set_mp_pool``, ``co_mp_apply``.

(Placeholder: filled in by the process-tasks issue.)
"""

from __future__ import annotations

from ._extension import SupervisorExtension

__all__: list[str] = []


class ProcessAPI(SupervisorExtension):
    """The supervisor's process-pool methods."""
