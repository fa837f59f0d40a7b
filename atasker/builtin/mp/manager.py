"""The parent side of the process pool: worker processes and the manager thread.

::

    any thread (start, cancel, resize)        manager thread
    ──────────────────────────────────        ──────────────────────────────────────
    idle worker? send the task ──▶ pipe       poll(reply pipes, sentinels, wake pipe,
    none: pending, wake ──────────▶ wake        timeout = next deadline)
                                                ├ reply ─▶ unpickle ─▶ worker idle ─▶ task_done
                                                ├ sentinel ─▶ died ─▶ task_done(error), replace
                                                ├ wake ─▶ spawn workers for pending tasks
                                                └ deadline ─▶ kill (timeout, exit grace), retire idle

:class:`WorkerManager` owns the workers and the manager thread;
:class:`~atasker.builtin.mp.MPExecutor` adds the executor protocol on top.
Every worker has its own two pipes and runs one task at a time, so a worker
that dies takes only its own task with it.  The thread sleeps in ``epoll``
(``poll`` elsewhere), so a reply or a death is handled at once; timeouts,
idle retirement and kill graces are deadlines on the supervisor's timer.

Locks: ``_lock`` guards the worker sets and the pending deque; it is never
held while the supervisor or user code runs, nor while sending.
``Worker.send_lock`` is held while sending to a worker and while the
manager closes its pipes, so that a descriptor is never closed (and its
number reused) under a sender.  Order: ``send_lock`` before ``_lock``.
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

from atasker.builtin.mp.api import ProcessDiedError, RemoteTraceback, TaskPicklingError
from atasker.builtin.mp.spawn import Poller, Worker, describe_exit, grow_pipe, start_worker_process
from atasker.builtin.mp.worker import ERROR, EXIT, FAILED, HEADER, INIT_FAILED, OK, READY, frame_end, send_msg
from atasker.core.signals import signals_to_main_thread

if TYPE_CHECKING:
    from atasker.core.task import SupervisorAPI, Task

__all__ = ["Worker", "WorkerManager"]

logger = logging.getLogger("atasker")

#: Seconds a worker asked to exit may take before it is killed (a task may
#: have left a non-daemon thread behind, which would keep it alive).
EXIT_GRACE = 3.0
#: Seconds between a worker closing its reply pipe and it being killed, if
#: it has not exited by itself by then.
EOF_GRACE = 1.0
_CHUNK = 1 << 16
_READ, _SENTINEL = 0, 1


class WorkerManager:
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
        self._thread = threading.Thread(target=self._run, name=f"atasker_mp_{supervisor.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ any thread

    def _send(self, w: Worker, data: bytes) -> None:
        with w.send_lock:
            conn = w.wconn
            if conn is None:
                return  # already dead: the manager reports its task
            try:
                send_msg(conn.fileno(), data)
            except OSError:
                # The worker is dying; its sentinel fires and the manager
                # reports the task it was given.
                with self._lock:
                    self._kill(w)

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
        return self._push_deadline(time.monotonic() + task.timeout, "timeout", w, task)

    def _arm_idle(self, w: Worker) -> None:
        """Check *w* for retirement once idle ``idle_timeout`` (``_lock`` held).

        One pending check per worker at most, so that a busy stream of tasks
        on reserve workers does not pile up deadlines.
        """
        w.idle_armed = True
        self._push_deadline(w.idle_since + self._idle_timeout, "idle", w, None)

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
        for w in victims:
            self._send(w, EXIT)
        with self._lock:
            when = time.monotonic() + EXIT_GRACE
            wake = False
            for w in victims:
                wake = self._push_deadline(when, "kill", w, None) or wake
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

    def _assign(self, w: Worker, task: Task) -> bytes:
        """Give a task to *w* (``_lock`` held); the caller sends the returned bytes."""
        data: bytes = task.executor_data  # the pickled call, set by validate()
        w.task = task
        task.executor_data = w
        if task.timeout is not None and w.ready:
            self._arm_timeout(w, task)
        return data

    # ------------------------------------------------------------ manager thread

    def _run(self) -> None:
        signals_to_main_thread()  # Ctrl-C goes to the main thread
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
        dead = []
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
                continue
            kind, w = entry
            if kind == _READ:
                self._read(w)
            else:
                dead.append(w)
        for w in dead:
            self._on_death(w)
        if self._pending or self._spawn_requests:
            self._service()
        return True

    def _read(self, w: Worker) -> bool:
        """A reply pipe is readable (non-blocking): handle every complete message.

        Returns ``False`` if there was nothing to read.
        """
        try:
            chunk = os.read(w.rfd, _CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            # Closed without dying (yet)?  Give it EOF_GRACE to exit.
            w.eof = True
            self._poller.unregister(w.rfd)
            del self._fds[w.rfd]
            with self._lock:
                self._push_deadline(time.monotonic() + EOF_GRACE, "kill", w, None)
            return True
        buf = w.rbuf
        if not buf and len(chunk) == frame_end(chunk):
            self._on_reply(w, chunk[HEADER:])  # the usual case: exactly one message
            return True
        buf += chunk
        while len(buf) >= HEADER:
            end = frame_end(buf)
            if len(buf) < end:
                if len(chunk) == _CHUNK:  # more is waiting, read it now
                    try:
                        chunk = os.read(w.rfd, end - len(buf))
                    except OSError:
                        return True  # the rest comes with the next readiness
                    if chunk:
                        buf += chunk
                        continue
                return True
            data = bytes(buf[HEADER:end])
            del buf[:end]
            self._on_reply(w, data)
        return True

    def _on_reply(self, w: Worker, data: bytes) -> None:
        try:
            msg = pickle.loads(data)
        except BaseException as exc:  # even SystemExit from a __reduce__: only this task fails
            msg = (
                FAILED,
                f"its outcome could not be unpickled in the parent process: {type(exc).__name__}: {exc}",
                None,
            )
        tag = msg[0]
        if tag == READY:
            with self._lock:
                w.ready = True
                self._changed.notify_all()
                task = w.task
                wake = task is not None and task.timeout is not None and w.fate is None and self._arm_timeout(w, task)
            if wake:
                self._wake()
            return
        if tag == INIT_FAILED:
            w.init_error = msg[1]
            return
        retire = False
        with self._lock:
            task = w.task
            if task is None:
                return
            w.task = None
            w.ntasks += 1
            fate = w.fate
            if fate is None:
                # Idle again *before* the supervisor hears of it, so that the
                # task it starts next goes to this worker.
                retire = self._park(w)
        if retire:
            self._retire([w])
        self._report(task, w, fate, msg)

    def _report(self, task: Task, w: Worker, fate: str | None, msg: Any, exitcode: Any = None) -> None:
        """Resolve a task through the supervisor (never with ``_lock`` held)."""
        done = self._supervisor.task_done
        if fate is None and msg is not None and msg[0] == OK:
            done(task, result=msg[1])
        elif fate == "cancel":
            self._count("cancelled")
            done(task, cancelled=True)
        elif fate == "timeout":
            self._count("timeouts")
            done(
                task,
                exception=TimeoutError(
                    f"process task {task.id} ({task.name}) did not finish within its timeout of "
                    f"{task.timeout} s; its worker process {w.pid} was killed"
                ),
            )
        elif msg is None:
            message = f"worker process {w.pid} running process task {task.id} ({task.name}) died: it " + describe_exit(
                exitcode
            )
            if w.init_error:
                message += f"; its initializer raised:\n{w.init_error}"
            elif not w.ready:
                message += " before it was ready (see its output on stderr)"
            done(task, exception=ProcessDiedError(message, w.pid, exitcode))
        elif msg[0] == ERROR:
            exc = msg[1]
            exc.__cause__ = RemoteTraceback(msg[2])
            done(task, exception=exc)
        else:
            error = TaskPicklingError(f"process task {task.id} ({task.name}): {msg[1]}")
            if msg[2]:
                error.__cause__ = RemoteTraceback(msg[2])
            done(task, exception=error)

    def _on_death(self, w: Worker) -> None:
        # A reply written just before it died is still in the pipe.
        while w.task is not None and not w.eof and self._read(w):
            pass
        if not w.eof:
            self._poller.unregister(w.rfd)
            del self._fds[w.rfd]
        self._poller.unregister(w.sentinel)
        del self._fds[w.sentinel]
        with self._lock:
            w.dead = True
        with w.send_lock:
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
        with self._lock:
            self._workers.discard(w)
            self._changed.notify_all()
            if w.retiring:
                self._retiring -= 1
            elif w in self._idle:
                self._idle.remove(w)
            task, w.task = w.task, None
            fate = w.fate
            if not self._closing and w.ready and len(self._workers) < self._target:
                self._spawn_requests += 1  # replaced after the report, in _service
        if task is None:
            if not w.retiring and not self._closing and w.fate is None:
                logger.warning("atasker: idle worker process %s %s; replacing it", w.pid, describe_exit(exitcode))
            return
        self._count("died")
        self._report(task, w, fate, None, exitcode)

    def _service(self) -> None:
        """Give pending tasks a worker (idle or new); start requested workers."""
        while True:
            data = None
            with self._lock:
                if not self._pending:
                    break
                if self._idle:
                    w = self._idle.pop()
                    data = self._assign(w, self._pending.popleft())
            if data is not None:
                self._send(w, data)
                continue
            try:
                w = self._spawn()
            except Exception as exc:
                with self._lock:
                    task = self._pending.popleft() if self._pending else None
                if task is not None:
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
        data = None
        retire = False
        with self._lock:
            if self._pending:
                data = self._assign(w, self._pending.popleft())
            else:
                retire = self._park(w)
        if data is not None:
            self._send(w, data)
        elif retire:
            self._retire([w])

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
            tasks = [w.task for w in self._workers if w.task is not None] + list(self._pending)
            for w in self._workers:
                w.task = None
                self._kill(w)
            self._pending.clear()
        for task in tasks:
            self._supervisor.task_done(task, exception=ProcessDiedError(f"process pool manager failed: {exc!r}"))
