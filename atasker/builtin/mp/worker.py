"""The child side of process tasks, and the wire format both sides share.

Each worker process runs :func:`worker_main`: it reads tasks from its own
pipe -- the parent may send a few ahead (its window) -- runs them one at a
time in the order sent, and writes one reply per task, tagged with the id of
the task it answers::

    parent (atasker.builtin.mp)                  worker process (this module)
    ───────────────────────────                  ────────────────────────────
                                  ◀── 0: READY   initializer ran
    id: dumps((id, f, args, kw)) ──▶             queued; run in order: f(*args, **kw)
                                  ◀── id: reply  OK result | ERROR exc, tb | FAILED text, tb
    id: b"" (skip request) ───────▶              dropped if not started ─▶ id: SKIPPED
    0: b"" (exit request) ────────▶              return (or EOF: the parent is gone)

Pickling (:func:`dumps`) uses the standard pickler, which stores functions and
classes by reference, and falls back to cloudpickle -- which stores them by
value -- for what the standard pickler cannot store (lambdas, closures) and
for functions and classes defined in ``__main__``, which a worker may not be
able to import (an interactive session, ``python -c``, a function defined
after a forked worker started).  Plain data never pays for cloudpickle.

This module imports nothing from atasker at module level, so that the code a
worker runs stays small.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import io
import os
import pickle
import select
import signal
import struct
import sys
import traceback
import types
import weakref
from collections.abc import Callable
from typing import Any

__all__ = [
    "HEADER",
    "NO_TASK",
    "PLAIN_TYPES",
    "PROTOCOL",
    "Inbox",
    "describe",
    "dumps",
    "frame",
    "header",
    "parse_header",
    "send_msg",
    "worker_main",
]

#: Reply tags (the first item of every reply tuple).
OK = 0  # (OK, result)
ERROR = 1  # (ERROR, exception, traceback text)
FAILED = 2  # (FAILED, message, traceback text or None): could not (un)pickle
READY = 3  # (READY, pid): the worker is up and its initializer ran
INIT_FAILED = 4  # (INIT_FAILED, traceback text): the initializer raised
SKIPPED = 5  # (SKIPPED,): a task the parent asked to skip was dropped unrun

PROTOCOL = pickle.HIGHEST_PROTOCOL

#: Largest read at once.
_CHUNK = 1 << 16
#: Scalar types the plain ``pickle.dumps`` handles exactly like :func:`dumps`.
PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None), complex})


#: The wire format, both ways: a header of two 8-byte big-endian numbers --
#: the length of the body and a *key* -- then the body.  The key is the id
#: of the task a message is about: the task to run (parent to worker), the
#: task a reply answers (worker to parent), ``0`` for READY / INIT_FAILED.
#: An empty body with key 0 asks the worker to exit; an empty body with a
#: task id asks it to skip that task if it has not started it.  Eight bytes
#: of length carry any size (a 4-byte length stopped at 4 GiB).  This module
#: is the only one that writes or parses headers (the manager thread uses
#: :func:`header` and :func:`parse_header` for its non-blocking I/O).
_HEAD = struct.Struct(">QQ")
HEADER = _HEAD.size
#: Key of messages that are about no task.
NO_TASK = 0


def header(length: int, key: int) -> bytes:
    """The header of a message of *length* body bytes about task *key*."""
    return _HEAD.pack(length, key)


def parse_header(buf: bytes | bytearray) -> tuple[int, int]:
    """``(end, key)`` of the message that starts *buf* (*buf* holds its header)."""
    length, key = _HEAD.unpack_from(buf)
    return HEADER + length, key


def frame(key: int, data: bytes) -> bytes:
    """A whole message (header and body) in one bytes object, for small bodies."""
    return _HEAD.pack(len(data), key) + data


def send_msg(fd: int, key: int, data: bytes) -> None:
    """Write one message to a blocking pipe (retrying short writes)."""
    n = len(data)
    if n < _CHUNK:
        view = memoryview(_HEAD.pack(n, key) + data)
    else:  # do not copy a big message just to prepend its header
        os.write(fd, _HEAD.pack(n, key))
        view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Inbox:
    """The worker's side of its task pipe: messages read ahead, in order.

    The parent may send a few tasks ahead (its window); before each task
    starts, the worker reads whatever has arrived (without blocking), so that
    a skip request sent after a task is seen before that task starts.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, True)
        # Whether more has arrived, without blocking (poll, not select:
        # descriptors may be above 1023); an idle worker blocks in read().
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self.buf = bytearray()
        #: ``(task id, body)`` of tasks received and not started.
        self.tasks: collections.deque[tuple[int, bytes]] = collections.deque()
        #: Ids the parent asked to skip that were dropped: the caller replies SKIPPED.
        self.skipped: list[int] = []
        self.exit = False

    def _parse(self) -> None:
        buf = self.buf
        while len(buf) >= HEADER:
            end, key = parse_header(buf)
            if len(buf) < end:
                return
            body = bytes(buf[HEADER:end])
            del buf[:end]
            if body:
                self.tasks.append((key, body))
            elif key == NO_TASK:
                self.exit = True
            else:
                for entry in self.tasks:
                    if entry[0] == key:
                        self.tasks.remove(entry)
                        self.skipped.append(key)
                        break

    def fill(self, block: bool) -> bool:
        """Read what has arrived; with *block*, wait until a task (or exit) is in.

        Returns ``False`` at EOF (the parent is gone).
        """
        fd = self.fd
        waited = False
        while True:
            if not block or self.tasks or self.exit or self.skipped:
                if waited:
                    return True  # woken by a message: run it at once (what else came is read next time)
                if not self._poll.poll(0):
                    return True
            waited = block
            want = _CHUNK
            if len(self.buf) >= HEADER:
                want = max(_CHUNK, parse_header(self.buf)[0] - len(self.buf))
            chunk = os.read(fd, want)
            if not chunk:
                return False
            self.buf += chunk
            self._parse()


