"""Handing tasks to the cluster: checking them, naming them, ``client.submit``.

Every task submitted is in the table of tasks on the cluster
(:attr:`Submitter.inflight`, key -> (task, future)) until someone pops it:
whoever pops an entry reports its task, once.
"""

from __future__ import annotations

import functools
import pickle
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import TaskPicklingError

if TYPE_CHECKING:
    from atasker import Task

    from .connection import Connection, Entry

__all__ = ["SUBMIT_OPTIONS", "Submitter", "submit_error", "validate_task"]

#: Task options (``submit(..., options={...})``) passed on to ``Client.submit``.
SUBMIT_OPTIONS = frozenset({"workers", "resources", "retries", "allow_other_workers"})
# Client.submit's own keywords: a task keyword argument with one of these
# names would be taken by submit, so such a call goes through partial().
_SUBMIT_KEYWORDS = frozenset(
    {"func", "self", "key", "workers", "resources", "retries", "priority", "fifo_timeout", "allow_other_workers"}
) | {"actor", "actors", "pure"}


def validate_task(task: Task) -> None:
    """Check *task*'s options (its timeout was checked with its TaskSpec).

    :raises TypeError: an option ``Client.submit`` does not take.
    """
    options = task.options
    if options:
        unknown = set(options) - SUBMIT_OPTIONS
        if unknown:
            raise TypeError(
                f"unknown dask task option{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(sorted(map(repr, unknown)))}; known: {', '.join(sorted(SUBMIT_OPTIONS))}"
            )


def submit_error(task: Task, exc: BaseException) -> BaseException:
    """The error *task* fails with when ``client.submit`` raised *exc*."""
    if isinstance(exc, pickle.PicklingError) or "serializ" in str(exc).lower():
        error = TaskPicklingError(
            f"dask task {task.id} ({task.name}): its function or arguments could not be "
            f"serialized for the cluster: {exc}"
        )
        error.__cause__ = exc
        return error
    return exc


class Submitter:
    """Submits tasks to a client, and keeps the table of tasks on the cluster.

    :param connection: the executor's connection (its state and lost clients).
    :param report: ``report(task, **outcome)``, inline.
    :param report_soon: ``report_soon(task, **outcome)``, from the EventThread.
    """

    def __init__(self, connection: Connection, report: Callable[..., None], report_soon: Callable[..., None]) -> None:
        self._connection = connection
        self._report = report
        self._report_soon = report_soon
        #: Tasks on the cluster: key -> (task, Dask future).
        self.inflight: dict[str, Entry] = {}
        #: Keys are global on a scheduler: this part makes ours unique.
        self.token = uuid.uuid4().hex

    def key(self, task: Task) -> str:
        """The Dask key of *task*."""
        # Like Dask's own keys ("name-<hex>"): Dask groups the tasks of one
        # name (dashboard, duration estimates, its root-task queue) as it
        # would if the application called client.submit itself.
        return f"{task.name}-{self.token}-{task.id}"

    def submit(self, client: Any, task: Task) -> Any:
        """Submit *task* to *client*; the future to watch, or ``None`` if the task is reported already."""
        if self._connection.closed:  # e.g. the connect thread's backlog, after stop(wait=False)
            self._report(task, cancelled=True)
            return None
        key = self.key(task)
        func, args, kwargs = task.func, task.args, task.kwargs
        if kwargs and not _SUBMIT_KEYWORDS.isdisjoint(kwargs):
            func, args, kwargs = functools.partial(func, *args, **kwargs), (), {}
        try:
            # Dask runs higher priorities first; atasker's lower numbers are more urgent.
            future = client.submit(func, *args, key=key, priority=-task.priority, pure=False, **task.options, **kwargs)
        except Exception as exc:
            self._report_soon(task, exception=submit_error(task, exc))
            return None
        self.inflight[key] = (task, future)
        if self._connection.closed:
            # shutdown() has swept the table (it marks the connection closed
            # first): whoever pops the entry reports it, once.
            self.drop_after_shutdown(key)
            return None
        if client.status != "running":
            # Lost between the check in start() and now: Dask may not have
            # cancelled this future along with the others.
            lost = self._connection.lost_if_current(client, None)
            entry = self.inflight.pop(key, None)
            self._connection.fail_entries([*lost, *([entry] if entry else [])])
            return None
        return future

    def drop_after_shutdown(self, key: str) -> None:
        """Report the task of *key* cancelled, once the executor is shut down."""
        # Its future goes with the client, which shutdown() closes: closing a
        # client releases its keys, one message for all rather than one each.
        entry = self.inflight.pop(key, None)
        if entry is not None:
            self._report(entry[0], cancelled=True)

    def claim_lost(self, client: Any) -> list[Entry]:
        """Take the entries of the futures of *client* (whose connection was lost)."""
        entries = []
        for key, (_, future) in list(self.inflight.items()):
            if future.client is client:
                entry = self.inflight.pop(key, None)
                if entry is not None:
                    entries.append(entry)
        return entries

    def sweep(self) -> list[Task]:
        """Take every task on the cluster (at shutdown)."""
        leftover = [self.inflight.pop(key, None) for key in list(self.inflight)]
        return [entry[0] for entry in leftover if entry is not None]
