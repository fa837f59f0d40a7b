"""Task timeline traces: a lifecycle-observer plugin that writes Chrome
trace-event JSON (opens in Perfetto, ``chrome://tracing``, ``atasker plot``).

::

    pool threads / dispatchers                    trace writer thread
    ──────────────────────────                    ───────────────────
    atasker_task_started  ─┐ append one tuple     wakes when the buffer holds
    atasker_task_finished ─┴─▶ to a deque ──────▶ ``batch`` events, on flush(),
                              (no lock; a full     on close, or every
                               buffer waits for    ``flush_interval`` s
                               the writer)           │
                                                     ▼
                                     sort the batch by time ─▶ pool slots
                                     ─▶ one JSON line per event ─▶ file
    atasker_supervisor_stopped ─▶ close(): the rest, then ``]``; unregister

Trace layout: one *process* per task type (``"thread"``, ``"mp"``, ...), one
*thread* per pool slot (``"slot 1"``, ``"slot 2"``, ...).  A task takes the
lowest slot of its task type that was free when it started and frees it
when it ends, so no two slices overlap on a track and the number of tracks
shows how far the pool grew.  Each started task is one complete (``"X"``)
slice named after the task; its category is the priority name, its colour
(``cname``) follows the priority, and its args hold ``id``, ``priority``,
``wait_ms`` (time waiting for a slot, without ``delay``), ``outcome`` and
``tt``.  A task cancelled while queued is an instant (``"i"``) event on its
task type's ``queue`` track.

The hooks only append a tuple of the task's fields to a ``collections.deque``
(atomic under the GIL: no lock, no contention between pool threads); the
writer thread does the rest.  Memory stays bounded: once ``batch`` events
wait, a hook waits for the writer (back-pressure) instead of letting the
buffer grow, so at most ``2 * batch`` events are held (plus one per thread
appending at that very moment).  The file is a JSON array written
incrementally; :meth:`TraceRecorder.close` (called by the recorder's own
``atasker_supervisor_stopped``) writes the closing bracket.  A file cut
short by a crash still loads in ``chrome://tracing`` and in
:func:`atasker.builtin.trace.plot.load_trace`, which both accept an unterminated array.

Off by default: nothing is registered unless ``TaskSupervisor.start(trace=
"run.json")`` or ``ATASKER_TRACE=run.json`` asks for it, so a supervisor
that does not trace runs no trace code at all.
"""

from __future__ import annotations

import bisect
import collections
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from atasker.core.signals import signals_to_main_thread
from atasker.core.task import (
    PRIORITY_COLORS,
    PRIORITY_NAMES,
    TASK_CRITICAL,
    TASK_HIGH,
    TASK_LOW,
    TASK_NORMAL,
    Task,
    priority_name,
)
from atasker.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

__all__ = [
    "PLUGIN_NAME",
    "PRIORITY_COLORS",
    "PRIORITY_NAMES",
    "TRACE_CNAMES",
    "TraceRecorder",
    "attach",
    "get_recorder",
    "open_recorder",
    "priority_name",
    "trace_path",
]

logger = logging.getLogger("atasker")

#: The name a recorder is registered under by ``start(trace=...)``.
PLUGIN_NAME = "atasker.trace"

#: Slice colours per band: a reserved colour name of the trace viewer
#: (``cname``), so that ``chrome://tracing`` shows the priorities.
TRACE_CNAMES = {
    TASK_CRITICAL: "terrible",  # rgb(180, 0, 0)
    TASK_HIGH: "rail_idle",  # rgb(238, 142, 0)
    TASK_NORMAL: "rail_response",  # rgb(67, 135, 253)
    TASK_LOW: "rail_load",  # rgb(13, 168, 97)
}

#: Events per batch; the recorder holds at most twice this many.
DEFAULT_BATCH = 4096
#: Seconds after which buffered events are written anyway, so that a
#: long-running service's trace is at most this stale on disk.
DEFAULT_FLUSH_INTERVAL = 1.0

_QUEUE_TID = 0  # the per-task-type track of tasks cancelled while queued

