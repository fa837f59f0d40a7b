"""What :meth:`TaskSupervisor.get_info` returns."""

from __future__ import annotations

from typing import Any

__all__ = ["SupervisorInfo"]


class SupervisorInfo(dict[str, Any]):
    """A snapshot of a supervisor: a dict, whose keys are also attributes.

    ``info["task_types"]["thread"]["running"]`` and ``info.task_types`` alike.
    Plugins add attributes of their own (not keys); the built-in
    ``atasker.builtin.compat`` adds the original atasker's
    (``thread_tasks_count``, ``mp_tasks_count``, ``aloops``, ...).
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"supervisor info has no {name!r}") from None
