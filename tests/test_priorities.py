"""The default queue policy: order, reserves, CRITICAL, resize, unlimited."""

from __future__ import annotations

import threading

import pytest

from atasker import TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL, InvalidPriorityError
from atasker.core.task import priority_band
from tests.conftest import WAIT


class Gate:
    """Tasks that block until released; records the order tasks ran in."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.order: list[str] = []
        self.lock = threading.Lock()

    def block(self) -> None:
        assert self.release.wait(WAIT)

    def record(self, name: str) -> str:
        with self.lock:
            self.order.append(name)
        return name


def running(sup) -> int:
    return sup.get_info()["task_types"]["thread"]["running"]


def test_priority_order_under_full_pool(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = Gate()
    blocker = sup.submit(gate.block, priority=TASK_LOW)
    submitted = [
        ("low-1", TASK_LOW),
        ("normal-1", TASK_NORMAL),
        ("high-1", TASK_HIGH),
        ("low-2", TASK_LOW),
        ("high-2", TASK_HIGH),
        ("normal-2", TASK_NORMAL),
    ]
    tasks = [sup.submit(gate.record, (name,), priority=prio) for name, prio in submitted]
    assert all(t.status == 0 for t in tasks)
    gate.release.set()
    for t in [blocker, *tasks]:
        t.result(WAIT)
    assert gate.order == ["high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2"]


def test_reserve_boundaries(make_supervisor):
    sup = make_supervisor(pool_size=2, reserve_normal=1, reserve_high=1)
    gate = Gate()
    try:
        low = [sup.submit(gate.block, priority=TASK_LOW) for _ in range(3)]
        # LOW may use pool_size slots only.
        assert [t.status for t in low] == [1, 1, 0]
        assert running(sup) == 2
        # NORMAL may also use reserve_normal; it overtakes the waiting LOW.
        normal = [sup.submit(gate.block, priority=TASK_NORMAL) for _ in range(2)]
        assert [t.status for t in normal] == [1, 0]
        assert running(sup) == 3
        # HIGH may also use reserve_high.
        high = [sup.submit(gate.block, priority=TASK_HIGH) for _ in range(2)]
        assert [t.status for t in high] == [1, 0]
        assert running(sup) == 4
        # CRITICAL always starts at once; the pool grows for it.
        critical = [sup.submit(gate.block, priority=TASK_CRITICAL) for _ in range(3)]
        assert [t.status for t in critical] == [1, 1, 1]
        assert running(sup) == 7
        info = sup.get_info()["task_types"]["thread"]
        assert info["waiting"] == {TASK_HIGH: 1, TASK_NORMAL: 1, TASK_LOW: 1}
        assert info["running_by_priority"] == {TASK_LOW: 2, TASK_NORMAL: 1, TASK_HIGH: 1, TASK_CRITICAL: 3}
    finally:
        gate.release.set()
    for t in low + normal + high + critical:
        t.result(WAIT)


def test_waiting_higher_priority_blocks_lower(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=1, reserve_high=0)
    gate = Gate()
    try:
        first = sup.submit(gate.block, priority=TASK_NORMAL)
        second = sup.submit(gate.block, priority=TASK_NORMAL)
        assert (first.status, second.status) == (1, 1)
        high = sup.submit(gate.block, priority=TASK_HIGH)  # no HIGH reserve: waits
        normal = sup.submit(gate.block, priority=TASK_NORMAL)
        assert high.status == 0 and normal.status == 0
    finally:
        gate.release.set()
    for t in (first, second, high, normal):
        t.result(WAIT)


def test_resize_while_running_starts_waiting_tasks_at_once(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = Gate()
    try:
        tasks = [sup.submit(gate.block, priority=TASK_LOW) for _ in range(4)]
        assert [t.status for t in tasks] == [1, 0, 0, 0]
        sup.set_thread_pool(pool_size=3)
        assert [t.status for t in tasks] == [1, 1, 1, 0]
        assert sup.get_info()["task_types"]["thread"]["pool_size"] == 3
        sup.set_thread_pool(reserve_normal=5)  # LOW cannot use it
        assert tasks[3].status == 0
        sup.set_thread_pool(pool_size=0)  # unlimited
        assert tasks[3].status == 1
    finally:
        gate.release.set()
    for t in tasks:
        t.result(WAIT)


def test_shrink_lets_running_tasks_finish(make_supervisor):
    sup = make_supervisor(pool_size=3, reserve_normal=0, reserve_high=0)
    gate = Gate()
    try:
        tasks = [sup.submit(gate.block) for _ in range(3)]
        sup.set_thread_pool(pool_size=1)
        extra = sup.submit(gate.block)
        assert [t.status for t in tasks] == [1, 1, 1] and extra.status == 0
    finally:
        gate.release.set()
    for t in [*tasks, extra]:
        t.result(WAIT)


def test_pool_size_zero_is_unlimited(make_supervisor):
    sup = make_supervisor(pool_size=0)
    gate = Gate()
    try:
        tasks = [sup.submit(gate.block, priority=TASK_LOW) for _ in range(40)]
        assert all(t.status == 1 for t in tasks)
    finally:
        gate.release.set()
    for t in tasks:
        t.result(WAIT)


def test_set_pool_before_first_use_is_kept(make_supervisor):
    sup = make_supervisor(start=False)
    sup.set_thread_pool(pool_size=3, reserve_normal=0, reserve_high=1)
    sup.start()
    sup.submit(int).result(WAIT)
    info = sup.get_info()["task_types"]["thread"]
    assert (info["pool_size"], info["reserve_normal"], info["reserve_high"]) == (3, 0, 1)


def test_pool_config_names_only_the_sizes_set(make_supervisor):
    sup = make_supervisor(start=False)
    assert sup.pool_config("thread") == {}
    sup.set_thread_pool(reserve_high=2)
    sup.start()
    sup.set_pool("thread", pool_size=5)
    config = sup.pool_config("thread")
    assert config == {"reserve_high": 2, "pool_size": 5}
    config["pool_size"] = 1  # a copy: changing it changes nothing
    assert sup.pool_config("thread")["pool_size"] == 5
    assert sup.pool_config("no such type") == {}


@pytest.mark.parametrize("bad", [-1, 1.5, "high", True])
def test_set_pool_rejects_bad_sizes(supervisor, bad):
    with pytest.raises(ValueError, match="pool_size must be an int >= 0"):
        supervisor.set_thread_pool(pool_size=bad)


def test_other_integer_priorities_order_between_named_ones(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = Gate()
    blocker = sup.submit(gate.block)
    tasks = [sup.submit(gate.record, (str(p),), priority=p) for p in (300, 150, 100, 75, 50, 10)]
    gate.release.set()
    for t in [blocker, *tasks]:
        t.result(WAIT)
    assert gate.order == ["10", "50", "75", "100", "150", "300"]


@pytest.mark.parametrize(
    ("priority", "band"),
    [(0, TASK_CRITICAL), (1, TASK_HIGH), (50, TASK_HIGH), (51, TASK_NORMAL), (100, TASK_NORMAL), (101, TASK_LOW)],
)
def test_priority_bands(priority, band):
    assert priority_band(priority) == band


def test_band_decides_the_reserve(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=1)
    gate = Gate()
    try:
        first = sup.submit(gate.block, priority=TASK_LOW)
        in_high_band = sup.submit(gate.block, priority=30)
        assert in_high_band.status == 1  # uses the HIGH reserve
        in_normal_band = sup.submit(gate.block, priority=60)
        assert in_normal_band.status == 0
    finally:
        gate.release.set()
    for t in (first, in_high_band, in_normal_band):
        t.result(WAIT)


@pytest.mark.parametrize("bad", [-1, 1.5, "high", None, True, [1]])
def test_invalid_priority_is_rejected_with_a_clear_error(supervisor, bad):
    with pytest.raises(InvalidPriorityError, match="invalid task priority"):
        supervisor.submit(print, priority=bad)
    assert supervisor.submit(int).result(WAIT) == 0
