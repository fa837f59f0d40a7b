"""Process faults: SIGKILL random workers while process tasks run."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import random
import signal
import threading
import time
from pathlib import Path

from atasker import WorkerDiedError
from tests.conftest import WAIT
from tests.reliability.conftest import size


def work(i: int) -> int:
    time.sleep(0.005)  # sleep-ok: the task's own work, so kills land mid-task
    return i


def zombies_of(pid: int) -> list[int]:
    """Child processes of *pid* in state Z (zombie), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_sigkill_workers_while_tasks_run(make_supervisor, figures):
    n, kills = size(200, 500), size(8, 20)
    sup = make_supervisor()
    sup.set_mp_pool(pool_size=2, reserve_normal=0, reserve_high=0)
    executor = sup.executor("mp")
    progress = threading.Semaphore(0)

    tasks = []
    for i in range(n):
        task = sup.submit(work, (i,), tt="mp")
        task.add_done_callback(lambda _t: progress.release())
        tasks.append(task)

    rnd = random.Random(7)
    killed = 0
    t0 = time.perf_counter()
    for _kill in range(kills):
        # Kill after every n // (kills + 1) completions: spread over the run.
        for _ in range(n // (kills + 1)):
            assert progress.acquire(timeout=WAIT)
        pids = executor.worker_pids()
        if pids:
            try:
                os.kill(rnd.choice(pids), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass  # it retired or died meanwhile
    _, not_done = concurrent.futures.wait(tasks, timeout=WAIT * 6)
    elapsed = time.perf_counter() - t0
    assert not not_done
    failed = [t for t in tasks if t.exception() is not None]
    assert all(isinstance(t.exception(), WorkerDiedError) for t in failed)
    assert len(failed) <= killed  # only the task on each killed worker
    assert all(t.result() == i for i, t in enumerate(tasks) if t.exception() is None)
    assert executor.wait_workers(2, timeout=WAIT)  # back to full size
    assert all(sup.get_task_info(t) is None for t in tasks)
    assert sup.stop(wait=WAIT)
    assert multiprocessing.active_children() == []  # no orphans
    assert zombies_of(os.getpid()) == []
    figures(tasks=n, kills=killed, failed=len(failed), completed=n - len(failed), seconds=round(elapsed, 2))


def test_sigkill_workers_while_short_tasks_are_sent_ahead(make_supervisor, figures):
    # Trivial tasks open the window: a killed worker holds tasks it has not
    # started, which must run elsewhere -- only the task it ran may fail.
    n, kills = size(3000, 20000), size(8, 30)
    sup = make_supervisor()
    sup.set_mp_pool(pool_size=2, reserve_normal=0, reserve_high=0)
    executor = sup.executor("mp")
    progress = threading.Semaphore(0)
    tasks = []
    for i in range(n):
        task = sup.submit(abs, (-i,), tt="mp")
        task.add_done_callback(lambda _t: progress.release())
        tasks.append(task)
    rnd = random.Random(11)
    killed = 0
    for _kill in range(kills):
        for _ in range(n // (kills + 1)):
            assert progress.acquire(timeout=WAIT)
        pids = executor.worker_pids()
        if pids:
            try:
                os.kill(rnd.choice(pids), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    _, not_done = concurrent.futures.wait(tasks, timeout=WAIT * 6)
    assert not not_done
    failed = [t for t in tasks if t.exception() is not None]
    assert all(isinstance(t.exception(), WorkerDiedError) for t in failed)
    assert len(failed) <= killed
    assert all(t.result() == i for i, t in enumerate(tasks) if t.exception() is None)
    stats = executor.statistics()
    assert executor.wait_workers(2, timeout=WAIT)
    assert sup.stop(wait=WAIT)
    assert multiprocessing.active_children() == []
    figures(tasks=n, kills=killed, failed=len(failed), resent=stats.get("resent", 0), window=stats["window"])
