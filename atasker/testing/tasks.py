"""Task-side helpers of the contract suites: a cross-process :class:`Gate`
and module-level task functions.

Everything here is importable without pytest and picklable by reference, so
that process workers (``forkserver``/``spawn``), Dask workers and child
processes can run it.

A :class:`Gate` is a directory with two FIFOs:

* ``release``: the test side holds it open for writing; a waiting task reads
  it and wakes on end-of-file, i.e. when :meth:`Gate.open` closes the test
  side's descriptor.  Nothing polls: threads wait in ``select``, coroutines
  with ``loop.add_reader`` (their loop is never blocked).
* ``entered``: each task that starts waiting writes one byte, so the test
  can wait (:meth:`Gate.wait_entered`) until a task is really running.

:meth:`Gate.open` also creates a marker file first, which waiting tasks
re-check every :data:`RECHECK` seconds: a worker *forked* after the gate was
made inherits the test side's descriptor, which would otherwise keep the
FIFO open for ever.
"""

from __future__ import annotations

import asyncio
import errno
import os
import selectors
import shutil
import sys
import tempfile
import time
from typing import Any

__all__ = [
    "RECHECK",
    "Gate",
    "async_raise_value_error",
    "async_return_value",
    "async_wait_gate",
    "main",
    "raise_value_error",
    "return_value",
    "wait_gate",
]

#: Seconds between re-checks of the "opened" marker while a task waits (a
#: fallback only: an opened gate normally wakes its waiters at once).
RECHECK = 1.0
#: Default seconds a task waits on a gate before it gives up (TimeoutError),
#: so that a test that fails before opening its gate cannot hang a worker.
TASK_WAIT = 120.0

_RELEASE, _ENTERED, _OPENED = "release", "entered", "opened"


