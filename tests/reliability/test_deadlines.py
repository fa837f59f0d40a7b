"""Durations and deadlines: any value is either refused up front with a
clear error, or waited for without killing a thread (issue #19, items 4,
16 and 19), and the one helper every timed wait goes through."""

from __future__ import annotations

import math
import threading
import time

import pytest

import atasker
from atasker import TaskSupervisor
from tests.conftest import WAIT
from tests.reliability.test_bad_input import still_serving

NAN, INF = float("nan"), float("inf")


def test_wait_timeout_clamps_and_checks_every_deadline():
    from atasker import wait_timeout

    now = time.monotonic()
    assert wait_timeout(None) is None and wait_timeout(INF) is None
    assert wait_timeout(now - 1, now) == 0.0 and wait_timeout(now, now) == 0.0
    assert wait_timeout(now + 2.5, now) == 2.5
    assert wait_timeout(now + 1e10, now) == atasker.MAX_WAIT == 86400.0
    assert wait_timeout(1e300) == atasker.MAX_WAIT
    # What it returns, every blocking call takes (no OverflowError).
    threading.Event().wait(wait_timeout(now - 1))
    import select

    poller = select.poll()
    poller.poll(atasker.MAX_WAIT * 0)  # milliseconds: MAX_WAIT * 1000 fits a C int
    assert atasker.MAX_WAIT * 1000 < 2**31
    with pytest.raises(ValueError, match="a deadline must be a number, got nan"):
        wait_timeout(NAN)
    with pytest.raises(TypeError):
        wait_timeout("5")  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [{"delay": 1e10}, {"delay": 1e10, "timeout": 1e10}])
def test_a_far_deadline_neither_fires_nor_kills_the_timer(make_supervisor, options):
    sup = make_supervisor()
    far = sup.submit(pow, (2, 2), **options)
    assert sup.submit(pow, (2, 3), delay=0.01).result(WAIT) == 8  # the timer still serves
    assert sup.submit(pow, (2, 4), timeout=1e10).result(WAIT) == 16
    assert not far.done() and far.cancel()
    assert sup.stop(wait=WAIT)


@pytest.mark.parametrize("wait", [None, "x", "5", NAN, -1, -0.5, [1], object()], ids=repr)
def test_stop_refuses_a_bad_wait_before_it_changes_anything(make_supervisor, wait):
    sup = make_supervisor()
    error = TypeError if not isinstance(wait, (int, float)) else ValueError
    with pytest.raises(error, match=r"stop\(wait=\.\.\.\) takes"):
        sup.stop(wait=wait)
    assert sup.is_active()
    still_serving(sup)
    assert sup.stop(wait=True) is True and not sup.is_active()


@pytest.mark.parametrize("wait", [INF, 1e10, 10**12])
def test_stop_with_an_unbounded_or_far_wait_waits_for_the_running_task(make_supervisor, wait):
    sup = make_supervisor()
    gate = threading.Event()
    running = sup.submit(gate.wait, (WAIT,))
    threading.Timer(0.1, gate.set).start()
    assert sup.stop(wait=wait) is True
    assert running.result(0) is True


@pytest.mark.parametrize(
    ("field", "value"),
    [("timeout", "5"), ("timeout", NAN), ("timeout", INF), ("timeout", 0), ("delay", "1"), ("delay", NAN)],
)
@pytest.mark.parametrize("tt", ["thread", "coroutine", "mp"])
def test_every_task_type_refuses_a_bad_duration_at_submission(make_supervisor, tt, field, value):
    sup = make_supervisor()

    async def coro():
        return 1

    func = coro if tt == "coroutine" else abs
    with pytest.raises(ValueError, match=f"{field} must be a finite number of seconds"):
        sup.submit(func, (1,) if tt != "coroutine" else (), tt=tt, **{field: value})
    assert sup.get_tasks() == []
    assert sup.get_info()["unfinished"] == 0


@pytest.mark.parametrize("name", ["timeout_warning", "timeout_critical"])
@pytest.mark.parametrize("value", ["5", NAN, -1, True, [2]], ids=repr)
def test_the_watchdog_limits_are_checked_when_the_supervisor_is_made(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a finite number of seconds >= 0, inf or None"):
        TaskSupervisor(**{name: value})


@pytest.mark.parametrize("value", [None, INF, 1e10])
def test_a_watchdog_limit_of_none_or_inf_never_warns_and_never_fails_a_submission(make_supervisor, caplog, value):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0, timeout_warning=value, timeout_critical=value)
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,))
    waiting = [sup.submit(pow, (2, n)) for n in range(3)]  # each reaches the watchdog
    gate.set()
    assert [t.result(WAIT) for t in waiting] == [1, 2, 4] and blocker.result(WAIT)
    assert sup.submit(int, delay=0.01).result(WAIT) == 0  # the timer still serves
    assert sup.stop(wait=WAIT)
    assert "raised" not in caplog.text
    assert not math.isnan(sup.timeout_warning or 0)
