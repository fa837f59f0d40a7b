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
    logged as critical and :meth:`critical` is called (replace it, e.g. to
    restart the process).  Then, as in the original atasker, a decorated
    function is not called and returns ``None``, while ``with`` raises
    :class:`LockerTimeoutError` (a :class:`TimeoutError`); with
    ``raise_timeout=True`` the decorated function raises it too.

    :param mod: a label for log messages (e.g. the module name).
    :param timeout: seconds to wait for the lock (``None``: forever).
    :param relative: re-entrant (an ``RLock``, default) or a plain ``Lock``.
    :param raise_timeout: a decorated function raises
        :class:`LockerTimeoutError` instead of returning ``None``.
    :ivar lock: the lock itself (``lock.acquire()``, ``lock.release()``).
    """

    def __init__(
        self, mod: str = "main", timeout: float | None = 5, relative: bool = True, raise_timeout: bool = False
    ) -> None:
        self.mod = mod
        self.timeout = timeout
        self.relative = relative
        self.raise_timeout = raise_timeout
        self.lock: Any = threading.RLock() if relative else threading.Lock()

    def critical(self) -> None:
        """Called when acquiring timed out (after logging); replace it."""

    def _acquire(self, what: str) -> bool:
        if self.lock.acquire(timeout=-1 if self.timeout is None else self.timeout):
            return True
        logger.critical("Locker %s: lock not acquired in %s s%s", self.mod or hex(id(self)), self.timeout, what)
        self.critical()
        return False

    def _timed_out(self) -> LockerTimeoutError:
        return LockerTimeoutError(f"Locker {self.mod!r}: lock not acquired in {self.timeout} s")

    def acquire(self) -> None:
        """Acquire the lock or raise :class:`LockerTimeoutError` (after :meth:`critical`)."""
        if not self._acquire(""):
            raise self._timed_out()

    def release(self) -> None:
        """Release the lock."""
        self.lock.release()

    def __enter__(self) -> Locker:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __call__(self, f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def locked(*args: Any, **kwargs: Any) -> Any:
            if not self._acquire(f" for {getattr(f, '__qualname__', f)!r}"):
                if self.raise_timeout:
                    raise self._timed_out()
                return None
            try:
                return f(*args, **kwargs)
            finally:
                self.lock.release()

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
