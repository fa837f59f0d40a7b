"""supervisor.map: results in order, chunks as ordinary tasks, lazy input,
bounded chunks in flight, failures per chunk, timeouts, process chunks."""

from __future__ import annotations

import concurrent.futures
import itertools
import threading

import pytest

import tests.mp
from atasker import TASK_HIGH, TASK_LOW, TT_MP, WorkerDiedError
from atasker.extras.batch import MAX_CHUNKSIZE, default_chunksize, run_chunk
from tests.conftest import WAIT


def square(x: int) -> int:
    return x * x


def test_results_in_input_order(supervisor):
    assert list(supervisor.map(square, range(1000))) == [x * x for x in range(1000)]
    assert list(supervisor.map(pow, [2, 3, 4], [5, 2])) == [32, 9]  # several iterables: shortest wins
    assert list(supervisor.map(square, [])) == []


def test_default_chunksize_rule():
    # Pool.map's rule for a known length: about four chunks per worker.
    assert default_chunksize(100_000, 2) == 12_500
    assert default_chunksize(10, 4) == 1
    assert default_chunksize(101, 5) == 6
    assert default_chunksize(None, 4) == 0  # unknown: doubling from 1


def test_chunks_are_ordinary_tasks_with_the_priority(supervisor):
    it = supervisor.map(square, range(100), chunksize=10, priority=TASK_HIGH, window=10)
    handles = it.tasks  # all ten in flight: the window allows it
    assert list(it) == [x * x for x in range(100)]
    assert len(handles) == 10 == it.submitted and it.chunksize == 10
    assert all(t.priority == TASK_HIGH and t.tt == "thread" for t in handles)
    assert handles[3].result(WAIT) == [x * x for x in range(30, 40)]
    assert handles[0].name == "map square"
    assert it.tasks == []  # consumed chunks are not kept


def test_get_info_counts_chunks_and_priorities_apply_per_chunk(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    release = threading.Event()
    order = []
    blocker = sup.submit(release.wait, (WAIT,))
    low = sup.map(order.append, ["low"] * 6, chunksize=2, priority=TASK_LOW)
    high = sup.map(order.append, ["high"] * 4, chunksize=2, priority=TASK_HIGH)
    info = sup.get_info()["task_types"]["thread"]
    assert info["waiting"] == {TASK_HIGH: 2, TASK_LOW: 3}  # chunks, not items
    release.set()
    assert list(low) == [None] * 6 and list(high) == [None] * 4
    assert blocker.result(WAIT) is True
    assert order == ["high"] * 4 + ["low"] * 6


def test_input_is_read_lazily_with_a_bounded_window(make_supervisor):
    sup = make_supervisor(pool_size=2, reserve_normal=0, reserve_high=0)
    pulled = itertools.count()

    def endless():
        while True:
            next(pulled)
            yield 1

    it = sup.map(square, endless(), chunksize=5, window=3)
    assert it.submitted == 3 == len(it.tasks)  # submitted at once: the window, not the input
    first = list(itertools.islice(it, 12))
    assert first == [1] * 12
    assert it.submitted <= 3 + 3 and len(it.tasks) <= 3  # consumed chunks were replaced, no more
    assert next(pulled) <= 5 * 6 + 1
    handles = it.tasks
    it.cancel()
    concurrent.futures.wait(handles, timeout=WAIT)


def test_unknown_length_doubles_up_to_the_cap(supervisor):
    it = supervisor.map(square, (x for x in range(5000)), window=100)
    handles = it.tasks  # every chunk: the window is wider than the input
    assert list(it) == [x * x for x in range(5000)]
    sizes = [len(t.result(WAIT)) for t in handles]
    assert sizes[:4] == [1, 2, 4, 8] and max(sizes) == MAX_CHUNKSIZE


def fail_on_13(x: int) -> int:
    if x == 13:
        raise ValueError("13")
    return x


def test_a_failed_chunk_fails_its_items_only(supervisor):
    it = supervisor.map(fail_on_13, range(40), chunksize=10)
    handles = it.tasks
    assert len(handles) == 4
    got = [next(it) for _ in range(10)]  # the first chunk is fine
    assert got == list(range(10))
    with pytest.raises(ValueError, match="13"):
        next(it)  # the second chunk's first item: the chunk failed as a whole
    assert isinstance(handles[1].exception(WAIT), ValueError)
    concurrent.futures.wait(handles, timeout=WAIT)
    # The map gave up: the chunks after it either ran (unaffected) or were cancelled.
    for i, task in enumerate(handles[2:], start=2):
        assert task.cancelled() or task.result() == list(range(10 * i, 10 * i + 10))


def test_timeout_is_from_the_call(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    release = threading.Event()
    it = sup.map(release.wait, [WAIT, WAIT], chunksize=1, timeout=0.2)
    handles = it.tasks
    try:
        # As Executor.map: concurrent.futures.TimeoutError (the builtin from 3.11).
        with pytest.raises(concurrent.futures.TimeoutError):
            list(it)
    finally:
        release.set()
    concurrent.futures.wait(handles, timeout=WAIT)
    assert handles[1].cancelled()  # the map gave up: its waiting chunk went with it


def test_bad_arguments(supervisor):
    with pytest.raises(TypeError):
        supervisor.map(42, [1])
    with pytest.raises(ValueError):
        supervisor.map(square, [1], chunksize=0)
    with pytest.raises(TypeError):
        supervisor.map(square)


def test_run_chunk_is_module_level_and_applies_in_order():
    assert run_chunk(square, [1, 2, 3]) == [1, 4, 9]
    assert run_chunk(pow, [(2, 3), (3, 2)], True) == [8, 9]
    assert run_chunk.__module__ == "atasker.extras.batch"


@pytest.fixture
def mp_sup(make_supervisor):
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=2, reserve_normal=0, reserve_high=0)
    return sup


def test_process_chunks(mp_sup):
    it = mp_sup.map(tests.mp.square, range(10_000), tt=TT_MP)
    assert all(t.tt == TT_MP for t in it.tasks)
    assert list(it) == [x * x for x in range(10_000)]
    assert it.chunksize == 1250 and it.submitted == 8  # ceil(10000 / (4 * 2 workers))


def die_on_7(x: int) -> int:
    if x == 7:
        tests.mp.exit_now(3)
    return x


def test_a_chunk_whose_worker_dies_fails_only_its_items(mp_sup):
    it = mp_sup.map(die_on_7, range(20), tt=TT_MP, chunksize=5)
    handles = it.tasks
    assert [next(it) for _ in range(5)] == list(range(5))
    with pytest.raises(WorkerDiedError):
        next(it)
    others = handles[2:]
    concurrent.futures.wait(others, timeout=WAIT)
    assert all(t.cancelled() or t.result() == list(range(5 * (i + 2), 5 * (i + 3))) for i, t in enumerate(others))


def test_global_supervisor_map_seed_style():
    import subprocess
    import sys

    code = (
        "from atasker import task_supervisor\n"
        "def sq(x): return x * x\n"
        "print(sum(task_supervisor.map(sq, range(100))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT * 3)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sum(x * x for x in range(100)))
