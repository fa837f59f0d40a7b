"""The aloops of one supervisor (extension ``"aloops"``) and the plugin
hooks that add it and stop the aloops with the supervisor."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from atasker.builtin.coroutine.aloop import DEFAULT_ALOOP_NAME, TT_COROUTINE, ALoop
from atasker.builtin.coroutine.errors import AloopStoppedError, UnknownAloopError
from atasker.builtin.coroutine.feeder import Feeder
from atasker.builtin.coroutine.jobs import AsyncJobs
from atasker.core import lifecycle
from atasker.errors import SupervisorStoppedError
from atasker.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

__all__ = ["Aloops", "atasker_configure", "atasker_supervisor_stopped"]

logger = logging.getLogger("atasker")

_all_aloops: weakref.WeakSet[Aloops] = weakref.WeakSet()


def _forget_in_child() -> None:
    for aloops in list(_all_aloops):
        aloops.forget_after_fork()


lifecycle.after_fork_in_child(_forget_in_child)


class Aloops:
    """The aloops of one supervisor (extension ``"aloops"``).

    The supervisor's ``create_aloop``, ``get_aloop``, ``get_aloops``,
    ``start_aloop``, ``stop_aloop``, ``set_default_aloop`` and
    ``set_coroutine_pool`` call these methods; the coroutine executor
    resolves a task's ``loop=`` with :meth:`feeder_for`.
    """

    def __init__(self, supervisor: TaskSupervisor) -> None:
        self.supervisor = supervisor
        self.lock = threading.RLock()
        self.aloops: dict[str, ALoop] = {}
        self.default: ALoop | None = None
        # Feeders of foreign (user-run) asyncio loops.  Not a WeakKeyDictionary:
        # the feeder refers to its loop, which would keep every key alive.
        # Closed loops are pruned whenever a new loop is added instead.
        self.foreign: dict[asyncio.AbstractEventLoop, Feeder] = {}
        _all_aloops.add(self)

    def forget_after_fork(self) -> None:
        """In a forked child: the aloops' threads are the parent's; forget them."""
        self.lock = threading.RLock()
        self.aloops = {}
        self.default = None
        self.foreign = {}

    def create_aloop(
        self,
        name: str,
        default: bool = False,
        daemon: bool = False,
        start: bool = True,
        *,
        uvloop: bool | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> ALoop:
        """Create an aloop: an asyncio loop in thread ``supervisor_aloop_<name>``.

        Starts the supervisor if needed.  The supervisor stops the aloop on
        ``stop()``.

        :param name: unique aloop name.
        :param default: make it the default aloop (coroutine tasks that name
            no loop run on it).
        :param daemon: run it in a daemon thread.
        :param start: start it now (else :meth:`start_aloop` later).
        :param uvloop: ``True`` use uvloop, ``False`` asyncio's loop,
            ``None`` uvloop if ``ATASKER_UVLOOP=1`` and installed.
        :param loop_factory: any callable returning a new event loop.
        :returns: the :class:`ALoop`.
        :raises ValueError: an aloop of that name exists.
        :raises ImportError: ``uvloop=True`` and uvloop is not installed.
        """
        sup = self.supervisor
        sup.ensure_started()
        aloop = ALoop(name, sup, daemon=daemon, uvloop=uvloop, loop_factory=loop_factory)
        state = self
        with state.lock:
            self._check_running()
            if name in state.aloops:
                raise ValueError(f"aloop {name!r} already exists")
            # Started before it is published (lock-free readers must never see
            # a default aloop that is not running yet) and under the lock (so
            # that _on_stop, which takes it, finds it running and stops it).
            if start:
                aloop.start()
            state.aloops[name] = aloop
            if default:
                state.default = aloop
        return aloop

    def _check_running(self) -> None:
        """Raise unless the supervisor is active and not stopping.

        Called under the aloop lock, which :meth:`stop_all` takes to forget
        the aloops: an aloop registered after this check is always stopped
        with the supervisor, never left running.
        """
        sup = self.supervisor
        if not sup.is_active():
            raise SupervisorStoppedError(f"task supervisor {sup.name!r} is stopping or stopped; no new aloops")

    def get_aloop(self, name: str | None = None) -> ALoop | None:
        """The aloop called *name*, or the default aloop; ``None`` if there is none.

        :param name: aloop name; ``None`` for the default aloop.
        """
        state = self
        with state.lock:
            return state.default if name is None else state.aloops.get(name)

    def get_aloops(self) -> dict[str, ALoop]:
        """Every aloop of this supervisor, by name (a copy)."""
        state = self
        with state.lock:
            return dict(state.aloops)

    def _named_aloop(self, name: str) -> ALoop:
        state = self
        with state.lock:
            aloop = state.aloops.get(name)
            if aloop is None:
                known = ", ".join(repr(n) for n in sorted(state.aloops)) or "none"
                raise UnknownAloopError(f"no aloop named {name!r}; aloops: {known}")
            return aloop

    def start_aloop(self, name: str) -> ALoop:
        """Start (or restart) the aloop called *name*; returns it.

        :raises UnknownAloopError: no such aloop.
        """
        aloop = self._named_aloop(name)
        aloop.start()
        return aloop

    def stop_aloop(self, name: str, wait: bool | float = True, cancel_tasks: bool = False) -> bool:
        """Stop the aloop called *name*; see :meth:`ALoop.stop`.

        It stays registered and can be started again with :meth:`start_aloop`.

        :returns: ``True`` if it finished without a timeout.
        :raises UnknownAloopError: no such aloop.
        """
        return self._named_aloop(name).stop(wait=wait, cancel_tasks=cancel_tasks)

    def set_default_aloop(self, aloop: ALoop | str | None) -> None:
        """Make *aloop* (an aloop or its name) the default; ``None`` unsets it.

        :raises UnknownAloopError: a name no aloop has.
        """
        state = self
        with state.lock:
            if isinstance(aloop, str):
                aloop = self._named_aloop(aloop)
            elif aloop is not None and not isinstance(aloop, ALoop):
                raise TypeError(f"set_default_aloop needs an ALoop, its name or None, got {aloop!r}")
            state.default = aloop

    def set_coroutine_pool(
        self,
        pool_size: int | None = None,
        reserve_normal: int | None = None,
        reserve_high: int | None = None,
    ) -> None:
        """:meth:`set_pool` for coroutine tasks (default: unlimited, ``pool_size=0``).

        Limits how many coroutine tasks run at once across all loops, with the
        same reserve rules as threads; a change applies at once.
        """
        self.supervisor.set_pool(TT_COROUTINE, pool_size, reserve_normal, reserve_high)

    # ------------------------------------------------- for the executor

    def feeder_for(self, loop: Any) -> Feeder:
        """Resolve a coroutine task's ``loop=`` option to a running loop's feeder.

        ``None`` -- the default aloop, created (as ``"default"``) if there is
        none; an :class:`ALoop` or its name; or a running asyncio loop.
        """
        state = self
        if loop is None:
            aloop = state.default
            if aloop is None:
                aloop = self._auto_default_aloop(state)
        elif isinstance(loop, ALoop):
            aloop = loop
        elif isinstance(loop, str):
            aloop = self._named_aloop(loop)
        elif isinstance(loop, asyncio.AbstractEventLoop):
            return self._foreign_feeder(loop)
        else:
            raise TypeError(f"loop= takes an ALoop, an aloop name or a running asyncio loop, got {loop!r}")
        feeder = aloop._feeder
        if aloop._state != "running" or feeder is None or not feeder.accepting():
            raise AloopStoppedError(
                f"aloop {aloop.name!r} is {aloop._state}; start it with start_aloop({aloop.name!r})"
                if aloop._state in ("created", "stopped")
                else f"aloop {aloop.name!r} is stopping; it accepts no new tasks"
            )
        return feeder

    def _auto_default_aloop(self, state: Aloops) -> ALoop:
        """Create the default aloop for a coroutine task that names no loop."""
        sup = self.supervisor
        with state.lock:
            if state.default is not None:
                return state.default
            self._check_running()
            name = DEFAULT_ALOOP_NAME
            n = 1
            while name in state.aloops:
                n += 1
                name = f"{DEFAULT_ALOOP_NAME}_{n}"
            aloop = ALoop(name, sup)
            aloop.start()  # before it is published: see create_aloop
            state.aloops[name] = state.default = aloop
            logger.debug("created default aloop %r for coroutine tasks", name)
            return aloop

    def _foreign_feeder(self, loop: asyncio.AbstractEventLoop) -> Feeder:
        state = self
        feeder = state.foreign.get(loop)  # lock-free fast path (dict.get is atomic)
        if feeder is not None and loop.is_running():
            return feeder
        with state.lock:
            for aloop in state.aloops.values():
                if aloop._loop is loop and aloop._feeder is not None:
                    return self.feeder_for(aloop)
            if loop.is_closed() or not loop.is_running():
                raise AloopStoppedError(f"loop= needs a running asyncio loop; {loop!r} is not running")
            feeder = state.foreign.get(loop)
            if feeder is None:
                for old in [lp for lp in state.foreign if lp.is_closed()]:
                    del state.foreign[old]
                feeder = state.foreign[loop] = Feeder(loop, f"event loop {loop!r}")
            return feeder

    # ------------------------------------------------------------ lifecycle

    def stop_all(self, wait: bool | float, cancel_tasks: bool, all_done: bool) -> None:
        """Stop every aloop with the supervisor, and forget them.

        ``wait=True``: wait for the aloops' remaining tasks (``cancel_tasks``
        cancels them first).  A number: if the supervisor's own wait ran out
        (*all_done* false), coroutine tasks still running anywhere are
        cancelled and each aloop cancels and names what is pending; otherwise
        the aloops get up to that many seconds, together.  ``False``: the
        aloops finish in the background.
        """
        state = self
        with state.lock:
            aloops = list(state.aloops.values())
            state.aloops.clear()
            state.default = None
            state.foreign.clear()
        requested = [a for a in aloops if a._request_stop(cancel_tasks)]
        if wait is False:
            return
        if all_done or wait is True:
            deadline = None if wait is True else time.monotonic() + float(wait)
            for aloop in requested:
                aloop._await_stop(deadline, wait)
            return
        # The supervisor's timed wait ran out with tasks still running: name
        # what is pending on each aloop, cancel it, and cancel coroutine tasks
        # on foreign loops too; then give them all one grace period.
        for aloop in requested:
            aloop._expire(wait)
        running = [t for t in self.supervisor.get_tasks(TT_COROUTINE) if t.time_started is not None]
        for task in running:
            task.cancel()
        for aloop in requested:
            aloop._join_after_cancel()


@hookimpl
def atasker_configure(supervisor: TaskSupervisor) -> None:
    """Add the ``"aloops"`` and ``"async_jobs"`` extensions."""
    supervisor.add_extension("aloops", Aloops(supervisor))
    supervisor.add_extension("async_jobs", AsyncJobs(supervisor))


@hookimpl
def atasker_supervisor_stopped(
    supervisor: TaskSupervisor, wait: bool | float, cancel_tasks: bool, all_done: bool
) -> None:
    """Stop every aloop with the supervisor, and forget them."""
    supervisor.extension("aloops").stop_all(wait, cancel_tasks, all_done)