class Gate:
    """A one-shot gate tasks block on until the test opens it.

    Works across threads, processes on this host and asyncio loops.  Create
    it in the test (it owns the FIFOs); pass it to tasks as an argument --
    it pickles as its directory path.  Use as a context manager, or call
    :meth:`close`, to open it and remove its files.

    :param directory: an existing, empty directory to use (default: a new
        one under the system temporary directory).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        if directory is None:
            self.directory = tempfile.mkdtemp(prefix="atasker-gate-")
        else:
            self.directory = os.fspath(directory)
            os.makedirs(self.directory, exist_ok=True)
        self._owner = True
        self._entered = 0
        os.mkfifo(self._path(_RELEASE), 0o600)
        os.mkfifo(self._path(_ENTERED), 0o600)
        # Read-write opens of a FIFO never block (Linux): the release FIFO
        # stays "held" while this descriptor lives; the entered FIFO always
        # has a reader, so tasks can write to it without blocking.
        self._hold: int | None = os.open(self._path(_RELEASE), os.O_RDWR)
        self._entered_fd: int | None = os.open(self._path(_ENTERED), os.O_RDWR | os.O_NONBLOCK)

    # ------------------------------------------------------------- pickling

    def __reduce__(self) -> tuple[Any, ...]:
        return (Gate.attach, (self.directory,))

    @classmethod
    def attach(cls, directory: str) -> Gate:
        """The task side of the gate in *directory* (what unpickling returns)."""
        gate = cls.__new__(cls)
        gate.directory = directory
        gate._owner = False
        gate._entered = 0
        gate._hold = gate._entered_fd = None
        return gate

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def __repr__(self) -> str:
        return f"<Gate {self.directory} {'open' if self.is_open else 'shut'}>"

    # ------------------------------------------------------------ test side

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` was called (from any process)."""
        return os.path.exists(self._path(_OPENED)) or not os.path.isdir(self.directory)

    def open(self) -> None:
        """Let every waiting task, and every later one, through (idempotent)."""
        try:
            with open(self._path(_OPENED), "w"):
                pass
        except FileNotFoundError:
            pass  # closed already
        if self._hold is not None:
            os.close(self._hold)
            self._hold = None

    def wait_entered(self, count: int = 1, timeout: float = 30.0) -> bool:
        """Wait until *count* tasks in all have started waiting on this gate.

        :returns: ``False`` if *timeout* seconds passed first.
        """
        if self._entered_fd is None:
            raise RuntimeError("wait_entered() is for the side that created the gate")
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._entered_fd, selectors.EVENT_READ)
            while True:
                self._drain_entered()
                if self._entered >= count:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                sel.select(remaining)

    @property
    def entered(self) -> int:
        """How many tasks have started waiting on this gate so far."""
        if self._entered_fd is not None:
            self._drain_entered()
        return self._entered

    def _drain_entered(self) -> None:
        assert self._entered_fd is not None
        while True:
            try:
                data = os.read(self._entered_fd, 4096)
            except BlockingIOError:
                return
            if not data:
                return
            self._entered += len(data)

    def close(self) -> None:
        """Open the gate and remove its files (the creating side only)."""
        self.open()
        if not self._owner:
            return
        if self._entered_fd is not None:
            os.close(self._entered_fd)
            self._entered_fd = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def command(self) -> list[str]:
        """An argument list that runs a child process which waits on this gate
        (exit status 0 once open, 1 after :data:`TASK_WAIT` seconds)."""
        code = "import sys; from atasker.testing.tasks import main; sys.exit(main(sys.argv[1:]))"
        return [sys.executable, "-c", code, self.directory]

    # ------------------------------------------------------------ task side

    def _announce(self) -> None:
        try:
            fd = os.open(self._path(_ENTERED), os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: nobody reads any more; ENOENT: closed
            if exc.errno not in (errno.ENXIO, errno.ENOENT):
                raise
            return
        try:
            os.write(fd, b"\x01")
        finally:
            os.close(fd)

    def _open_release(self) -> int | None:
        try:
            return os.open(self._path(_RELEASE), os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None  # the gate was closed (so it is open)

    @staticmethod
    def _released(fd: int) -> bool:
        """End of file on the release FIFO: nobody holds it any more."""
        try:
            return os.read(fd, 64) == b""
        except BlockingIOError:
            return False

    def wait(self, timeout: float = TASK_WAIT) -> bool:
        """Task side: announce, then block this thread until the gate opens.

        :returns: ``False`` if *timeout* seconds passed first.
        """
        self._announce()
        fd = self._open_release()
        if fd is None:
            return True
        deadline = time.monotonic() + timeout
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                while not (self._released(fd) or self.is_open):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    sel.select(min(remaining, RECHECK))
        finally:
            os.close(fd)
        return True

    async def wait_async(self, timeout: float = TASK_WAIT) -> bool:
        """Task side in a coroutine: like :meth:`wait`, without blocking the loop.

        Cancelling the awaiting coroutine cancels the wait.
        """
        self._announce()
        fd = self._open_release()
        if fd is None:
            return True
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        try:
            while not (self._released(fd) or self.is_open):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                readable = loop.create_future()
                loop.add_reader(fd, _wake, readable)
                try:
                    await asyncio.wait_for(readable, min(remaining, RECHECK))
                except asyncio.TimeoutError:
                    pass
                finally:
                    loop.remove_reader(fd)
        finally:
            os.close(fd)
        return True


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# ---------------------------------------------------------------- task functions


def return_value(value: Any) -> Any:
    """Return *value*."""
    return value


def raise_value_error(message: str) -> None:
    """Raise ``ValueError(message)``."""
    raise ValueError(message)


def wait_gate(gate: Gate, value: Any = None, timeout: float = TASK_WAIT) -> Any:
    """Block until *gate* opens, then return *value*.

    :raises TimeoutError: the gate stayed shut for *timeout* seconds.
    """
    if not gate.wait(timeout):
        raise TimeoutError(f"{gate!r} stayed shut for {timeout} s")
    return value


async def async_return_value(value: Any) -> Any:
    """Coroutine: return *value*."""
    return value


async def async_raise_value_error(message: str) -> None:
    """Coroutine: raise ``ValueError(message)``."""
    raise ValueError(message)


async def async_wait_gate(gate: Gate, value: Any = None, timeout: float = TASK_WAIT) -> Any:
    """Coroutine: wait (without blocking the loop) until *gate* opens, then return *value*.

    :raises TimeoutError: the gate stayed shut for *timeout* seconds.
    """
    if not await gate.wait_async(timeout):
        raise TimeoutError(f"{gate!r} stayed shut for {timeout} s")
    return value


def main(argv: list[str]) -> int:
    """``Gate.command()``: wait on the gate in ``argv[0]``; 0 once open, else 1."""
    return 0 if Gate.attach(argv[0]).wait() else 1
