"""One timer thread per supervisor: delays, the watchdog, process deadlines
and any plugin's deadlines all share it.

::

    any thread ── call_at(when, fn, *args) ─▶ heap ──(earliest due)──▶ timer thread ─▶ fn(*args)
                  handle.cancel() ─▶ marks the entry; it is skipped when due

The thread sleeps on a condition until the earliest deadline; scheduling an
earlier one wakes it, so nothing polls.  Deadlines are ``time.monotonic()``
values.  Every wait goes through :func:`wait_timeout`, the one helper that
turns a deadline into a timeout any blocking call accepts: a deadline too
far away (``1e10`` s, ``1e300``) is waited for in steps of :data:`MAX_WAIT`,
so it never fires early and never kills the thread; ``inf`` is no deadline;
``nan`` is refused where it is scheduled.

Callbacks run one at a time on the timer thread: they must be short and
must not block (start work elsewhere).  An exception from one is reported
through the supervisor's internal-error path and the timer goes on.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from atasker.core.signals import signals_to_main_thread

__all__ = ["MAX_WAIT", "Timer", "TimerHandle", "wait_timeout"]

#: The longest single wait :func:`wait_timeout` returns, in seconds (a day).
#: Below every limit of the blocking calls: ``threading.TIMEOUT_MAX``,
#: ``select.poll`` / ``epoll`` (milliseconds in a C int, about 24.8 days),
#: ``select.select``, asyncio's loops.
MAX_WAIT = 86400.0


def wait_timeout(deadline: float | None, now: float | None = None) -> float | None:
    """The timeout for a blocking wait that must end by *deadline*, clamped and checked.

    For every wait on a deadline -- the core's timer, executors' and
    plugins' event loops -- instead of passing ``deadline - now`` to
    ``Condition.wait``, ``Event.wait``, ``queue.get``, ``select``,
    ``poll`` / ``epoll`` (multiply by 1000 for ``select.poll``) or
    ``asyncio.wait_for``, which raise ``OverflowError`` on a far deadline
    (``delay=1e10``) and spin on ``nan``.  Loop until the deadline has
    passed: a far deadline is waited for in steps of :data:`MAX_WAIT`, so
    it never fires early::

        deadline = time.monotonic() + seconds
        with cond:
            while not ready():
                timeout = wait_timeout(deadline)
                if timeout == 0:
                    break  # the deadline has passed
                cond.wait(timeout)

    :param deadline: a ``time.monotonic()`` value; ``None`` or ``inf``: no
        deadline.
    :param now: the current ``time.monotonic()``, if the caller has it.
    :returns: ``None`` for no deadline (wait without a timeout), ``0.0`` once
        it has passed, else the seconds left, at most :data:`MAX_WAIT`.
    :raises ValueError: *deadline* is NaN.
    :raises TypeError: *deadline* is not a number.
    """
    if deadline is None or deadline == math.inf:
        return None
    if now is None:
        now = time.monotonic()
    left = deadline - now
    if left > 0:
        return left if left < MAX_WAIT else MAX_WAIT
    if left <= 0:
        return 0.0
    raise ValueError(f"a deadline must be a number, got {deadline!r}")


class TimerHandle:
    """A scheduled call; :meth:`cancel` it to skip it."""

    __slots__ = ("args", "cancelled", "fn", "when")

    def __init__(self, when: float, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the call (a no-op once it ran)."""
        self.cancelled = True
        self.args = ()

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<TimerHandle {getattr(self.fn, '__qualname__', self.fn)!r} at {self.when:.3f}{state}>"


class Timer:
    """Runs callbacks at given ``time.monotonic()`` deadlines, on one thread.

    :param name: the thread's name.
    :param on_error: ``on_error(exc, where)`` for a callback that raised.
    """

    def __init__(self, name: str, on_error: Callable[[BaseException, str], None]) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._stopped = False
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_at(self, when: float, fn: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` on the timer thread at monotonic time *when*.

        :raises ValueError: *when* is NaN.
        :raises RuntimeError: the timer is stopped.
        """
        if when != when:  # NaN: it would never be due, nor ever not due
            raise ValueError(f"timer deadline must be a number, got {when!r}")
        handle = TimerHandle(when, fn, args)
        with self._cond:
            if self._stopped:
                raise RuntimeError("the timer is stopped (its supervisor stopped)")
            heapq.heappush(self._heap, (when, next(self._seq), handle))
            if self._heap[0][2] is handle:
                self._cond.notify()
        return handle

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` on the timer thread *delay* seconds from now."""
        return self.call_at(time.monotonic() + delay, fn, *args)

    def on_timer_thread(self) -> bool:
        """Whether the calling thread is this timer's (a callback runs: it must not wait)."""
        return self._thread is threading.current_thread()

    def pending(self) -> int:
        """Calls scheduled and not cancelled."""
        with self._cond:
            return sum(1 for _, _, h in self._heap if not h.cancelled)

    def _run(self) -> None:
        signals_to_main_thread()  # Ctrl-C goes to the main thread
        cond, heap = self._cond, self._heap
        while True:
            with cond:
                while True:
                    if self._stopped:
                        return
                    if not heap:
                        cond.wait()
                        continue
                    when, _, handle = heap[0]
                    if handle.cancelled:
                        heapq.heappop(heap)
                        continue
                    timeout = wait_timeout(when)
                    if timeout == 0:
                        heapq.heappop(heap)
                        break
                    cond.wait(timeout)
            fn, args = handle.fn, handle.args
            handle.cancel()  # ran: drop its arguments now
            try:
                fn(*args)
            except BaseException as exc:
                self._on_error(exc, f"timer callback {getattr(fn, '__qualname__', fn)!r}")

    def stop(self) -> None:
        """Drop every pending call and end the thread (joined unless called from it)."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()
