"""Batches: ``supervisor.map(fn, iterable)`` -- many calls as a few chunk tasks.

::

    map(fn, items) ─▶ chunks of `chunksize` items, read lazily from `items`
        │   at most `window` chunks submitted and not yet consumed
        ▼
    each chunk: one ordinary task  run_chunk(fn, chunk) -> [fn(x) for x in chunk]
        │   (any task type; a process task sends a chunk as one message)
        ▼
    MapIterator: results in input order; the next chunk is submitted as
                 each one is consumed

A chunk is a task like any other: it has a handle, a priority and a slot,
``get_info`` counts it, a plugin observes it.  Nothing here knows a task
type: ``run_chunk`` is a module-level function, so it pickles by reference
and a process chunk is one message by construction.

A chunk fails as a whole: when ``fn`` raises for one of its items, or the
worker running it dies, every item of that chunk fails with that exception
and the other chunks are unaffected.  The iterator yields every result
before the failed chunk, then raises (as ``ProcessPoolExecutor.map`` does
with a ``chunksize``).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from atasker.core.task import DEFAULT_TASK_TYPE, TASK_NORMAL, Task, validate_seconds
from atasker.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

__all__ = ["MAX_CHUNKSIZE", "Batches", "MapIterator", "default_chunksize", "run_chunk"]

#: Chunk size limit when the input's length is unknown (chunks start at 1
#: item and double up to it).
MAX_CHUNKSIZE = 1024


def run_chunk(fn: Callable[..., Any], items: list[Any], star: bool = False) -> list[Any]:
    """The target of a chunk task: ``fn`` applied to each item, in order.

    :param star: each item is a tuple of arguments (``map(fn, xs, ys)``).
    """
    if star:
        return list(itertools.starmap(fn, items))
    return list(map(fn, items))


def default_chunksize(length: int | None, workers: int) -> int:
    """Items per chunk when ``chunksize`` is not given.

    A known *length*: ``ceil(length / (4 * workers))``, as
    ``multiprocessing.Pool.map`` does -- about four chunks per worker, so
    the last ones balance the load.  An unknown length: ``0``, meaning
    "start at 1 and double each chunk up to :data:`MAX_CHUNKSIZE`".
    """
    if length is None:
        return 0
    return max(1, math.ceil(length / (4 * max(1, workers))))


class MapIterator(Iterator[Any]):
    """The results of :meth:`TaskSupervisor.map`, in input order.

    Iterate it (or call :meth:`list`) for the results.  The input is read
    lazily: at most :attr:`window` chunks are submitted and not yet
    consumed, so a long or endless iterable needs bounded memory.

    :attr:`tasks` are the handles of the chunks submitted and not yet
    consumed, in input order (each one's result is the list of its chunk's
    results); :attr:`submitted` counts every chunk so far.  Consumed chunks
    are not kept: their results were yielded.  :meth:`cancel` cancels the
    chunks that have not started.  Closing the iterator (or letting it be
    collected) cancels them too, as ``Executor.map`` does.
    """

    def __init__(
        self,
        supervisor: TaskSupervisor,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        fields: dict[str, Any],
        chunksize: int | None,
        timeout: float | None,
        window: int | None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"map needs a callable, got {type(fn).__name__}: {fn!r}")
        if not iterables:
            raise TypeError("map needs at least one iterable")
        if chunksize is not None and (type(chunksize) is not int or chunksize < 1):
            raise ValueError(f"chunksize must be an int >= 1 or None, got {chunksize!r}")
        timeout = validate_seconds(timeout, "timeout", zero_ok=True)
        self._supervisor = supervisor
        self._fn = fn
        self._star = len(iterables) > 1
        self._fields = fields
        tt = fields.get("tt", DEFAULT_TASK_TYPE)
        workers = _workers(supervisor, tt)
        length = _length(iterables)
        #: Items per chunk (``0``: doubling from 1, the length being unknown).
        self.chunksize = chunksize or default_chunksize(length, workers)
        self._grow = 1 if self.chunksize == 0 else 0
        #: Chunks submitted and not yet consumed, at most.
        self.window = window or 4 * workers
        if type(self.window) is not int or self.window < 1:
            raise ValueError(f"window must be an int >= 1 or None, got {window!r}")
        self._items: Iterator[Any] = iter(iterables[0]) if not self._star else zip(*iterables, strict=False)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        #: Chunks submitted so far.
        self.submitted = 0
        self._pending: deque[Task] = deque()
        self._exhausted = False
        self._chunks = self._chunk_results()
        self._results = itertools.chain.from_iterable(self._chunks)
        self._fill()

    def _next_chunk(self) -> list[Any]:
        size = self.chunksize
        if self._grow:
            size, self._grow = self._grow, min(self._grow * 2, MAX_CHUNKSIZE)
        return list(itertools.islice(self._items, size))

    def _fill(self) -> None:
        while not self._exhausted and len(self._pending) < self.window:
            chunk = self._next_chunk()
            if not chunk:
                self._exhausted = True
                return
            task = self._supervisor.submit(run_chunk, (self._fn, chunk, self._star), **self._fields)
            self.submitted += 1
            self._pending.append(task)

    def _chunk_results(self) -> Generator[list[Any], None, None]:
        # One resumption per chunk: itertools.chain takes the items of each
        # list in C, so list() and for loops pay no Python call per item.
        try:
            while self._pending:
                task = self._pending[0]
                remaining = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
                results = task.result(remaining)
                self._pending.popleft()
                self._fill()  # the next chunk starts while these are consumed
                yield results
        except BaseException:  # a failed chunk, a timeout, or close()
            self.cancel()
            raise

    @property
    def tasks(self) -> list[Task]:
        """The chunks submitted and not yet consumed (at most :attr:`window`), in order."""
        return list(self._pending)

    def __iter__(self) -> Iterator[Any]:
        return self._results

    def __next__(self) -> Any:
        return next(self._results)

    def cancel(self) -> int:
        """Cancel every chunk that has not started; read no more input.

        :returns: how many chunks were cancelled.
        """
        self._exhausted = True
        pending, self._pending = self._pending, deque()
        return sum(task.cancel() for task in pending)

    def close(self) -> None:
        """Stop: cancel the chunks that have not started (as a generator's ``close``)."""
        self.cancel()
        self._chunks.close()

    def __del__(self) -> None:
        pending = getattr(self, "_pending", None)
        if pending:
            for task in pending:
                task.cancel()

    def __repr__(self) -> str:
        return f"<MapIterator {self.submitted} chunk(s) submitted, {len(self._pending)} pending>"


def _length(iterables: tuple[Iterable[Any], ...]) -> int | None:
    lengths = []
    for iterable in iterables:
        try:
            lengths.append(len(iterable))  # type: ignore[arg-type]
        except TypeError:
            return None
    return min(lengths)


def _workers(supervisor: TaskSupervisor, tt: str) -> int:
    """The pool size of task type *tt* (the CPU count for an unlimited pool)."""
    supervisor.executor(tt)  # creates the pool: its size is known from here on
    size = supervisor.get_info()["task_types"][tt]["pool_size"]
    return int(size) if size else os.cpu_count() or 1


class Batches:
    """The supervisor's ``map`` (extension ``"map"``)."""

    def __init__(self, supervisor: TaskSupervisor) -> None:
        self.supervisor = supervisor

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        tt: str = DEFAULT_TASK_TYPE,
        priority: int = TASK_NORMAL,
        chunksize: int | None = None,
        timeout: float | None = None,
        window: int | None = None,
        **fields: Any,
    ) -> MapIterator:
        """Call ``fn(item)`` for every item as chunk tasks; iterate the results in order.

        Like :meth:`concurrent.futures.Executor.map`, with priorities: the
        items are cut into chunks of *chunksize*, each chunk is one task of
        task type *tt* (``run_chunk(fn, chunk)``), and the returned
        :class:`MapIterator` yields the results in input order.  Several
        iterables call ``fn(x, y, ...)`` (shortest wins, like ``zip``).

        :param tt: any task type (``TT_THREAD``, ``TT_MP``, a plugin's);
            for process tasks *fn* and the items must pickle.
        :param priority: the priority of every chunk.
        :param chunksize: items per chunk; default: ``ceil(len / (4 *
            workers))`` for an input with a length (``workers``: the task
            type's pool size; the CPU count for an unlimited pool), else
            1, 2, 4, ... up to :data:`MAX_CHUNKSIZE`.
        :param timeout: seconds from this call until every result must be
            there; ``__next__`` raises :class:`TimeoutError` after it.
        :param window: chunks submitted and not yet consumed, at most
            (default ``4 * workers``): the input is read as results are
            consumed, so memory stays bounded for a long iterable.
        :param fields: other :class:`~atasker.TaskSpec` fields for every
            chunk (``name``, ``timeout`` is the map's, not a chunk's).
        :raises TypeError, ValueError, InvalidPriorityError: bad arguments.
        :raises UnknownTaskTypeError: no plugin provides *tt*.
        """
        fields = {"tt": tt, "priority": priority, **fields}
        if "name" not in fields:
            fields["name"] = f"map {getattr(fn, '__qualname__', None) or getattr(fn, '__name__', repr(fn))}"
        return MapIterator(self.supervisor, fn, iterables, fields, chunksize, timeout, window)


@hookimpl
def atasker_configure(supervisor: TaskSupervisor) -> None:
    """Add the ``"map"`` extension (``supervisor.map``)."""
    supervisor.add_extension("map", Batches(supervisor))
