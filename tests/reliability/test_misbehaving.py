"""Misbehaving tasks: hung tasks, and tasks that call back into the supervisor."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from atasker import TASK_CRITICAL, TASK_HIGH, TASK_LOW
from tests.conftest import WAIT


def test_a_hung_task_blocks_only_its_slot(make_supervisor):
    sup = make_supervisor(pool_size=2, reserve_normal=0, reserve_high=0)
    never = threading.Event()
    hung = sup.submit(never.wait, (WAIT * 3,), name="hung")
    try:
        results = [sup.submit(pow, (2, i)).result(WAIT) for i in range(50)]
        assert results == [2**i for i in range(50)]
        assert not hung.done()
    finally:
        never.set()
    assert hung.result(WAIT) is True


def test_task_calls_back_into_the_supervisor(make_supervisor):
    sup = make_supervisor(pool_size=2, reserve_normal=1, reserve_high=1)

    def parent():
        child = sup.submit(pow, (3, 3), priority=TASK_HIGH)
        sup.set_thread_pool(pool_size=3)
        info = sup.get_task_info(child)
        assert info is None or info.id == child.id
        sup.get_info()
        return child.result(WAIT)

    assert [t.result(WAIT) for t in [sup.submit(parent) for _ in range(6)]] == [27] * 6


def test_waiting_on_a_lower_priority_task_from_a_full_pool(make_supervisor):
    """A task holding the last LOW slot and waiting for a LOW child would wait
    forever: the child can only start when a slot frees.  The wait ends in a
    defined way (TimeoutError) and the pool recovers; submitting the child
    with a priority that has a reserve (or CRITICAL) avoids the deadlock."""
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=1)

    def parent(child_priority, timeout):
        child = sup.submit(pow, (2, 2), priority=child_priority)
        try:
            return child.result(timeout)
        finally:
            child.cancel()

    stuck = sup.submit(parent, (TASK_LOW, 0.3), priority=TASK_LOW)
    # Future.result's own timeout: builtins.TimeoutError from 3.11 on, its own class on 3.10.
    with pytest.raises(concurrent.futures.TimeoutError):
        stuck.result(WAIT)
    assert sup.submit(parent, (TASK_HIGH, WAIT), priority=TASK_LOW).result(WAIT) == 4
    assert sup.submit(parent, (TASK_CRITICAL, WAIT), priority=TASK_LOW).result(WAIT) == 4