# The fixed fields of a slice per band, rendered once.
_BAND_FIELDS = {band: f'"cat":"{name}","cname":"{TRACE_CNAMES[band]}"' for band, name in PRIORITY_NAMES.items()}
# JSON string quoting, the C function json.dumps itself uses for a str.
_encode_string = json.encoder.encode_basestring_ascii

# Buffered event kinds.  A start is (kind, id, tt, time_started, task); an
# end is (kind, id, tt, time_started, time_finished, ready, name, band,
# priority, outcome): fields, not the task, so that the buffer does not keep
# results alive after the writer has seen the end.
_START, _FINISH = 0, 1


def trace_path(template: str | os.PathLike[str], supervisor_name: str) -> Path:
    """Expand ``{pid}`` and ``{name}`` in a trace path template.

    ``ATASKER_TRACE`` applies to every supervisor that starts in the
    process; ``ATASKER_TRACE=trace-{name}-{pid}.json`` gives each its file.
    Characters that cannot appear in a file name are replaced in the
    supervisor name.
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in supervisor_name)
    return Path(os.fspath(template).replace("{pid}", str(os.getpid())).replace("{name}", safe))


def get_recorder(supervisor: TaskSupervisor) -> TraceRecorder | None:
    """The recorder ``start(trace=...)`` registered on *supervisor*, if any."""
    plugin = supervisor.plugin_manager.get_plugin(PLUGIN_NAME)
    return plugin if isinstance(plugin, TraceRecorder) else None


class _Slots:
    """Slot numbers of one task type (writer thread only).

    A task takes the lowest slot whose last occupant ended at or before the
    task's ``time_started``, or a new slot: so no two slices on a track ever
    overlap, and the number of tracks is, as a rule, the most tasks of the
    type that ran at once.

    Events arrive in hook order, which is not time order: a hook may run a
    little after the moment it reports (a busy machine, the GIL), and the
    supervisor announces the task a finished one made room for *before*
    the finished one's hook.  So the writer sorts each batch by time, and
    :meth:`take` first frees the slots of running tasks whose
    ``time_finished`` (read from the live task) is already set and not
    later than the new start -- across batches too.  When a start arrives
    after later starts were placed, the late task takes the slot of a task
    that started after it (if that slot was free in time) and that task is
    placed again: slices are written only when a task ends, so a running
    task's slot may still change.  Only when the later task has already
    ended (its slice written) does the late one open an extra slot: rare,
    and nothing overlaps.
    """

    __slots__ = ("early", "free", "free_at", "held", "next")

    def __init__(self) -> None:
        self.free: list[int] = []  # free slot numbers below ``next``, sorted
        self.free_at: dict[int, float] = {}  # slot -> when its last occupant ended
        self.next = 1
        # task id -> (slot, time_started, when the slot's previous occupant ended, task)
        self.held: dict[int, tuple[int, float, float, Any]] = {}
        self.early: dict[int, int] = {}  # task id -> slot freed before its end event

    def take(self, task_id: int, started: float, task: Any) -> list[int]:
        """Place a started task; return the slot numbers opened for the first time."""
        if self._take_free(task_id, started, task):
            return []
        # No slot was free by then: free those of tasks that had ended by then
        # but whose end event is still to come (in a later batch).
        held = self.held
        ended = [i for i, (_, _, _, t) in held.items() if t.time_finished is not None and t.time_finished <= started]
        for other_id in ended:
            n, _, _, other = held.pop(other_id)
            self.early[other_id] = n
            self._free(n, other.time_finished)
        return self._place(task_id, started, task)

    def _take_free(self, task_id: int, started: float, task: Any) -> bool:
        free_at = self.free_at
        for i, n in enumerate(self.free):
            if free_at[n] <= started:
                del self.free[i]
                self.held[task_id] = (n, started, free_at[n], task)
                return True
        return False

    def _place(self, task_id: int, started: float, task: Any) -> list[int]:
        if self._take_free(task_id, started, task):
            return []
        held = self.held
        victim = None
        for other_id, (n, other_started, prev_end, other) in held.items():
            if prev_end <= started < other_started and (victim is None or n < victim[0]):
                victim = (n, other_id, other_started, prev_end, other)
        if victim is not None:
            n, other_id, other_started, prev_end, other = victim
            del held[other_id]
            held[task_id] = (n, started, prev_end, task)
            return self._place(other_id, other_started, other)  # it started later: this ends
        n = self.next
        self.next += 1
        held[task_id] = (n, started, 0.0, task)
        return [n]

    def _free(self, n: int, when: float) -> None:
        bisect.insort(self.free, n)
        self.free_at[n] = when

    def release(self, task_id: int, finished: float) -> int | None:
        """Free a task's slot; return it (``None``: its start was not seen)."""
        entry = self.held.pop(task_id, None)
        if entry is None:
            return self.early.pop(task_id, None)
        self._free(entry[0], finished)
        return entry[0]


