"""Function and task collections: priority-ordered startup / shutdown packs."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from atasker.core.supervisor import default_supervisor
from atasker.core.task import TASK_NORMAL, validate_priority

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

__all__ = ["FunctionCollection", "TaskCollection"]

logger = logging.getLogger("atasker")


def _key(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


class FunctionCollection:
    """Functions run together in priority order (lower first; FIFO within one).

    Add functions with the collection as a decorator -- ``@startup`` or
    ``@startup(priority=TASK_HIGH)`` -- or with :meth:`append`.

    :param on_error: called as ``on_error(e, **on_error_kwargs)`` when a
        function raises; the others still run.
    :param on_error_kwargs: extra kwargs for ``on_error``.
    :param include_exceptions: put the exception in the result instead of
        ``None`` for a function that raised.
    """

    def __init__(
        self,
        on_error: Callable[..., Any] | None = None,
        on_error_kwargs: dict[str, Any] | None = None,
        include_exceptions: bool = False,
    ) -> None:
        self.on_error = on_error
        self.on_error_kwargs = dict(on_error_kwargs or {})
        self.include_exceptions = include_exceptions
        self._functions: list[tuple[int, int, Callable[..., Any]]] = []

    def __call__(self, f: Callable[..., Any] | None = None, priority: int = TASK_NORMAL) -> Any:
        if f is None:
            return lambda func: self(func, priority=priority)
        self.append(f, priority)
        return f

    def append(self, f: Callable[..., Any], priority: int = TASK_NORMAL) -> None:
        """Add *f* with *priority*."""
        if not callable(f):
            raise TypeError(f"collections hold callables, got {f!r}")
        self._functions.append((validate_priority(priority), len(self._functions), f))

    def remove(self, f: Callable[..., Any]) -> None:
        """Remove *f* (every time it was added)."""
        self._functions = [entry for entry in self._functions if entry[2] is not f]

    def functions(self) -> list[Callable[..., Any]]:
        """The functions in the order they run."""
        return [f for _, _, f in sorted(self._functions, key=lambda e: e[:2])]

    def _failed(self, func: Callable[..., Any], exc: Exception) -> Any:
        logger.error("collection function %s raised %s: %s", _key(func), type(exc).__name__, exc)
        if self.on_error is not None:
            self.on_error(exc, **self.on_error_kwargs)
        return exc if self.include_exceptions else None

    def execute(self) -> tuple[dict[str, Any], bool]:
        """Run every function; return ``({"module.name": result}, all_ok)``."""
        results: dict[str, Any] = {}
        all_ok = True
        for func in self.functions():
            try:
                results[_key(func)] = func()
            except Exception as exc:
                all_ok = False
                results[_key(func)] = self._failed(func, exc)
        return results, all_ok

    def run(self) -> dict[str, Any]:
        """Run every function; return ``{"module.name": result}``."""
        return self.execute()[0]


class TaskCollection(FunctionCollection):
    """A :class:`FunctionCollection` whose functions run as thread tasks.

    All are submitted at once, in priority order and each with its own
    priority, so the supervisor's pools and reserves apply; :meth:`execute`
    returns when every task has finished.

    :param supervisor: the supervisor (default ``task_supervisor``).
    """

    def __init__(self, *args: Any, supervisor: TaskSupervisor | None = None, **kwargs: Any) -> None:
        kwargs.pop("poll_delay", None)  # accepted for compatibility; nothing polls
        super().__init__(*args, **kwargs)
        self.supervisor = supervisor

    def execute(self) -> tuple[dict[str, Any], bool]:
        sup = self.supervisor or default_supervisor()
        entries = sorted(self._functions, key=lambda e: e[:2])
        tasks = [(f, sup.submit(f, priority=priority, name=_key(f))) for priority, _, f in entries]
        concurrent.futures.wait([t for _, t in tasks])
        results: dict[str, Any] = {}
        all_ok = True
        for func, task in tasks:
            error = task.exception()
            if error is None:
                results[_key(func)] = task.result()
            else:
                all_ok = False
                results[_key(func)] = self._failed(func, error)  # type: ignore[arg-type]  # an Exception: tasks here run Exception-raising functions
        return results, all_ok
