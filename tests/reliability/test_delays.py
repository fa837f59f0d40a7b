"""Delayed tasks and the watchdog: stop() from the timer thread, the wait
measured from the queue, cancelled delays released (issue #19, items 10,
18 and 20)."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from atasker import hookimpl
from tests.conftest import WAIT
from tests.reliability.conftest import size


@pytest.mark.parametrize("which", ["timeout_warning_func", "timeout_critical_func"])
def test_stop_wait_true_from_a_watchdog_function_with_a_delayed_task_pending(make_supervisor, which):
    returned: list[bool] = []
    called = threading.Event()

    def stop_now(task):
        returned.append(sup.stop(wait=True))
        called.set()

    limits = {"timeout_warning": 0.05, "timeout_critical": 0.1}
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0, **limits, **{which: stop_now})
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,))
    starved = sup.submit(pow, (2, 1))
    delayed = sup.submit(pow, (2, 5), delay=0.3)
    assert called.wait(WAIT), "the watchdog function never returned from stop(wait=True)"
    assert returned == [False]  # it could not wait on the timer thread: a new thread stops
    gate.set()
    assert sup.stop(wait=WAIT) is True  # waits for that stop's drain
    assert delayed.result(0) == 32 and starved.result(0) == 2 and blocker.result(0) is True


def test_the_watchdog_counts_a_delayed_tasks_wait_from_when_it_joined_the_queue(make_supervisor):
    joined: dict[int, float] = {}
    warned: dict[int, float] = {}
    late_warned = threading.Event()

    def warn(task):
        warned.setdefault(task.id, time.monotonic())
        if task.name == "late":
            late_warned.set()

    class JoinTimes:
        @hookimpl
        def atasker_task_waiting(self, task):
            joined[task.id] = time.monotonic()

    limit = 0.4
    sup = make_supervisor(
        pool_size=1,
        reserve_normal=0,
        reserve_high=0,
        timeout_warning=limit,
        timeout_critical=WAIT * 10,
        timeout_warning_func=warn,
        plugins=[JoinTimes()],
    )
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,))
    early = sup.submit(int)  # waits from now: its check comes at `limit`
    late = sup.submit(int, delay=limit * 0.75, name="late")  # joins the queue just before that check
    assert late_warned.wait(WAIT)
    gate.set()
    assert early.id in warned and late.id in warned
    assert warned[late.id] - joined[late.id] >= limit * 0.95, "warned before it waited timeout_warning seconds"
    assert blocker.result(WAIT) and late.result(WAIT) == 0
    assert sup.stop(wait=WAIT)


class Payload:
    """A large argument, to see who keeps it alive."""


def test_cancelling_a_delayed_task_releases_its_arguments_at_once(make_supervisor, figures):
    n = size(200, 20_000)
    sup = make_supervisor()
    refs = []
    for _ in range(n):
        payload = Payload()
        refs.append(weakref.ref(payload))
        task = sup.submit(id, (payload,), delay=3600)
        del payload
        assert task.cancel()
        del task
    gc.collect()
    assert sum(r() is not None for r in refs) == 0, "the timer still holds cancelled tasks' arguments"
    assert sup.timer.pending() == 0
    figures(cancelled_delayed=n, arguments_alive=0)
