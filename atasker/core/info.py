"""What :meth:`TaskSupervisor.get_info` returns."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["SupervisorInfo"]


class SupervisorInfo(dict[str, Any]):
    """A snapshot of a supervisor: a dict, whose keys are also attributes.

    ``info["task_types"]["thread"]["running"]`` and ``info.task_types`` alike.
    Plugins add attributes of their own (not keys), directly or with
    :meth:`add_lazy`; the built-in ``atasker.builtin.compat`` adds the
    original atasker's (``thread_tasks_count``, ``mp_tasks_count``,
    ``aloops``, ...).
    """

    @classmethod
    def collect(cls, name: str, counts: dict[str, Any], active: bool, extensions: Iterable[Any]) -> SupervisorInfo:
        """The snapshot of supervisor *name*: its dispatcher's *counts*, then
        what every extension with an ``add_info(info)`` method adds."""
        info = cls(name=name, **counts, active=active)
        for ext in list(extensions):
            add_info = getattr(ext, "add_info", None)
            if add_info is not None:
                add_info(info)
        return info

    def add_lazy(self, name: str, make: Callable[[], Any]) -> None:
        """Add attribute *name*, computed by ``make()`` on first access.

        For what costs more than the snapshot itself (lists of every task):
        ``get_info()`` is called often (the live view, each refresh).
        """
        self.__dict__.setdefault("_lazy", {})[name] = make

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            pass
        make = self.__dict__.get("_lazy", {}).get(name)
        if make is None:
            raise AttributeError(f"supervisor info has no {name!r}")
        value = make()
        setattr(self, name, value)
        return value