class _ByValue(Exception):
    """Raised by the pickler when something must be pickled by value."""


class _Pickler(pickle.Pickler):
    """The standard (C) pickler, refusing to store ``__main__`` objects by reference.

    ``reducer_override`` is called only for objects that are not of a basic
    type (int, str, list, dict, ...), so plain data costs nothing extra.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)) and getattr(obj, "__module__", None) == "__main__":
            raise _ByValue
        return NotImplemented


def dumps(obj: Any) -> bytes:
    """Pickle *obj* for another process: stdlib pickle, cloudpickle where needed.

    :raises Exception: whatever cloudpickle raises for an object neither can
        pickle (``TypeError``, ``pickle.PicklingError``, ...).
    """
    buf = io.BytesIO()
    try:
        _Pickler(buf, PROTOCOL).dump(obj)
        return buf.getvalue()
    except _ByValue:
        pass
    except (pickle.PicklingError, TypeError, AttributeError):
        pass  # a lambda, a closure, ...: cloudpickle stores them by value
    buf = io.BytesIO()
    _by_value_pickler()(buf, PROTOCOL).dump(obj)
    return buf.getvalue()


_BY_VALUE: Any = None


def _by_value_pickler() -> Any:
    """cloudpickle's pickler, keeping each function's file name.

    cloudpickle writes ``<dynamic-code>`` as the file of code it sends by
    value (to make payloads deterministic); a task defined in a script
    would then show ``File "<dynamic-code>"`` in its worker traceback.
    Code objects keep their ``co_filename`` here, so tracebacks name the
    script (and show its lines).  If cloudpickle's internals change, its
    plain pickler is used.
    """
    global _BY_VALUE
    if _BY_VALUE is not None:
        return _BY_VALUE
    import copyreg
    from collections import ChainMap

    import cloudpickle

    pickler: Any = cloudpickle.Pickler
    code_reduce = getattr(getattr(cloudpickle, "cloudpickle", None), "_code_reduce", None)
    table: Any = getattr(pickler, "_dispatch_table", None)
    if code_reduce is not None and isinstance(table, dict):

        def reduce_code(code: types.CodeType) -> Any:
            rebuild, args = code_reduce(code)
            args = tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)
            return rebuild, args

        class KeepFilenames(pickler):  # type: ignore[misc]  # cloudpickle has no annotations
            _dispatch_table = {**table, types.CodeType: reduce_code}
            dispatch_table = ChainMap(_dispatch_table, copyreg.dispatch_table)

        pickler = KeepFilenames
    _BY_VALUE = pickler
    return pickler


def dumps_reply(result: Any) -> bytes:
    """``dumps((OK, result))``, with a shortcut for scalars."""
    if type(result) in PLAIN_TYPES:
        return pickle.dumps((OK, result), PROTOCOL)
    return dumps((OK, result))


def describe(obj: Any) -> str:
    """A short description of an object for error messages: ``a Lock object``."""
    kind = type(obj)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return f"function {getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"{article} {name} object"


def format_exc(exc: BaseException) -> str:
    """The traceback of *exc* as text (with its chained exceptions)."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


