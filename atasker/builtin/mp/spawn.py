"""One worker process, parent side: starting it, its pipes, its record, and
the poller the manager thread waits in."""

from __future__ import annotations

import collections
import contextlib
import os
import select
import signal
import threading
from typing import TYPE_CHECKING, Any

from atasker.builtin.mp import worker as mp_worker
from atasker.builtin.mp.api import ProcessDiedError, RemoteTraceback, TaskPicklingError
from atasker.builtin.mp.worker import ERROR, OK, worker_main

if TYPE_CHECKING:
    from atasker.core.task import Task

__all__ = ["BOOT", "PIPE_SIZE", "Poller", "Worker", "describe_exit", "grow_pipe", "outcome", "start_worker_process"]

#: Pipe buffer asked for (Linux ``F_SETPIPE_SZ``): sending a task of moderate
#: size to an idle or starting worker then never blocks the sending thread.
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031

#: What a spawned or forkserver worker runs (``exec`` is its target): load
#: ``mp_worker.py`` by path, without the ``atasker`` package, whose import
#: (asyncio, pluggy, importlib.metadata, ...) would multiply a worker's
#: start-up time; the worker loop needs only the standard library.
BOOT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("_atasker_mp_worker", path)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
del spec, importlib, sys
module.worker_main(*args)
"""


def grow_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, OSError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default will do


def describe_exit(exitcode: int | None) -> str:
    """``exited with code 3`` / ``was killed by SIGKILL (exit code -9)``."""
    if exitcode is None:
        return "ended (exit status unknown)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name} (exit code {exitcode})"
    return f"exited with code {exitcode}"


def outcome(task: Task, w: Worker, fate: str | None, msg: Any, exitcode: Any = None) -> dict[str, Any]:
    """The ``task_done`` keywords for what became of a task on worker *w*.

    :param fate: ``"cancel"`` / ``"timeout"`` if its worker was killed on purpose.
    :param msg: its reply, or ``None`` if the worker died without one.
    :param exitcode: the dead worker's exit code.
    """
    if fate is None and msg is not None and msg[0] == OK:
        return {"result": msg[1]}
    if fate == "cancel":
        return {"cancelled": True}
    if fate == "timeout":
        return {
            "exception": TimeoutError(
                f"process task {task.id} ({task.name}) did not finish within its timeout of "
                f"{task.timeout} s; its worker process {w.pid} was killed"
            )
        }
    if msg is None:
        message = f"worker process {w.pid} running process task {task.id} ({task.name}) died: it "
        message += describe_exit(exitcode)
        if w.init_error:
            message += f"; its initializer raised:\n{w.init_error}"
        elif not w.ready:
            message += " before it was ready (see its output on stderr)"
        return {"exception": ProcessDiedError(message, w.pid, exitcode)}
    if msg[0] == ERROR:
        exc = msg[1]
        exc.__cause__ = RemoteTraceback(msg[2])
        return {"exception": exc}
    error = TaskPicklingError(f"process task {task.id} ({task.name}): {msg[1]}")
    if msg[2]:
        error.__cause__ = RemoteTraceback(msg[2])
    return {"exception": error}


def cloudpickle_fork_guard() -> Any:
    """Hold cloudpickle's class-tracker lock across a fork.

    A forked worker inherits every lock and every dict as they are at that
    instant; if another thread were pickling a class by value just then, the
    worker would find the tracker half-updated and its lock held forever.
    Held here, the tracker is consistent; the worker replaces the lock (see
    ``mp_worker._after_fork``).
    """
    import cloudpickle.cloudpickle as cp

    return getattr(cp, "_DYNAMIC_CLASS_TRACKER_LOCK", None) or contextlib.nullcontext()


class Poller:
    """``epoll`` where there is one, else ``poll``: level-triggered, read events."""

    def __init__(self) -> None:
        if hasattr(select, "epoll"):
            self._poller: Any = select.epoll()
            self._mask = select.EPOLLIN
            self._scale = 1.0
        else:
            self._poller = select.poll()
            self._mask = select.POLLIN
            self._scale = 1000.0  # poll() takes milliseconds

    def register(self, fd: int) -> None:
        self._poller.register(fd, self._mask)

    def register_write(self, fd: int) -> None:
        """Wait for *fd* to be writable (a pipe with room again)."""
        self._poller.register(fd, select.EPOLLOUT if self._scale == 1.0 else select.POLLOUT)

    def unregister(self, fd: int) -> None:
        self._poller.unregister(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        events: list[tuple[int, int]] = self._poller.poll(-1 if timeout is None else timeout * self._scale)
        return events

    def fileno(self) -> int:
        return self._poller.fileno() if hasattr(self._poller, "fileno") else -1

    def close(self) -> None:
        if hasattr(self._poller, "close"):
            self._poller.close()


class Worker:
    """One worker process, its two pipes, and the tasks sent to it.

    ``task`` is the task it runs (or starts next: the head of its window);
    ``ahead`` the tasks sent behind it, not started, in the order sent (the
    worker runs them in that order).  ``outbox`` holds bytes not yet written
    to its task pipe: if the pipe is full, the manager thread writes them
    when it has room, so that no thread ever blocks on a worker.
    """

    __slots__ = (
        "ahead",
        "dead",
        "eof",
        "fate",
        "generation",
        "head_since",
        "idle_armed",
        "idle_since",
        "init_error",
        "ntasks",
        "outbox",
        "pid",
        "proc",
        "rbuf",
        "rconn",
        "ready",
        "retiring",
        "rfd",
        "send_lock",
        "sentinel",
        "skipping",
        "task",
        "wconn",
        "wfd",
        "writing",
    )

    def __init__(self, proc: Any, rconn: Any, wconn: Any, generation: int) -> None:
        self.proc = proc
        self.pid: int = proc.pid
        self.sentinel: int = proc.sentinel
        self.rconn = rconn  # replies from the worker (the Connection owns the descriptor)
        self.wconn = wconn  # tasks to the worker (non-blocking)
        self.rfd: int = rconn.fileno()
        self.wfd: int = wconn.fileno()
        self.rbuf = bytearray()  # reply bytes read past the last complete message
        self.generation = generation
        self.send_lock = threading.Lock()
        # Messages not yet written to the task pipe, in window order.
        self.outbox: collections.deque[Any] = collections.deque()
        self.writing = False  # the pipe is full: the manager writes when it has room
        self.task: Task | None = None
        self.ahead: collections.deque[tuple[Task, bytes]] = collections.deque()
        self.skipping: set[int] = set()  # ids of tasks in ``ahead`` cancelled: skip requested
        self.head_since = 0.0  # when ``task`` became the head (for the window's estimate)
        self.fate: str | None = None  # "cancel" / "timeout": killed on purpose
        self.ready = False
        self.dead = False
        self.eof = False
        self.retiring = False
        self.ntasks = 0
        self.idle_since = 0.0
        self.idle_armed = False  # an "idle" deadline is pending for it
        self.init_error: str | None = None

    def load(self) -> int:
        """Tasks sent to it and not answered."""
        return len(self.ahead) + (self.task is not None)


def start_worker_process(
    ctx: Any,
    start_method: str,
    task_r: Any,
    task_w: Any,
    reply_r: Any,
    reply_w: Any,
    init: bytes | None,
    close: tuple[int, ...],
    name: str,
) -> Any:
    """Start one worker process on the two pipes; return the process.

    The child's ends are closed here once it runs.  A forked child runs the
    worker loop directly and closes *close* (the parent's descriptors it
    inherits, and the parent's ends of its own pipes); a spawned or
    forkserver child loads ``worker.py`` by path (:data:`BOOT`).
    """
    args: tuple[Any, ...] = (task_r, reply_w, init, ())
    fork_guard: Any = contextlib.nullcontext()
    if start_method == "fork":  # already imported here: nothing to gain from BOOT
        target: Any = worker_main
        args = (task_r, reply_w, init, (*close, task_w.fileno(), reply_r.fileno()))
        fork_guard = cloudpickle_fork_guard()
    elif os.path.isfile(mp_worker.__file__):
        target, args = exec, (BOOT, {"path": mp_worker.__file__, "args": args})
    else:  # imported from a zip: no file to load by path
        target = worker_main
    proc = ctx.Process(
        target=target,
        args=args,
        name=name,
        daemon=False,  # tasks may start processes of their own
    )
    try:
        with fork_guard:
            proc.start()
    except BaseException:
        task_w.close()
        reply_r.close()
        raise
    finally:
        task_r.close()
        reply_w.close()
    return proc
