"""Async job schedulers (0.6 and later): ``create_async_job_scheduler``,
``create_async_job``, ``cancel_async_job``."""

from __future__ import annotations

import asyncio
import threading

import pytest

from atasker import MissingExtensionError
from tests.conftest import WAIT


class Counter:
    """A job target that counts its runs and sets an event at *until* runs."""

    def __init__(self, until: int = 3) -> None:
        self.runs = 0
        self.until = until
        self.reached = threading.Event()
        self.threads: set[str] = set()

    async def __call__(self, step: int = 1) -> None:
        self.runs += step
        self.threads.add(threading.current_thread().name)
        if self.runs >= self.until:
            self.reached.set()


def test_a_job_runs_on_the_schedulers_aloop_until_cancelled(make_supervisor):
    sup = make_supervisor()
    sup.create_aloop("jobs")
    scheduler = sup.create_async_job_scheduler("default", aloop="jobs", default=True)
    counter = Counter(until=3)
    job = sup.create_async_job(target=counter, interval=0.01)
    assert counter.reached.wait(WAIT)
    assert counter.threads == {"supervisor_aloop_jobs"}
    sup.cancel_async_job(job=job)
    stopped_at = counter.runs
    # Another job runs several times meanwhile: the cancelled one at most finishes one run.
    other = Counter(until=5)
    scheduler.create(other, interval=0.01)
    assert other.reached.wait(WAIT)
    assert counter.runs <= stopped_at + 1 and not job.active
    assert sup.get_info().async_job_schedulers == {"default": scheduler}


def test_a_job_takes_args_kwargs_number_and_a_first_run_timer(make_supervisor):
    sup = make_supervisor()
    sup.create_aloop("main", default=True)
    sup.create_async_job_scheduler("s")  # the default aloop; the first scheduler is the default one
    limited = Counter(until=30)
    sup.create_async_job(target=limited, kwargs={"step": 10}, interval=0.01, number=3)
    later = Counter(until=1)
    sup.create_async_job("s", target=later, interval=0.01, timer=3600)
    witness = Counter(until=6)
    sup.create_async_job(target=witness, interval=0.01)
    assert limited.reached.wait(WAIT) and witness.reached.wait(WAIT)
    assert limited.runs == 30 and later.runs == 0


def test_a_scheduler_created_stopped_runs_its_jobs_on_start(make_supervisor):
    sup = make_supervisor()
    sup.create_aloop("main", default=True)
    scheduler = sup.create_async_job_scheduler("lazy", start=False)
    counter = Counter(until=2)
    scheduler.create_threadsafe(counter, interval=0.01)
    assert not scheduler.is_active() and counter.runs == 0
    scheduler.start()
    assert counter.reached.wait(WAIT)


def test_errors_name_the_fix(make_supervisor):
    sup = make_supervisor()
    with pytest.raises(ValueError, match=r"no default aloop; create_aloop\(name, default=True\)"):
        sup.create_async_job_scheduler("x")
    with pytest.raises(LookupError, match="no default async job scheduler"):
        sup.create_async_job(target=Counter())
    sup.create_aloop("main", default=True)
    sup.create_async_job_scheduler("x")
    with pytest.raises(ValueError, match="already has an async job scheduler named 'x'"):
        sup.create_async_job_scheduler("x")
    with pytest.raises(ValueError, match="interval must be a number >= 0"):
        sup.create_async_job(target=Counter(), interval=-1)
    with pytest.raises(TypeError, match="needs job="):
        sup.cancel_async_job()


def test_a_failing_job_is_reported_and_keeps_its_schedule(make_supervisor, caplog):
    sup = make_supervisor()
    sup.create_aloop("main", default=True)
    sup.create_async_job_scheduler("s")
    runs = Counter(until=3)

    async def fail():
        await runs()
        raise RuntimeError("job failed")

    sup.create_async_job(target=fail, interval=0.01)
    assert runs.reached.wait(WAIT)
    assert "job failed" in caplog.text


def test_the_supervisor_stops_its_job_schedulers(make_supervisor):
    sup = make_supervisor()
    sup.create_aloop("main", default=True)
    scheduler = sup.create_async_job_scheduler("s")
    counter = Counter(until=1)
    sup.create_async_job(target=counter, interval=0.01)
    assert counter.reached.wait(WAIT)
    sup.stop()
    assert not scheduler.is_active() and sup.get_info().async_job_schedulers == {}


def test_blocking_the_coroutine_plugin_takes_async_jobs_with_it(make_supervisor):
    sup = make_supervisor(block_plugins=["atasker.builtin.coroutine"])
    for call in (
        lambda: sup.create_async_job_scheduler("x"),
        lambda: sup.create_async_job(target=asyncio.sleep),
        lambda: sup.cancel_async_job(job=None),
    ):
        with pytest.raises(MissingExtensionError, match=r"needs plugin 'atasker.builtin.coroutine'.*blocked"):
            call()
