"""Process lifecycle: interpreter exit and ``fork``, in one place.

* At exit, every started supervisor is stopped (``stop(wait=True)``) from
  ``threading._register_atexit`` -- the hook ``concurrent.futures`` uses --
  which runs before non-daemon threads are joined, so queued work still
  finishes and a script exits cleanly without an explicit ``stop()``.
  Then the callbacks plugins registered with :func:`at_exit` run, newest
  first (a process pool kills workers whose task outlived a timed stop).
* In a forked child, the copies of the parent's supervisors own none of its
  threads or workers: they are forgotten, so stopping them at the child's
  exit cannot act on the parent's resources, and the callbacks plugins
  registered with :func:`after_fork_in_child` run.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atasker.core.task import SupervisorAPI

__all__ = ["after_fork_in_child", "at_exit", "cancel_at_exit", "watch_supervisor"]

logger = logging.getLogger("atasker")

_supervisors: weakref.WeakSet[SupervisorAPI] = weakref.WeakSet()
_exit_callbacks: list[Callable[[], object]] = []
_fork_callbacks: list[Callable[[], object]] = []
_lock = threading.Lock()
_registered = False


def watch_supervisor(supervisor: SupervisorAPI) -> None:
    """Stop *supervisor* at interpreter exit (called by its first ``start()``)."""
    _supervisors.add(supervisor)
    _register()


def at_exit(callback: Callable[[], object]) -> None:
    """Run ``callback()`` at interpreter exit, after the supervisors stopped.

    For plugins that own processes or files beyond a supervisor's ``stop()``.
    Callbacks run newest first; one that raises is logged.
    """
    with _lock:
        _exit_callbacks.append(callback)
    _register()


def cancel_at_exit(callback: Callable[[], object]) -> None:
    """Forget a callback given to :func:`at_exit` (no error if unknown)."""
    with _lock:
        if callback in _exit_callbacks:
            _exit_callbacks.remove(callback)


def after_fork_in_child(callback: Callable[[], object]) -> None:
    """Run ``callback()`` in the child after every ``os.fork()``.

    For plugins that must disown what the parent's copies of their objects
    refer to (threads, pipes, worker processes).
    """
    with _lock:
        _fork_callbacks.append(callback)


def _register() -> None:
    global _registered
    with _lock:
        if _registered:
            return
        try:
            threading._register_atexit(_run_at_exit)  # type: ignore[attr-defined]  # what concurrent.futures uses
        except RuntimeError:  # the interpreter is already shutting down
            return
        _registered = True


def _run_at_exit() -> None:
    for supervisor in list(_supervisors):
        try:
            supervisor.stop(wait=True)
        except Exception:
            logger.exception("stopping %r at exit failed", supervisor)
    with _lock:
        callbacks = list(reversed(_exit_callbacks))
    for callback in callbacks:
        try:
            callback()
        except Exception:
            logger.exception("atasker at-exit callback %r failed", callback)


def _in_child() -> None:
    _supervisors.clear()
    for callback in list(_fork_callbacks):
        try:
            callback()
        except Exception:
            logger.exception("atasker after-fork callback %r failed", callback)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)
