"""Stop under load: wait drains, cancel_tasks cancels, timed wait returns."""

from __future__ import annotations

import logging
import threading
import time

from tests.conftest import WAIT
from tests.reliability.conftest import size


def test_stop_wait_completes_every_queued_task(make_supervisor, figures):
    n = size(2000, 10_000)
    sup = make_supervisor(pool_size=2, reserve_normal=0, reserve_high=0)
    tasks = [sup.submit(int, (i,)) for i in range(n)]
    t0 = time.perf_counter()
    assert sup.stop(wait=True)
    assert [t.result(0) for t in tasks] == list(range(n))
    figures(queued=n, drain_seconds=round(time.perf_counter() - t0, 3))


def test_stop_cancel_tasks_under_load(make_supervisor, figures):
    n = size(2000, 10_000)
    sup = make_supervisor(pool_size=2, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    running = [sup.submit(gate.wait, (WAIT,)) for _ in range(2)]
    queued = [sup.submit(int) for _ in range(n)]
    threading.Timer(0.1, gate.set).start()
    assert sup.stop(wait=True, cancel_tasks=True)
    assert all(t.result(0) is True for t in running)
    assert all(t.cancelled() and t.status == -1 for t in queued)
    figures(cancelled=len(queued))


def test_stop_with_timeout_returns_in_time_and_logs(make_supervisor, caplog, figures):
    sup = make_supervisor(pool_size=2, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    stuck = [sup.submit(gate.wait, (WAIT,), name=f"stuck-{i}") for i in range(2)]
    queued = [sup.submit(int) for _ in range(100)]
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="atasker"):
        assert sup.stop(wait=2) is False
    took = time.monotonic() - t0
    gate.set()
    assert 2 <= took < 2.5
    assert "stuck-0" in caplog.text and "stuck-1" in caplog.text
    assert all(t.cancelled() for t in queued)
    assert all(t.result(WAIT) for t in stuck)
    figures(stop_wait_2_returned_after_s=round(took, 3))
