"""Workers: 0.7's ``put_threadsafe`` / ``trigger_threadsafe``, and ``await
worker.put(...)`` / ``trigger()`` from a coroutine (they were coroutines in 0.7)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from atasker import BackgroundEventWorker, BackgroundIntervalWorker, BackgroundQueueWorker
from tests.conftest import WAIT


def test_put_threadsafe_queues_an_item_with_a_warning(supervisor):
    got = threading.Event()
    worker = BackgroundQueueWorker(
        func=lambda item, **kw: got.set() if item == "todo1" else None, supervisor=supervisor
    )
    worker.start()
    with pytest.warns(DeprecationWarning, match=r"put_threadsafe\(\).*use put\(\)"):
        worker.put_threadsafe("todo1")
    assert got.wait(WAIT)
    worker.stop()


def test_trigger_threadsafe_runs_an_event_worker_with_a_warning(supervisor):
    ran = threading.Event()
    worker = BackgroundEventWorker(func=lambda **kw: ran.set(), supervisor=supervisor)
    worker.start()
    with pytest.warns(DeprecationWarning, match=r"trigger_threadsafe\(\).*use trigger\(\)"):
        worker.trigger_threadsafe(force=True)
    assert ran.wait(WAIT)
    worker.stop()


def test_trigger_threadsafe_runs_an_interval_worker_out_of_schedule(supervisor):
    ran = threading.Event()
    worker = BackgroundIntervalWorker(
        func=lambda **kw: ran.set(), interval=3600, delay_before=3600, supervisor=supervisor
    )
    worker.start()
    with pytest.warns(DeprecationWarning, match="trigger_threadsafe"):
        worker.trigger_threadsafe()
    assert ran.wait(WAIT)
    worker.stop(wait=False)


def test_put_and_trigger_can_be_awaited_as_in_0_7(supervisor):
    items, triggered = [], threading.Event()
    queue_worker = BackgroundQueueWorker(func=lambda item, **kw: items.append(item), supervisor=supervisor)
    event_worker = BackgroundEventWorker(func=lambda **kw: triggered.set(), supervisor=supervisor)
    queue_worker.start()
    event_worker.start()

    async def producer():
        await queue_worker.put(1)
        await event_worker.trigger(force=True)
        queue_worker.put(2)  # and without await, as in 0.3.14

    asyncio.run(producer())
    assert triggered.wait(WAIT)
    queue_worker.stop()  # processes what is queued, then stops
    event_worker.stop()
    assert items == [1, 2]
