"""The live dask executors, one per supervisor, and the exit hook that stops them.

Weak both ways: the supervisor holds its executor, never the other way round,
and an executor its supervisor dropped is forgotten here too.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atasker import TaskSupervisor

    from .executor import DaskExecutor

__all__ = ["executor_of", "forget", "register", "register_exit_hook"]

logger = logging.getLogger("atasker.dask")

_executors: weakref.WeakKeyDictionary[TaskSupervisor, weakref.ref[DaskExecutor]] = weakref.WeakKeyDictionary()
_live: weakref.WeakSet[DaskExecutor] = weakref.WeakSet()
_exit_hook = threading.Lock()
_exit_hook_registered = False


def register(supervisor: TaskSupervisor, executor: DaskExecutor) -> None:
    """Make *executor* the one :func:`executor_of` returns for *supervisor*."""
    _executors[supervisor] = weakref.ref(executor)
    _live.add(executor)


def forget(supervisor: TaskSupervisor, executor: DaskExecutor) -> None:
    """Forget *executor* as *supervisor*'s (if it still is: a newer one stays)."""
    if executor_of(supervisor) is executor:
        del _executors[supervisor]


def executor_of(supervisor: TaskSupervisor) -> DaskExecutor | None:
    """The live dask executor of *supervisor*, if it has created one."""
    ref = _executors.get(supervisor)
    return ref() if ref is not None else None


def register_exit_hook() -> None:
    """Stop supervisors with dask tasks before ``concurrent.futures`` shuts down at exit.

    atasker stops started supervisors at exit, waiting for their tasks, from
    a ``threading`` exit hook; those run in reverse order of registration,
    and ``concurrent.futures`` registers its own (after which its thread
    pools refuse work) when first imported -- for a supervisor that started
    before ``distributed`` was imported, after atasker's.  A local cluster's
    scheduler needs those pools, so a dask task still queued at exit would
    fail.  Registered once ``distributed`` is imported, this hook runs first.
    """
    global _exit_hook_registered
    with _exit_hook:
        if _exit_hook_registered:
            return
        try:
            threading._register_atexit(_stop_at_exit)  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):  # not CPython, or already exiting
            return
        _exit_hook_registered = True


def _stop_at_exit() -> None:
    for executor in list(_live):
        supervisor = executor.supervisor
        if executor.in_use() and supervisor.is_active():
            try:
                supervisor.stop(wait=True)
            except Exception:
                logger.exception("atasker-dask: stopping %r at exit failed", supervisor)