class TraceRecorder:
    """A lifecycle-observer plugin that streams a Chrome trace-event file.

    Usually created by ``TaskSupervisor.start(trace="run.json")``; it can
    also be registered by hand, on one supervisor::

        recorder = TraceRecorder("run.json")
        supervisor.register_plugin(recorder)

    The file is opened (truncated) at once.  The recorder closes the file and
    unregisters itself when the supervisor stops; :meth:`close` closes it
    earlier (events after that are ignored).  Tasks that were already
    running when the recorder was registered have no slot and are left out
    (counted in :attr:`unseen`).

    :param path: the JSON file to write.
    :param batch: events the writer takes at once; the memory bound is
        ``2 * batch`` events.
    :param flush_interval: seconds after which buffered events are written
        even if fewer than ``batch`` wait.
    :param label: written into the trace's first event (``supervisor``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch: int = DEFAULT_BATCH,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        label: str = "",
    ) -> None:
        if type(batch) is not int or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        if not (isinstance(flush_interval, (int, float)) and flush_interval > 0):
            raise ValueError(f"flush_interval must be a number of seconds > 0, got {flush_interval!r}")
        self.path = Path(path)
        self.batch = batch
        self.flush_interval = float(flush_interval)
        #: ``time.time()`` of trace timestamp 0.
        self.epoch = time.time()
        #: Most events seen held at once (waiting plus being written), measured
        #: whenever the buffer is full and when the writer takes a batch.
        self.peak_buffered = 0
        #: Tasks that finished without a recorded start (already running
        #: when the recorder was registered); they have no slice.
        self.unseen = 0
        self._events: collections.deque[tuple[Any, ...]] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._in_writer = 0  # events the writer holds now
        self._written = 0  # buffered events processed (starts and ends)
        self._flush_requests = 0
        self._flushed = 0
        self._closing = False
        self._closed = False
        self._slots: dict[str, _Slots] = {}
        self._pids: dict[str, int] = {}
        self._queue_tracks: set[str] = set()
        self._quoted: dict[Any, str] = {}
        # Opened here, so that a bad path fails in start(), not in a hook.
        self._file: IO[str] = open(self.path, "w", encoding="utf-8")  # the writer thread closes it
        head = {"epoch": self.epoch, "supervisor": label, "pid": os.getpid()}
        self._file.write(
            f'[\n{{"name":"atasker trace","ph":"i","s":"g","ts":0,"pid":0,"tid":0,"args":{json.dumps(head)}}}'
        )
        self._writer = threading.Thread(target=self._run, name=f"atasker_trace:{self.path.name}", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ hooks

    @hookimpl
    def atasker_task_started(self, task: Task) -> None:
        """Buffer the start (the writer thread places the task on a slot)."""
        if self._closing:
            return
        events = self._events
        # The task itself too: the writer reads its time_finished (see _Slots)
        # and drops it once it has seen the task end.
        events.append((_START, task.id, task.tt, task.time_started, task))
        if len(events) >= self.batch:
            self._full()

    @hookimpl
    def atasker_task_finished(self, task: Task) -> None:
        """Buffer the task's slice (or its cancellation while queued)."""
        if self._closing:
            return
        events = self._events
        queued = task.time_queued
        events.append(
            (
                _FINISH,
                task.id,
                task.tt,
                task.time_started,
                task.time_finished or time.time(),
                # When it was ready to start: queued, plus any delay.
                None if queued is None else queued + (task.delay or 0.0),
                task.name,
                task.band,
                task.priority,
                task.outcome,
            )
        )
        if len(events) >= self.batch:
            self._full()

    @hookimpl
    def atasker_supervisor_stopped(self, supervisor: TaskSupervisor) -> None:
        """Write what is left, close the file and unregister."""
        self.close()
        if supervisor.plugin_manager.is_registered(self):
            supervisor.unregister_plugin(self)

    # ------------------------------------------------------------- buffering

    def _full(self) -> None:
        """A hook found ``batch`` events waiting: wake the writer, wait for room."""
        with self._cond:
            held = len(self._events) + self._in_writer
            if held > self.peak_buffered:
                self.peak_buffered = held
            self._cond.notify_all()
            # Back-pressure: while the writer works on one batch, at most
            # one more may wait; this thread waits rather than add to it.
            while len(self._events) >= self.batch and not self._closed:
                self._cond.wait()

    def flush(self, timeout: float | None = None) -> bool:
        """Write every event buffered so far to the file; ``False`` on timeout."""
        with self._cond:
            self._flush_requests += 1
            ticket = self._flush_requests
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._flushed >= ticket or self._closed, timeout)

    def close(self) -> None:
        """Write the buffered events and the closing ``]``; close the file.

        Idempotent; events arriving afterwards are ignored.  Called by the
        recorder's ``atasker_supervisor_stopped`` hook.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._writer is not threading.current_thread():
            self._writer.join()

    @property
    def closed(self) -> bool:
        """Whether the file is complete (closing bracket written)."""
        return self._closed

    def stats(self) -> dict[str, Any]:
        """Counters: events processed, buffered now and at most, the bound, unseen tasks."""
        with self._cond:
            return {
                "path": str(self.path),
                "written": self._written,
                "buffered": len(self._events) + self._in_writer,
                "peak_buffered": self.peak_buffered,
                "max_buffered": 2 * self.batch,
                "running": sum(len(slots.held) for slots in self._slots.values()),
                "unseen": self.unseen,
                "closed": self._closed,
            }

    # ---------------------------------------------------------------- writer

    def _run(self) -> None:
        signals_to_main_thread()  # Ctrl-C goes to the main thread
        cond, events = self._cond, self._events
        try:
            while True:
                with cond:
                    if not (self._closing or len(events) >= self.batch or self._flush_requests > self._flushed):
                        cond.wait(self.flush_interval)
                    ticket, closing = self._flush_requests, self._closing
                    # A flush() is done once the events present now are written,
                    # even if more keep coming.
                    pending = len(events)
                    if not pending:
                        self._flushed = max(self._flushed, ticket)
                        cond.notify_all()
                while events:
                    chunk = [events.popleft() for _ in range(min(self.batch, len(events)))]
                    with cond:
                        self._in_writer = len(chunk)
                        if len(chunk) > self.peak_buffered:
                            self.peak_buffered = len(chunk)
                        cond.notify_all()  # room for the hooks that wait
                    try:
                        self._file.write(self._lines(chunk))
                        self._file.flush()
                    except Exception:  # a full disk must not break the tasks
                        logger.exception("atasker trace: writing %s failed", self.path)
                    pending -= len(chunk)
                    with cond:
                        self._in_writer = 0
                        self._written += len(chunk)
                        if pending <= 0:
                            self._flushed = max(self._flushed, ticket)
                        cond.notify_all()
                if closing:
                    break
            self._file.write("\n]\n")
        except Exception:
            logger.exception("atasker trace: writing %s failed", self.path)
        finally:
            try:
                self._file.close()
            finally:
                with cond:
                    self._closed = True
                    cond.notify_all()

    def _lines(self, chunk: list[tuple[Any, ...]]) -> str:
        """Place a batch on slots, in time order, and render its trace events."""
        # Time order; at equal times, buffer order (a task's start before its
        # end): sorted() is stable.
        times = [e[3] if e[0] == _START else e[4] for e in chunk]
        out: list[str] = []
        epoch, quote, slot_map, pids = self.epoch, self._quote, self._slots, self._pids
        for i in sorted(range(len(chunk)), key=times.__getitem__):
            event = chunk[i]
            tt = event[2]
            slots = slot_map.get(tt)
            if slots is None:
                slots = self._new_task_type(tt, out)
            pid = pids[tt]
            if event[0] == _START:
                for n in slots.take(event[1], event[3], event[4]):
                    out.append(self._thread_meta(pid, n))
                continue
            _, task_id, _, started, finished, ready, name, band, priority, outcome = event
            if started is not None:
                slot = slots.release(task_id, finished)
                if slot is None:
                    self.unseen += 1
                    continue
                ph = f'"ph":"X","ts":{(started - epoch) * 1e6:.1f},"dur":{max(0.0, finished - started) * 1e6:.1f}'
            else:  # cancelled while queued or delayed
                slot, started = _QUEUE_TID, finished
                if tt not in self._queue_tracks:
                    self._queue_tracks.add(tt)
                    out.append(self._thread_meta(pid, _QUEUE_TID))
                ph = f'"ph":"i","s":"t","ts":{(finished - epoch) * 1e6:.1f}'
            wait = (started - ready) * 1e3 if ready is not None and started > ready else 0.0
            out.append(
                f'{{"name":{quote(name)},{_BAND_FIELDS[band]},{ph},"pid":{pid},"tid":{slot},"args":{{"id":{task_id},'
                f'"priority":{priority},"wait_ms":{wait:.3f},"outcome":{quote(outcome or "cancelled")},'
                f'"tt":{quote(tt)}}}}}'
            )
        return "".join(",\n" + line for line in out)

    def _quote(self, text: Any) -> str:
        """*text* as a JSON string (cached: task names repeat)."""
        cache = self._quoted
        quoted = cache.get(text)
        if quoted is None:
            if len(cache) >= 4096:  # bounded: unique names must not grow it forever
                cache.clear()
            quoted = cache[text] = _encode_string(str(text))
        return quoted

    def _new_task_type(self, tt: str, out: list[str]) -> _Slots:
        slots = self._slots[tt] = _Slots()
        pid = self._pids[tt] = len(self._pids) + 1
        name = json.dumps(tt)
        out.append(f'{{"name":"process_name","ph":"M","pid":{pid},"tid":0,"args":{{"name":{name}}}}}')
        out.append(f'{{"name":"process_sort_index","ph":"M","pid":{pid},"tid":0,"args":{{"sort_index":{pid}}}}}')
        return slots

    @staticmethod
    def _thread_meta(pid: int, tid: int) -> str:
        name = "queue" if tid == _QUEUE_TID else f"slot {tid}"
        return (
            f'{{"name":"thread_name","ph":"M","pid":{pid},"tid":{tid},"args":{{"name":"{name}"}}}},\n'
            f'{{"name":"thread_sort_index","ph":"M","pid":{pid},"tid":{tid},"args":{{"sort_index":{tid}}}}}'
        )

    def __repr__(self) -> str:
        return f"<TraceRecorder {str(self.path)!r} {'closed' if self._closed else 'open'}>"


def open_recorder(supervisor: TaskSupervisor, trace: str | os.PathLike[str] | None) -> TraceRecorder | None:
    """For ``TaskSupervisor.start``: a recorder for *trace* or ``ATASKER_TRACE``.

    ``None`` (and nothing imported or registered) when neither asks for a
    trace.  The file is opened here, so that a bad path raises in
    ``start()`` before the supervisor changes state.
    """
    template = trace if trace is not None else os.environ.get("ATASKER_TRACE") or None
    if not template:
        return None
    return TraceRecorder(trace_path(template, supervisor.name), label=supervisor.name)


def attach(supervisor: TaskSupervisor, trace: str | os.PathLike[str]) -> TraceRecorder:
    """Start tracing a running *supervisor* to *trace* (``start(trace=...)`` when active).

    :raises ValueError: it already traces to another file.
    """
    path = trace_path(trace, supervisor.name)
    current = get_recorder(supervisor)
    if current is not None and not current._closing:
        if current.path == path:
            return current
        raise ValueError(f"supervisor {supervisor.name!r} already traces to {current.path}; stop it first")
    if current is not None:
        supervisor.unregister_plugin(current)
    recorder = TraceRecorder(path, label=supervisor.name)
    supervisor.register_plugin(recorder, name=PLUGIN_NAME)
    return recorder