_accepts_cache: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def accepts_task_id(func: Callable[..., Any]) -> bool:
    """Whether *func* takes a ``_task_id`` keyword (by name or through ``**kwargs``)."""
    try:
        return _accepts_cache[func]
    except (KeyError, TypeError):
        pass
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        accepts = False
    else:
        accepts = any(
            p.kind is p.VAR_KEYWORD or (p.name == "_task_id" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
            for p in params
        )
    try:
        _accepts_cache[func] = accepts
    except TypeError:  # not weak-referenceable: not cached
        pass
    return accepts


def _after_fork() -> None:
    """In a forked worker: a fresh cloudpickle class-tracker lock.

    The parent holds that lock across the fork (so that the tracker is
    consistent), and the copy here is therefore locked, by a thread that does
    not exist in this process.
    """
    cp = sys.modules.get("cloudpickle.cloudpickle")
    if cp is not None and hasattr(cp, "_DYNAMIC_CLASS_TRACKER_LOCK"):
        import threading

        cp._DYNAMIC_CLASS_TRACKER_LOCK = threading.Lock()  # type: ignore[attr-defined]  # cloudpickle internals


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the thread that started it exits.

    That thread is the parent's manager thread (fork, spawn) or the
    forkserver (which exits with the parent), and it outlives its workers in
    an orderly shutdown: so this fires only when the parent itself is gone,
    killed or crashed.  An idle worker would notice that anyway (EOF on its
    pipe); a busy or stuck one would not, and would be left behind.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        return
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)
    # A forkserver child holds the server's "alive" pipe, which keeps the
    # server -- our parent for prctl -- running as long as we do: close it,
    # so that the server exits with the process that owns the pool and takes
    # us along.  (A task that uses forkserver itself starts its own server.)
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) == "forkserver":
        server = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
        fd = getattr(server, "_forkserver_alive_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
            server._forkserver_alive_fd = None  # type: ignore[union-attr]  # not None: it had the fd


def _silence(*fds: int) -> None:
    """In a process a task forked: point the worker's pipe descriptors at /dev/null."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    for fd in fds:
        with contextlib.suppress(OSError):
            os.dup2(null, fd)
    os.close(null)


def _error_reply(exc: BaseException) -> bytes:
    """Reply for a task that raised: the exception itself if it survives pickling."""
    tb = format_exc(exc)
    try:
        data = dumps((ERROR, exc, tb))
        pickle.loads(data)  # an exception whose __init__ needs other arguments fails here
        return data
    except Exception as why:
        try:
            text = str(exc)
        except Exception:
            text = "<str() failed>"
        kind = type(exc)
        message = (
            f"the task raised {kind.__module__}.{kind.__qualname__}: {text}; the exception could not be "
            f"pickled to send it to the parent process: {type(why).__name__}: {why}"
        )
        return dumps((FAILED, message, tb))


def _run(data: bytes) -> bytes:
    """Run one task message; return the reply.  Never raises."""
    try:
        task_id, func, args, kwargs = pickle.loads(data)
    except BaseException as exc:
        return dumps(
            (
                FAILED,
                f"the task could not be unpickled in the worker process: {type(exc).__name__}: {exc}",
                format_exc(exc),
            )
        )
    try:
        if task_id is not None and "_task_id" not in kwargs and accepts_task_id(func):
            kwargs["_task_id"] = task_id
        result = func(*args, **kwargs)
        if isinstance(result, types.CoroutineType):  # an async def function: run it here
            import asyncio

            result = asyncio.run(result)
    except BaseException as exc:
        return _error_reply(exc)
    try:
        return dumps_reply(result)
    except BaseException as exc:
        return dumps(
            (
                FAILED,
                f"the result of the task ({describe(result)}) could not be pickled: {type(exc).__name__}: {exc}",
                None,
            )
        )


def worker_main(
    tasks: Any,
    replies: Any,
    init: bytes | None = None,
    close_fds: tuple[int, ...] = (),
) -> None:
    """Body of a worker process: run tasks until an exit request or EOF.

    :param tasks: read end of the task pipe (a ``multiprocessing``
        connection; only its descriptor is used).
    :param replies: write end of the reply pipe (the same).
    :param init: pickled ``(initializer, initargs)``, or ``None``.
    :param close_fds: descriptors inherited through ``fork`` that belong to
        the parent's other workers; closed first, so that a sibling never
        keeps another worker's pipe open after the parent is gone.
    """
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    if close_fds:
        _after_fork()
    # Ctrl-C in a terminal signals the whole process group: the parent
    # decides what happens to running tasks, not each worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    rfd, wfd = tasks.fileno(), replies.fileno()
    # A task that forks (os.fork, a "fork" multiprocessing child) must not
    # leave a second reader on the task pipe nor a second writer on the
    # reply pipe: in such a child both point at /dev/null, so a child that
    # returns into this loop reads EOF and ends without a word to the parent.
    os.register_at_fork(after_in_child=lambda: _silence(rfd, wfd))

    def send(key: int, data: bytes) -> None:
        send_msg(wfd, key, data)

    try:
        if init is not None:
            try:
                initializer, initargs = pickle.loads(init)
                initializer(*initargs)
            except BaseException as exc:
                send(NO_TASK, dumps((INIT_FAILED, format_exc(exc))))
                raise SystemExit(1) from None
        send(NO_TASK, dumps((READY, os.getpid())))
        inbox = Inbox(rfd)
        queued = inbox.tasks
        skipped = pickle.dumps((SKIPPED,), PROTOCOL)
        while True:
            try:
                # Before each task, read what has arrived: a skip request
                # for a queued task must be seen before that task starts.
                if not inbox.fill(block=not queued):
                    return  # EOF: the parent is gone
                for key in inbox.skipped:
                    send(key, skipped)
                inbox.skipped.clear()
                if not queued:
                    if inbox.exit:
                        return  # exit request
                    continue
                key, data = queued.popleft()
                reply = _run(data)
                del data
                send(key, reply)
            except OSError:
                return  # the parent is gone
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:
                pass
