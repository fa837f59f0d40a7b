"""A process pool sized before ``start()`` is started with the supervisor,
as the original's ``set_mp_pool()`` forked its ``multiprocessing.Pool``."""

from __future__ import annotations

from atasker import TT_MP
from tests.conftest import WAIT
from tests.mp import pid


def test_a_pool_sized_before_start_has_its_workers_when_start_returns(make_supervisor):
    sup = make_supervisor(start=False)
    sup.set_mp_pool(pool_size=2, reserve_normal=0, reserve_high=0)
    sup.start()
    executor = sup.executor(TT_MP)
    assert len(executor.worker_pids()) == 2  # forked before any task was submitted
    assert executor.statistics()["spawned"] == 2
    assert sup.submit(pid, tt=TT_MP).result(WAIT) in executor.worker_pids()


def test_create_mp_pool_before_start_prestarts_unless_told_not_to(make_supervisor):
    warm = make_supervisor(start=False)
    warm.create_mp_pool(processes=1, reserve_normal=0, reserve_high=0)
    warm.start()
    assert len(warm.executor(TT_MP).worker_pids()) == 1

    lazy = make_supervisor(start=False)
    lazy.create_mp_pool(pool_size=1, prestart=False)
    lazy.start()
    assert lazy.executor(TT_MP).worker_pids() == []


def test_an_unsized_pool_still_starts_on_first_use(make_supervisor):
    sup = make_supervisor()
    assert sup.executor(TT_MP).worker_pids() == []
