"""The feeder: how coroutine tasks reach an event loop from any thread."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from atasker.builtin.coroutine.errors import AloopStoppedError

__all__ = ["Feeder"]


class Feeder:
    """Hands coroutine tasks to one event loop, from any thread.

    ``push`` appends to a deque and wakes the loop only when no wake-up is
    already pending, so a burst of submissions costs one
    ``call_soon_threadsafe`` (one self-pipe write), not one per task.
    ``drain`` clears the flag *before* it empties the deque: a pusher that
    saw the flag set appended before the drain began popping, so nothing is
    ever left behind (each step is atomic under the GIL; deque ops are
    thread-safe without it too).

    Items are the executor's per-task run records; the feeder only calls
    ``run.executor.start_in_loop(run)`` or ``run.executor.reject(run, exc)``.
    """

    __slots__ = ("closed", "closing", "describe", "loop", "pending", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, describe: str) -> None:
        self.loop = loop
        self.describe = describe
        self.pending: collections.deque[Any] = collections.deque()
        self.scheduled = False
        #: Set in the loop thread when the loop accepts no more tasks.
        self.closing = False
        #: Set once the loop is closed (or found closed).
        self.closed = False

    def accepting(self) -> bool:
        """Whether new tasks may be sent to this loop."""
        return not (self.closing or self.closed or self.loop.is_closed())

    def push(self, run: Any) -> None:
        """Queue *run* to start in the loop (any thread, never blocks)."""
        self.pending.append(run)
        if not self.scheduled:
            self.scheduled = True
            try:
                self.loop.call_soon_threadsafe(self.drain)
            except RuntimeError:  # the loop is closed
                self.closed = True
        if self.closed:
            self.reject_pending()

    def drain(self) -> None:
        """Start every queued task (loop thread)."""
        self.scheduled = False
        pop = self.pending.popleft
        while True:
            try:
                run = pop()
            except IndexError:
                return
            if self.closing:
                run.executor.reject(run, self.stopped_error())
            else:
                run.executor.start_in_loop(run)

    def reject_pending(self) -> None:
        """Fail every queued task: the loop will not run them."""
        pop = self.pending.popleft
        while True:
            try:
                run = pop()
            except IndexError:
                return
            run.executor.reject(run, self.stopped_error())

    def stopped_error(self) -> AloopStoppedError:
        return AloopStoppedError(f"{self.describe} stopped before the task could start")
