"""Process pool faults found by an adversarial probe (issue 19, items 5, 12, 14, 15).

Each test fails on the code before the fix: a task's forked child answering
for the next task, a big task blocking the manager thread while its worker
starts, frame lengths stopping at 4 GiB, and deadlines from extreme values.
"""

from __future__ import annotations

import math
import os
import time

import pytest

import tests.mp
from atasker import TT_MP
from atasker.builtin.mp import worker as wire
from tests.conftest import WAIT


def test_forked_child_of_a_task_cannot_answer_for_the_next_task(make_supervisor):
    # Item 14: the child returned into the worker loop and its reply went to
    # the next task; or it read the next task off the pipe and ran it.
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    for i in range(3):
        assert sup.submit(tests.mp.fork_and_return, (f"parent {i}",), tt=TT_MP).result(WAIT) == f"parent {i}"
        assert [sup.submit(tests.mp.square, (k,), tt=TT_MP).result(WAIT) for k in range(5)] == [0, 1, 4, 9, 16]


def test_a_big_task_for_a_starting_worker_does_not_delay_other_timeouts(make_supervisor, tmp_path):
    # Item 15: sending a task larger than the pipe to a worker still starting
    # blocked the manager thread, so another task's timeout fired seconds late.
    marker = tmp_path / "slow"
    sup = make_supervisor()
    sup.create_mp_pool(
        pool_size=1,
        reserve_normal=0,
        reserve_high=0,
        initializer=tests.mp.sleep_if_exists,
        initargs=(str(marker), 4.0),
    )
    assert sup.submit(tests.mp.square, (2,), tt=TT_MP).result(WAIT) == 4  # worker 1 is up (fast start)
    hung = sup.submit(time.sleep, (60,), tt=TT_MP, timeout=0.5)
    marker.touch()  # from now on, a new worker takes 4 s to start
    sup.set_mp_pool(pool_size=2)
    t0 = time.monotonic()
    big = sup.submit(tests.mp.size_of, (b"x" * (4 << 20),), tt=TT_MP)  # 4 MiB: four pipes full
    with pytest.raises(TimeoutError):
        hung.result(WAIT)
    late = time.monotonic() - t0
    assert late < 2.5, f"the 0.5 s timeout was reported after {late:.2f} s"
    assert big.result(WAIT) == 4 << 20


def test_frames_carry_lengths_of_4_gib_and_more():
    # Item 12: a 4-byte length stopped at 4 GiB (OverflowError on the way
    # out, a wrong length on the way in).  Both sides frame with these two
    # functions; an 8-byte length carries any size.
    for length in (0, 1, 2**32 - 1, 2**32, 5 << 30, 2**40 + 7):
        head = wire.header(length, 42)
        assert wire.parse_header(head) == (wire.HEADER + length, 42)
    assert wire.parse_header(wire.frame(7, b"abc")) == (wire.HEADER + 3, 7)


def test_the_workers_inbox_waits_for_a_message_over_4_gib():
    # The worker's reader takes a header that announces 4 GiB + 3 bytes as
    # an incomplete message (no task yet), not as a small one.
    r, w = os.pipe()
    try:
        inbox = wire.Inbox(r)
        os.write(w, wire.header(2**32 + 3, 9) + b"abc")
        assert inbox.fill(block=False)
        assert not inbox.tasks and not inbox.exit
        assert wire.parse_header(inbox.buf)[0] == wire.HEADER + 2**32 + 3
    finally:
        os.close(r)
        os.close(w)


def test_a_large_result_is_a_result_not_a_dead_worker(make_supervisor):
    # Item 12, the other way: a result bigger than the pipe buffers arrives
    # whole, and the worker keeps serving.
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    pid = sup.submit(tests.mp.pid, tt=TT_MP).result(WAIT)
    assert len(sup.submit(tests.mp.big, (9 << 20,), tt=TT_MP).result(WAIT)) == 9 << 20
    assert sup.submit(tests.mp.pid, tt=TT_MP).result(WAIT) == pid


def test_extreme_timeouts_neither_kill_nor_spin_the_process_pool(make_supervisor):
    # Item 5: timeout=inf/1e10 or idle_timeout=inf killed the pool's manager
    # thread, nan spun it.  Refused at submit (inf, nan), or waited for as
    # forever (1e10, 1e300), and every other task's timeout still fires.
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=2, reserve_normal=0, reserve_high=0, idle_timeout=1e10)
    for bad in (math.inf, math.nan, "5", -1.0, 0):
        with pytest.raises(ValueError, match="timeout"):
            sup.submit(tests.mp.square, (1,), tt=TT_MP, timeout=bad)
    with pytest.raises(ValueError, match="idle_timeout"):
        sup.create_mp_pool(idle_timeout=math.inf)
    far = [sup.submit(tests.mp.square, (i,), tt=TT_MP, timeout=t) for i, t in enumerate((1e10, 1e300))]
    assert [t.result(WAIT) for t in far] == [0, 1]
    hung = sup.submit(time.sleep, (60,), tt=TT_MP, timeout=0.3)
    with pytest.raises(TimeoutError):
        hung.result(WAIT)
    assert sup.submit(tests.mp.square, (3,), tt=TT_MP).result(WAIT) == 9
    assert sup.stop(wait=WAIT)
