"""Aloops: asyncio loops the supervisor runs in their own threads.

(Placeholder: filled in by the coroutine-tasks issue.)
"""

from __future__ import annotations

from ._extension import SupervisorExtension

__all__: list[str] = []


class AloopAPI(SupervisorExtension):
    """The supervisor's aloop methods (``create_aloop``, ``get_aloop``, ...)."""
