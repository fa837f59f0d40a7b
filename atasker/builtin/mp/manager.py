"""The parent side of the process pool: worker processes and the manager thread.

::

    any thread (start, cancel, resize)        manager thread
    ──────────────────────────────────        ──────────────────────────────────────
    a worker with room? send the task ─▶ pipe  poll(reply pipes, sentinels, wake pipe,
    none: pending, wake ──────────────▶ wake     full task pipes)
                                                ├ reply ─▶ match its task id ─▶ next in the
                                                │          window is the head ─▶ task_done
                                                ├ sentinel ─▶ died ─▶ its head fails, the
                                                │          tasks behind it go to others
                                                ├ writable ─▶ write what a full pipe held back
                                                ├ wake ─▶ spawn workers for pending tasks
                                                └ (timer) deadline ─▶ kill (timeout, grace)

:class:`WorkerManager` owns the workers and the manager thread;
:class:`~atasker.builtin.mp.MPExecutor` adds the executor protocol on top.
Every worker has its own two pipes and runs one task at a time, so a worker
that dies takes only its own task with it.

**Window.**  While tasks are short, a worker is sent a few tasks at once
(:mod:`~atasker.builtin.mp.window`); tasks sent ahead that a worker never
started are sent to another worker when it dies, and are skipped (not run)
when cancelled.  Writes never block (:mod:`~atasker.builtin.mp.pipes`).

The thread sleeps in ``epoll`` (``poll`` elsewhere), so a reply or a death
is handled at once; timeouts, idle retirement and kill graces are deadlines
on the supervisor's timer.

Locks: ``_lock`` guards the worker sets, windows and the pending deque; it
is never held while the supervisor or user code runs, nor while sending.
``Worker.send_lock`` is held while writing to a worker and while the
manager closes its pipes, so that a descriptor is never closed (and its
number reused) under a writer.  Order: ``send_lock`` before ``_lock``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import pickle
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from atasker.builtin.mp.api import ProcessDiedError
from atasker.builtin.mp.pipes import _READ, _SENTINEL, _WRITE, PipeIO
from atasker.builtin.mp.spawn import Poller, Worker, describe_exit, grow_pipe, outcome, start_worker_process
from atasker.builtin.mp.window import WindowPolicy
from atasker.builtin.mp.worker import FAILED, INIT_FAILED, NO_TASK, OK, READY, SKIPPED
from atasker.core.signals import signals_to_main_thread

if TYPE_CHECKING:
    from atasker.core.task import SupervisorAPI, Task

__all__ = ["Worker", "WorkerManager", "deadline"]

logger = logging.getLogger("atasker")

#: Seconds a worker asked to exit may take before it is killed (a task may
#: have left a non-daemon thread behind, which would keep it alive).
EXIT_GRACE = 3.0
#: Seconds between a worker closing its reply pipe and it being killed, if
#: it has not exited by itself by then.
EOF_GRACE = 1.0
#: Largest finite number of seconds a deadline is computed from; a longer
#: one (``1e300`` is a valid timeout) waits this long, which is forever.
_FOREVER = 10.0**9


def deadline(seconds: float, since: float | None = None) -> float:
    """The ``time.monotonic()`` deadline *seconds* from *since* (default: now).

    Every deadline of the pool is computed here, from durations validated
    where they were given (finite, > 0): a huge one is clamped so that no
    arithmetic overflows and the wait is forever in practice.
    """
    return (time.monotonic() if since is None else since) + min(seconds, _FOREVER)


class WorkerManager(PipeIO, WindowPolicy):
    """Worker processes, and the thread that watches them, for one supervisor.

    Subclasses set ``_ctx`` / ``_start_method`` / ``_init`` /
    ``_max_tasks`` / ``_idle_timeout`` and keep ``_capacity`` / ``_target``
    up to date; see :class:`~atasker.builtin.mp.MPExecutor`.
    """

    _ctx: Any
    _start_method: str
    _init: bytes | None
    _max_tasks: int | None
    _idle_timeout: float
    _pool: Any  # the supervisor's Pool of this task type (its window is set here)
    #: Most workers at once, and workers kept when idle (``pool_size``).
    _capacity: int
    _target: int

    def _init_manager(self, supervisor: SupervisorAPI) -> None:
        self._supervisor = supervisor
        self._lock = threading.Lock()
        # Notified when a worker becomes ready, retires or dies.
        self._changed = threading.Condition(self._lock)
        self._workers: set[Worker] = set()
        self._idle: list[Worker] = []
        self._pending: collections.deque[Task] = collections.deque()
        self._spawn_requests = 0
        self._retiring = 0
        # Timeouts, idle retirement and kill graces run on the supervisor's
        # timer; the manager thread only waits for replies and deaths.
        self._timer = supervisor.timer
        self._numbers = itertools.count(1)
        self._closing = False
        self._killing = False  # kill_workers: tasks sent ahead end cancelled, not sent again
        self._generation = 0
        self._stats: collections.Counter[str] = collections.Counter()
        self._wake_lock = threading.Lock()
        self._woken = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller = Poller()
        self._poller.register(self._wake_r)
        self._fds: dict[int, tuple[int, Worker]] = {}
        # Workers whose task pipe filled up: the manager waits for room.
        self._blocked: list[Worker] = []
        # Manager thread: while it handles a batch of events, messages for a
        # worker are written once, at the end (one write for several tasks).
        self._batch = False
        self._dirty: set[Worker] = set()
        self._ident = -1
        # The window: tasks per worker now (1 or WINDOW), and short tasks in a row.
        self._window = 1
        self._streak = 0
        self._park_later = False  # manager thread: _unqueue parked a worker that must retire
        self._thread = threading.Thread(target=self._run, name=f"atasker_mp_{supervisor.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ any thread

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    def _kill(self, w: Worker) -> None:
        """SIGKILL a worker.  Call with ``_lock`` held (so that its pid is not reaped yet)."""
        if not w.dead:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(w.pid, signal.SIGKILL)

    def _wake(self) -> None:
        with self._wake_lock:
            if self._woken or self._wake_w < 0:
                return
            self._woken = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")

    def _push_deadline(self, when: float, kind: str, w: Worker, token: Any) -> bool:
        """Schedule a deadline on the supervisor's timer (``_lock`` held).

        Returns ``False``: the timer thread handles it, the manager need not
        wake.  Once the supervisor stopped there is no timer: a kill happens
        at once, other deadlines lapse (``kill_workers`` at exit remains).
        """
        try:
            self._timer.call_at(when, self._deadline_due, kind, w, token)
        except RuntimeError:
            if kind == "kill":
                self._kill(w)
        return False

    def _arm_timeout(self, w: Worker, task: Task) -> bool:
        assert task.timeout is not None
        return self._push_deadline(deadline(task.timeout), "timeout", w, task)

    def _arm_idle(self, w: Worker) -> None:
        """Check *w* for retirement once idle ``idle_timeout`` (``_lock`` held).

        One pending check per worker at most, so that a busy stream of tasks
        on reserve workers does not pile up deadlines.
        """
        w.idle_armed = True
        self._push_deadline(deadline(self._idle_timeout, w.idle_since), "idle", w, None)

    def _take_idle(self, n: int) -> list[Worker]:
        """Take up to *n* idle workers to retire (``_lock`` held), oldest first."""
        victims = self._idle[: max(0, n)]
        del self._idle[: len(victims)]
        for w in victims:
            w.retiring = True
        self._retiring += len(victims)
        if victims:
            self._changed.notify_all()
        return victims

    def _retire(self, victims: list[Worker]) -> None:
        """Ask workers to exit; kill those that have not after ``EXIT_GRACE``."""
        if not victims:
            return
        with self._lock:
            when = deadline(EXIT_GRACE)
            wake = False
            for w in victims:
                self._queue(w, NO_TASK, b"")  # an exit request
                wake = self._push_deadline(when, "kill", w, None) or wake
        for w in victims:
            self._flush_out(w)
        if wake:
            self._wake()

    def _park(self, w: Worker) -> bool:
        """Make a worker without a task idle (``_lock`` held).

        Returns ``True`` if it must retire instead (shutting down, options
        changed, ``max_tasks_per_child`` reached, over capacity): it is then
        marked retiring and the caller calls :meth:`_retire` without the lock.
        """
        if (
            self._closing
            or w.generation != self._generation
            or (self._max_tasks is not None and w.ntasks >= self._max_tasks)
            or len(self._workers) - self._retiring > self._capacity
        ):
            w.retiring = True
            self._retiring += 1
            self._changed.notify_all()
            return True
        self._idle.append(w)
        w.idle_since = time.monotonic()
        if not w.idle_armed and len(self._workers) - self._retiring > self._target:
            self._arm_idle(w)
        return False

    def _assign(self, w: Worker, task: Task) -> None:
        """Give a task to *w* (``_lock`` held); the caller then calls :meth:`_flush_out`."""
        data: bytes = task.executor_data  # the pickled call, set by validate() (or kept, see _on_death)
        task.executor_data = w
        self._queue(w, task.id, data)
        if w.task is None:
            w.task = task
            w.head_since = time.monotonic()
            if task.timeout is not None and w.ready:
                self._arm_timeout(w, task)
        else:
            w.ahead.append((task, data))

    # ------------------------------------------------------------ manager thread

    def _run(self) -> None:
        signals_to_main_thread()  # Ctrl-C goes to the main thread
        self._ident = threading.get_ident()
        # Process tasks' callbacks run here, and every outcome passes through.
        try:
            while self._loop_once():
                pass
        except BaseException as exc:  # a bug here must not leave tasks hanging silently
            self._supervisor.report_internal_error(exc, "process pool manager thread")
            self._fail_all(exc)
        finally:
            with self._wake_lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
            self._poller.close()

    def _loop_once(self) -> bool:
        with self._lock:
            if self._closing and not self._workers and not self._pending:
                return False
        events = self._poller.poll(None)
        dead: list[Worker] = []
        self._batch = True
        try:
            self._handle(events, dead)
            for w in dead:
                self._on_death(w)
            if self._pending or self._spawn_requests:
                self._service()
        finally:
            self._batch = False
            dirty, self._dirty = self._dirty, set()
            for w in dirty:
                self._write_out(w)
        return True

    def _handle(self, events: list[tuple[int, int]], dead: list[Worker]) -> None:
        fds = self._fds
        for fd, _ in events:
            entry = fds.get(fd)
            if entry is None:
                if fd == self._wake_r:
                    with self._wake_lock:
                        self._woken = False
                        with contextlib.suppress(BlockingIOError):
                            while os.read(self._wake_r, 4096):
                                pass
                        blocked, self._blocked = self._blocked, []
                    for w in blocked:
                        if w.wconn is not None and w.wfd not in fds:
                            fds[w.wfd] = (_WRITE, w)
                            self._poller.register_write(w.wfd)
                continue
            kind, w = entry
            if kind == _READ:
                self._read(w)
            elif kind == _WRITE:
                self._flush(w)
            else:
                dead.append(w)

    def _on_eof(self, w: Worker) -> None:
        """Its reply pipe closed without it dying (yet): give it EOF_GRACE to exit."""
        w.eof = True
        self._poller.unregister(w.rfd)
        del self._fds[w.rfd]
        with self._lock:
            self._push_deadline(deadline(EOF_GRACE), "kill", w, None)

    def _on_reply(self, w: Worker, key: int, data: bytes) -> None:
        try:
            msg = pickle.loads(data)
        except BaseException as exc:  # even SystemExit from a __reduce__: only this task fails
            msg = (
                FAILED,
                f"its outcome could not be unpickled in the parent process: {type(exc).__name__}: {exc}",
                None,
            )
        tag = msg[0]
        if key == NO_TASK:
            if tag == READY:
                with self._lock:
                    w.ready = True
                    self._changed.notify_all()
                    task = w.task
                    if task is not None:
                        w.head_since = time.monotonic()
                    wake = (
                        task is not None and task.timeout is not None and w.fate is None and self._arm_timeout(w, task)
                    )
                if wake:
                    self._wake()
            elif tag == INIT_FAILED:
                w.init_error = msg[1]
            return
        retire = False
        skipped = False
        with self._lock:
            task = w.task
            if task is None or task.id != key or tag == SKIPPED:
                # A task skipped on request (cancelled before it started), or
                # a reply for no task of this worker -- dropped.
                task = self._unqueue(w, key) if tag == SKIPPED else None
                if task is None:
                    logger.warning("atasker: worker process %s replied for unknown task %s; ignored", w.pid, key)
                    return
                skipped = True
            else:
                now = time.monotonic()
                self._learn(now - w.head_since)
                w.ntasks += 1
                fate = w.fate
                if w.ahead:
                    # The worker runs the next task in its window now.
                    w.task, _ = w.ahead.popleft()
                    w.head_since = now
                    if w.task.timeout is not None and fate is None and w.ready:
                        self._arm_timeout(w, w.task)
                    if fate is not None:
                        # Being killed for the task that just answered: the
                        # next one may have started, so it is reported as
                        # the task the dead worker ran (not sent again).
                        w.fate = None
                else:
                    w.task = None
                    if fate is None:
                        # Idle again *before* the supervisor hears of it, so
                        # that the task it starts next goes to this worker.
                        retire = self._park(w)
                if task.id in w.skipping:
                    w.skipping.discard(task.id)
                    fate = "cancel"  # its skip request came too late: it ran, and ends cancelled
        if skipped:
            if self._park_later:
                self._park_later = False
                self._retire([w])
            self._count("cancelled")
            self._supervisor.task_done(task, cancelled=True)
            return
        if retire:
            self._retire([w])
        self._report(task, w, fate, msg)

    def _report(self, task: Task, w: Worker, fate: str | None, msg: Any, exitcode: Any = None) -> None:
        """Resolve a task through the supervisor (never with ``_lock`` held)."""
        if fate is None and msg is not None and msg[0] == OK:
            self._supervisor.task_done(task, msg[1])  # the usual case, without building keywords
            return
        if fate is not None:
            self._count("cancelled" if fate == "cancel" else "timeouts")
        self._supervisor.task_done(task, **outcome(task, w, fate, msg, exitcode))

    def _on_death(self, w: Worker) -> None:
        # A reply written just before it died is still in the pipe.
        while (w.task is not None or w.ahead) and not w.eof and self._read(w):
            pass
        if not w.eof:
            self._poller.unregister(w.rfd)
            del self._fds[w.rfd]
        self._poller.unregister(w.sentinel)
        del self._fds[w.sentinel]
        with self._lock:
            w.dead = True
        with w.send_lock:
            if w.wfd in self._fds:
                del self._fds[w.wfd]
                self._poller.unregister(w.wfd)
            w.outbox.clear()
            w.wconn.close()
            w.rconn.close()
            w.wconn = w.rconn = None
        w.proc.join(EXIT_GRACE)
        exitcode = w.proc.exitcode
        if exitcode is None:  # the sentinel fired, so this should not happen
            w.proc.kill()
            w.proc.join()
            exitcode = w.proc.exitcode
        with contextlib.suppress(ValueError):
            w.proc.close()
        cancelled = []
        with self._lock:
            self._workers.discard(w)
            self._changed.notify_all()
            if w.retiring:
                self._retiring -= 1
            elif w in self._idle:
                self._idle.remove(w)
            task, w.task = w.task, None
            fate = w.fate
            # Sent ahead, never started: to another worker, first in line
            # (they were admitted before anything pending).  Those whose
            # cancel asked to skip them end cancelled.
            while w.ahead:
                t, data = w.ahead.pop()
                if t.id in w.skipping or self._killing:
                    cancelled.append(t)
                else:
                    t.executor_data = data
                    self._pending.appendleft(t)
                    self._stats["resent"] += 1
            w.skipping.clear()
            if not self._closing and w.ready and len(self._workers) < self._target:
                self._spawn_requests += 1  # replaced after the report, in _service
        for t in cancelled:
            self._count("cancelled")
            self._supervisor.task_done(t, cancelled=True)
        if task is None:
            if not w.retiring and not self._closing and w.fate is None:
                logger.warning("atasker: idle worker process %s %s; replacing it", w.pid, describe_exit(exitcode))
            return
        self._count("died")
        self._report(task, w, fate, None, exitcode)

    def _service(self) -> None:
        """Give pending tasks a worker (idle, new, or one with room); start requested workers."""
        while True:
            dropped = None
            with self._lock:
                if not self._pending:
                    break
                target = None
                if self._killing:  # interpreter exit: no new workers, pending tasks end cancelled
                    dropped = self._pending.popleft()
                else:
                    target = self._place()
                    if target is not None:
                        self._assign(target, self._take_pending())
                    elif not self._may_spawn():
                        break  # it waits for a worker with room
            if dropped is not None:
                self._count("cancelled")
                self._supervisor.task_done(dropped, cancelled=True)
                continue
            if target is not None:
                self._flush_out(target)
                continue
            try:
                w = self._spawn()
            except Exception as exc:
                with self._lock:
                    failed = self._pending.popleft() if self._pending else None
                if failed is not None:
                    task = failed
                    error = ProcessDiedError(f"could not start a worker process: {type(exc).__name__}: {exc}")
                    self._supervisor.task_done(task, exception=error)
                continue
            self._hand_out(w)
        with self._lock:
            n = 0 if self._closing else min(self._spawn_requests, self._target - len(self._workers))
            self._spawn_requests = 0
        for _ in range(n):
            try:
                w = self._spawn()
            except Exception as exc:
                logger.error("atasker: could not start a worker process: %s: %s", type(exc).__name__, exc)
                break
            self._hand_out(w)

    def _hand_out(self, w: Worker) -> None:
        """A new worker: give it a pending task, or make it idle."""
        retire = False
        with self._lock:
            if self._pending:
                self._assign(w, self._take_pending())
            else:
                retire = self._park(w)
        if retire:
            self._retire([w])
        else:
            self._flush_out(w)

    def _spawn(self) -> Worker:
        ctx = self._ctx
        task_r, task_w = ctx.Pipe(duplex=False)
        reply_r, reply_w = ctx.Pipe(duplex=False)
        grow_pipe(task_w.fileno())
        grow_pipe(reply_w.fileno())
        with self._lock:
            generation = self._generation
            init = self._init
            number = next(self._numbers)
            # A forked child inherits every descriptor of the parent: it
            # closes the parent's ends of all pipes, or a sibling would keep
            # them open after the parent is gone.
            inherited = [fd for w in self._workers if w.wconn is not None for fd in (w.rfd, w.wconn.fileno())]
        close = (*inherited, self._wake_r, self._wake_w, self._poller.fileno())
        proc = start_worker_process(
            ctx,
            self._start_method,
            task_r,
            task_w,
            reply_r,
            reply_w,
            init,
            close,
            name=f"atasker_mp_{self._supervisor.name}_{number}",
        )
        # multiprocessing's resource tracker unblocks SIGINT in the thread
        # that starts a process: block it again (see signals_to_main_thread).
        signals_to_main_thread()
        os.set_blocking(reply_r.fileno(), False)
        os.set_blocking(task_w.fileno(), False)  # see _write_out: no thread blocks on a worker
        w = Worker(proc, reply_r, task_w, generation)
        self._fds[w.rfd] = (_READ, w)
        self._fds[w.sentinel] = (_SENTINEL, w)
        self._poller.register(w.rfd)
        self._poller.register(w.sentinel)
        with self._lock:
            self._workers.add(w)
            self._stats["spawned"] += 1
        return w

    def _deadline_due(self, kind: str, w: Worker, token: Any) -> None:
        """Timer thread: a timeout, an idle check or a kill grace is due."""
        retire = []
        with self._lock:
            if w.dead:
                return
            if kind == "timeout":
                if w.task is token and w.fate is None:
                    w.fate = "timeout"
                    self._kill(w)
            elif kind == "kill":
                self._kill(w)
            elif kind == "idle":
                w.idle_armed = False
                if w not in self._idle or len(self._workers) - self._retiring <= self._target:
                    return  # busy (re-armed when idle again), or needed
                if time.monotonic() - w.idle_since < self._idle_timeout:
                    self._arm_idle(w)  # it worked meanwhile
                else:
                    self._idle.remove(w)
                    w.retiring = True
                    self._retiring += 1
                    self._changed.notify_all()
                    retire.append(w)
        self._retire(retire)

    def _fail_all(self, exc: BaseException) -> None:
        """The manager thread crashed: fail every task it owned, kill every worker."""
        with self._lock:
            self._closing = True
            tasks = [t for w in self._workers for t in ([w.task] if w.task else []) + [t for t, _ in w.ahead]]
            tasks += self._pending
            for w in self._workers:
                w.task = None
                w.ahead.clear()
                self._kill(w)
            self._pending.clear()
        for task in tasks:
            self._supervisor.task_done(task, exception=ProcessDiedError(f"process pool manager failed: {exc!r}"))
