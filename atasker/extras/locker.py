"""Helpers kept from the original library: ``Locker`` and ``LocalProxy``/``g``."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from atasker.errors import AtaskerError

__all__ = ["LocalProxy", "Locker", "LockerTimeoutError", "g"]

logger = logging.getLogger("atasker")


class LockerTimeoutError(AtaskerError, TimeoutError):
    """A :class:`Locker` could not be acquired in time."""


class Locker:
    """A lock with a timeout, used as a decorator or a context manager.

    When the lock cannot be acquired within *timeout* seconds, the failure is
    logged as critical, :meth:`critical` is called (replace it, e.g. to
    restart the process), and :class:`LockerTimeoutError` is raised.

    :param mod: a label for log messages (e.g. the module name).
    :param timeout: seconds to wait for the lock (``None``: forever).
    :param relative: re-entrant (an ``RLock``, default) or a plain ``Lock``.
    """

    def __init__(self, mod: str = "", timeout: float | None = 5, relative: bool = True) -> None:
        self.mod = mod
        self.timeout = timeout
        self.relative = relative
        self._lock: Any = threading.RLock() if relative else threading.Lock()

    def critical(self) -> None:
        """Called when acquiring timed out (after logging); replace it."""

    def acquire(self) -> None:
        """Acquire the lock or raise :class:`LockerTimeoutError`."""
        if not self._lock.acquire(timeout=-1 if self.timeout is None else self.timeout):
            logger.critical("Locker %s: lock not acquired in %s s", self.mod or hex(id(self)), self.timeout)
            self.critical()
            raise LockerTimeoutError(f"Locker {self.mod!r}: lock not acquired in {self.timeout} s")

    def release(self) -> None:
        """Release the lock."""
        self._lock.release()

    def __enter__(self) -> Locker:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __call__(self, f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with self:
                return f(*args, **kwargs)

        return locked


class LocalProxy(threading.local):
    """Thread-local storage with ``get``/``set``/``has``/``clear``.

    ``atasker.g`` is one: each thread (pool threads included) sees its own
    values.
    """

    def get(self, attr: str, default: Any = None) -> Any:
        """The value of *attr* in this thread, or *default*."""
        return getattr(self, attr, default)

    def has(self, attr: str) -> bool:
        """Whether *attr* is set in this thread."""
        return hasattr(self, attr)

    def set(self, attr: str, value: Any) -> None:
        """Set *attr* in this thread."""
        setattr(self, attr, value)

    def clear(self, attr: str) -> None:
        """Unset *attr* in this thread (no error if it is not set)."""
        self.__dict__.pop(attr, None)


#: Thread-local proxy shared by the whole program.
g = LocalProxy()
