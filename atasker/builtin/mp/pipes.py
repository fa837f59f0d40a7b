"""The parent's side of the worker pipes: writes that never block, replies read in batches.

Messages for a worker are queued in its ``outbox`` under the manager's lock
-- so the order on the pipe is the order of its window -- and written by
whichever thread queued them (:meth:`PipeIO._flush_out`); the manager
thread, handling a batch of events, writes each worker's messages once at
the end of the batch.  What a full pipe does not take stays queued and the
manager thread writes it when the pipe has room: no thread ever blocks on
a worker (one still starting, or busy, with a big task waiting).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from atasker.builtin.mp.spawn import Poller, Worker
from atasker.builtin.mp.worker import HEADER, frame, header, parse_header

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["PipeIO"]

_CHUNK = 1 << 16
_IOV = 512  # buffers per writev() call (IOV_MAX is 1024 on Linux)
_READ, _SENTINEL, _WRITE = 0, 1, 2


class PipeIO:
    """Reading and writing the workers' pipes; a part of :class:`~atasker.builtin.mp.manager.WorkerManager`."""

    _lock: threading.Lock
    _wake_lock: threading.Lock
    _blocked: list[Worker]
    _batch: bool
    _ident: int
    _dirty: set[Worker]
    _fds: dict[int, tuple[int, Worker]]
    _poller: Poller
    _wake: Callable[[], None]
    _kill: Callable[[Worker], None]
    _on_reply: Callable[[Worker, int, bytes], None]
    _on_eof: Callable[[Worker], None]

    def _queue(self, w: Worker, key: int, body: bytes) -> None:
        """Queue one message for *w* (``_lock`` held): the order of the pipe is
        the order of the window.  The caller then calls :meth:`_flush_out`."""
        if len(body) < _CHUNK:
            w.outbox.append(frame(key, body))
        else:  # do not copy a big message just to prepend its header
            w.outbox.append(header(len(body), key))
            w.outbox.append(body)

    def _flush_out(self, w: Worker) -> None:
        """Write what is queued for *w*; on the manager thread, once per batch of events."""
        if self._batch and threading.get_ident() == self._ident:
            self._dirty.add(w)
        else:
            self._write_out(w)

    def _write_out(self, w: Worker) -> None:
        """Write *w*'s queued messages without blocking (any thread).

        What a full pipe does not take goes back to the front of the queue,
        and the manager thread writes it when the pipe has room.
        """
        blocked = False
        with w.send_lock:
            box = w.outbox
            if w.writing or not box:
                return
            if w.wconn is None:
                box.clear()  # dead: the manager reports its tasks
                return
            parts: list[Any] = []
            while box and len(parts) < _IOV:
                parts.append(box.popleft())  # only writers pop, under send_lock
            try:
                n = os.writev(w.wfd, parts)
            except BlockingIOError:
                n = 0
            except OSError:
                # The worker is dying; its sentinel fires and the manager
                # reports the tasks it was given.
                box.clear()
                with self._lock:
                    self._kill(w)
                return
            rest: list[Any] = []
            for part in parts:
                if n >= len(part):
                    n -= len(part)
                else:
                    rest.append(memoryview(part)[n:])
                    n = 0
            if rest or box:
                box.extendleft(reversed(rest))
                w.writing = blocked = True
        if blocked:
            with self._wake_lock:
                self._blocked.append(w)
            self._wake()

    def _flush(self, w: Worker) -> None:
        """Manager thread: a full task pipe has room; write what waits."""
        with w.send_lock:
            w.writing = False
            if w.wfd in self._fds:
                del self._fds[w.wfd]
                self._poller.unregister(w.wfd)
        self._write_out(w)

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
            self._on_eof(w)
            return True
        buf = w.rbuf
        if not buf and len(chunk) >= HEADER:
            end, key = parse_header(chunk)
            if end == len(chunk):
                self._on_reply(w, key, chunk[HEADER:])  # the usual case: exactly one message
                return True
        buf += chunk
        while len(buf) >= HEADER:
            end, key = parse_header(buf)
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
            self._on_reply(w, key, data)
        return True
