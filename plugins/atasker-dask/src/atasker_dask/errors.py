"""Errors a dask task can end with besides its own exception.

None of them needs :mod:`distributed` to be imported: ``import atasker_dask``
stays cheap for supervisors that never run a dask task.
"""

from __future__ import annotations

import pickle
from typing import Any

from atasker import AtaskerError, WorkerDiedError

try:  # the process-task errors, shared so that mp and dask tasks fail alike
    from atasker import RemoteTraceback, TaskPicklingError
except ImportError:  # pragma: no cover - an atasker without process tasks

    class RemoteTraceback(Exception):  # type: ignore[no-redef]
        """The formatted traceback of an exception raised on a worker."""

        def __init__(self, tb: str) -> None:
            super().__init__(tb)
            self.tb = tb

        def __str__(self) -> str:
            return f'\n"""\n{self.tb.rstrip()}\n"""'

    class TaskPicklingError(pickle.PicklingError, TypeError):  # type: ignore[no-redef]
        """A task's function, arguments or result could not be serialized."""


__all__ = [
    "DaskTaskTimeoutError",
    "DaskWorkerDiedError",
    "RemoteTraceback",
    "SchedulerLostError",
    "SchedulerUnavailableError",
    "TaskPicklingError",
]


class SchedulerUnavailableError(AtaskerError, ConnectionError):
    """No connection to the Dask scheduler: it could not be reached or started.

    Set on the handles of tasks that were waiting for the connection, and
    raised by :func:`atasker_dask.get_client`.  The message names the address
    and the cause (chained as ``__cause__``).
    """


class SchedulerLostError(SchedulerUnavailableError):
    """The connection to the Dask scheduler was lost while the task was running
    on the cluster or waiting in atasker's queue for it.

    The task may or may not have run; atasker does not resubmit it.  The next
    dask task connects again (see "Running on a cluster" in the docs).
    """


class DaskWorkerDiedError(WorkerDiedError):
    """Dask gave up on a task: workers died running it too often (``KilledWorker``).

    Dask re-runs a task whose worker died; after
    ``distributed.scheduler.allowed-failures`` deaths (3 by default) it stops
    and the task fails with this error.  Dask's ``KilledWorker`` is chained as
    ``__cause__``.

    :ivar key: the Dask key of the task.
    :ivar last_worker: the address of the last worker that died running it.
    :ivar allowed_failures: the scheduler's ``allowed-failures`` setting.
    """

    def __init__(
        self, message: str, key: Any = None, last_worker: str | None = None, allowed_failures: int | None = None
    ) -> None:
        super().__init__(message)
        self.key = key
        self.last_worker = last_worker
        self.allowed_failures = allowed_failures

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.key, self.last_worker, self.allowed_failures))


class DaskTaskTimeoutError(AtaskerError, TimeoutError):
    """A dask task did not finish within its ``timeout=``.

    Its Dask future is cancelled; a function already running on a worker
    runs on to its end there (Dask cannot interrupt it), its result dropped.
    """
