"""Async jobs: coroutine functions an aloop runs every *interval* seconds.

The original atasker's async job schedulers (0.6 and later)::

    create_async_job_scheduler("jobs", aloop="myloop", default=True)
    job = create_async_job(target=poll, interval=0.5)   # poll() each 0.5 s on the aloop
    cancel_async_job(job=job)

A job is lightweight: each run is ``loop.create_task(target(*args,
**kwargs))`` on the aloop's event loop, timed by the loop's own timers
(``call_at``: nothing polls, no drift), with no task record, no priority
and no check that the previous run ended -- as the original documented.
Use a worker (``BackgroundIntervalWorker``) for runs that are tasks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from atasker.builtin.coroutine.aloop import ALoop
from atasker.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

__all__ = ["AsyncJob", "AsyncJobScheduler", "AsyncJobs", "atasker_supervisor_stopping"]

logger = logging.getLogger("atasker")

#: The shortest interval, as in the original (a zero interval would spin the loop).
MIN_INTERVAL = 0.001


class AsyncJob:
    """One job of an :class:`AsyncJobScheduler` (made by its :meth:`~AsyncJobScheduler.create`).

    :ivar id: a unique id (str).
    :ivar interval: seconds between runs.
    :ivar number: runs left (``0``: unlimited).
    """

    def __init__(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        interval: float = 0,
        timer: float = 0,
        number: int = 0,
    ) -> None:
        if not callable(target):
            raise TypeError(f"an async job's target must be a coroutine function, got {target!r}")
        for label, value in (("interval", interval), ("timer", timer), ("number", number)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"async job {label} must be a number >= 0, got {value!r}")
        self.id = str(uuid.uuid4())
        self.target = target
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        #: First run after *timer* seconds (then every *interval*, default *timer*), else at once.
        self.timer = float(timer)
        self.interval = max(float(interval or timer), MIN_INTERVAL)
        self.number = int(number)
        self._active = True
        #: The loop timer of the next run (on the aloop thread only).
        self.timer_handle: asyncio.TimerHandle | None = None

    @property
    def active(self) -> bool:
        """Whether the job still runs (not cancelled, runs left)."""
        return self._active

    def cancel(self) -> None:
        """Stop running the job (thread-safe; a run in progress finishes)."""
        self._active = False

    def __repr__(self) -> str:
        name = getattr(self.target, "__qualname__", repr(self.target))
        return f"<AsyncJob {name} every {self.interval} s{'' if self._active else ' cancelled'}>"


class AsyncJobScheduler:
    """Runs :class:`AsyncJob` s on one aloop.  Thread-safe.

    :param name: its name (``id`` too, as in the original).
    :param aloop: the :class:`ALoop` whose event loop runs the jobs.
    """

    def __init__(self, name: str, aloop: ALoop, report: Callable[[BaseException, str], None]) -> None:
        self.name = self.id = name
        self.aloop = aloop
        self._report = report
        self._lock = threading.Lock()
        self._jobs: set[AsyncJob] = set()
        self._running = False

    def start(self) -> None:
        """Start running the jobs (those created before too)."""
        with self._lock:
            if self._running:
                return
            self._running = True
            jobs = list(self._jobs)
        for job in jobs:
            self._post(self._arm, job)

    def create(self, target: Callable[..., Any], **kwargs: Any) -> AsyncJob:
        """Create a job: ``target(*args, **kwargs)`` every ``interval`` seconds.

        :keyword args: positional arguments of *target*.
        :keyword kwargs: keyword arguments of *target*.
        :keyword interval: seconds between runs (at least 0.001).
        :keyword timer: first run after this many seconds (default: at once).
        :keyword number: run this many times (default ``0``: until cancelled).
        :raises TypeError: *target* is not callable, or an unknown keyword.
        :raises ValueError: a negative number.
        """
        job = AsyncJob(target, **kwargs)
        with self._lock:
            self._jobs.add(job)
            running = self._running
        if running:
            self._post(self._arm, job)
        return job

    #: The original's name for :meth:`create`.
    create_threadsafe = create

    def cancel(self, job: AsyncJob) -> None:
        """Cancel *job* (what ``job.cancel()`` does)."""
        job.cancel()
        with self._lock:
            self._jobs.discard(job)
        if job.timer_handle is not None:
            self._post(job.timer_handle.cancel)

    def jobs(self) -> list[AsyncJob]:
        """The jobs not cancelled."""
        with self._lock:
            return [job for job in self._jobs if job.active]

    def stop(self, wait: bool | float = True) -> None:
        """Stop running the jobs (they stay; :meth:`start` runs them again)."""
        with self._lock:
            self._running = False
            jobs = list(self._jobs)
        for job in jobs:
            if job.timer_handle is not None:
                self._post(job.timer_handle.cancel)

    def is_active(self) -> bool:
        """Whether it runs its jobs."""
        return self._running

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self.aloop.get_loop()
        if loop is None:
            return  # the aloop stopped: its timers went with it
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # closed meanwhile
            pass

    def _arm(self, job: AsyncJob) -> None:
        # On the aloop's thread: schedule the first run.
        loop = asyncio.get_running_loop()
        if job.active and self._running:
            at = loop.time() + job.timer
            job.timer_handle = loop.call_at(at, self._fire, job, at)

    def _fire(self, job: AsyncJob, at: float) -> None:
        if not (job.active and self._running):
            return
        loop = asyncio.get_running_loop()
        if job.number:
            job.number -= 1
            if job.number == 0:
                self.cancel(job)
        if job.active:
            # From the planned time, not from now: the runs do not drift.
            job.timer_handle = loop.call_at(at + job.interval, self._fire, job, at + job.interval)
        try:
            run = loop.create_task(job.target(*job.args, **job.kwargs))
        except Exception as exc:  # the target is not a coroutine function
            self._report(exc, f"async job {job!r}")
            return
        run.add_done_callback(self._done)

    def _done(self, run: asyncio.Task[Any]) -> None:
        if not run.cancelled() and run.exception() is not None:
            self._report(run.exception(), f"async job of scheduler {self.name!r}")  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<AsyncJobScheduler {self.name!r} on aloop {self.aloop.name!r}: {len(self.jobs())} job(s)>"


class AsyncJobs:
    """The async job schedulers of one supervisor (extension ``"async_jobs"``)."""

    def __init__(self, supervisor: TaskSupervisor) -> None:
        self.supervisor = supervisor
        self._lock = threading.Lock()
        self._schedulers: dict[str, AsyncJobScheduler] = {}
        self._default: AsyncJobScheduler | None = None

    def create_async_job_scheduler(
        self, name: str, aloop: ALoop | str | None = None, start: bool = True, default: bool = False
    ) -> AsyncJobScheduler:
        """Create an async job scheduler that runs its jobs on an aloop.

        :param name: unique name.
        :param aloop: an :class:`ALoop` or its name (default: the default aloop).
        :param start: run jobs now (else ``scheduler.start()`` later).
        :param default: make it the default of :meth:`create_async_job`.
        :raises ValueError: a scheduler of that name exists, or there is no
            such aloop (no default aloop: create one with ``default=True``).
        """
        sup = self.supervisor
        found = aloop if isinstance(aloop, ALoop) else sup.get_aloop(aloop)
        if found is None:
            which = f"no aloop {aloop!r}" if aloop is not None else "no default aloop"
            raise ValueError(f"create_async_job_scheduler({name!r}): {which}; create_aloop(name, default=True) first")
        scheduler = AsyncJobScheduler(name, found, sup.report_internal_error)
        with self._lock:
            if name in self._schedulers:
                raise ValueError(f"supervisor {sup.name!r} already has an async job scheduler named {name!r}")
            self._schedulers[name] = scheduler
            if default or self._default is None:
                self._default = scheduler
        if start:
            scheduler.start()
        return scheduler

    def _scheduler(self, scheduler: AsyncJobScheduler | str | None) -> AsyncJobScheduler:
        if isinstance(scheduler, AsyncJobScheduler):
            return scheduler
        with self._lock:
            found = self._default if scheduler is None else self._schedulers.get(scheduler)
        if found is None:
            which = "no default async job scheduler" if scheduler is None else f"no async job scheduler {scheduler!r}"
            raise LookupError(f"supervisor {self.supervisor.name!r} has {which}; see create_async_job_scheduler()")
        return found

    def create_async_job(self, scheduler: AsyncJobScheduler | str | None = None, **kwargs: Any) -> AsyncJob:
        """Create a job on *scheduler* (default: the default one); see :meth:`AsyncJobScheduler.create`.

        :raises LookupError: no such scheduler.
        """
        return self._scheduler(scheduler).create(**kwargs)

    def cancel_async_job(self, scheduler: AsyncJobScheduler | str | None = None, job: AsyncJob | None = None) -> None:
        """Cancel *job*.

        :raises TypeError: no job given (the original logged a warning).
        """
        if job is None:
            raise TypeError("cancel_async_job() needs job=")
        self._scheduler(scheduler).cancel(job)

    def get_async_job_schedulers(self) -> dict[str, AsyncJobScheduler]:
        """Every async job scheduler by name."""
        with self._lock:
            return dict(self._schedulers)

    def stop_all(self) -> None:
        """Stop every scheduler and forget them (the supervisor is stopping)."""
        with self._lock:
            schedulers = list(self._schedulers.values())
            self._schedulers.clear()
            self._default = None
        for scheduler in schedulers:
            scheduler.stop()


@hookimpl
def atasker_supervisor_stopping(supervisor: TaskSupervisor) -> None:
    """Stop the async job schedulers before the aloops stop."""
    supervisor.extension("async_jobs").stop_all()
