"""The original atasker's supervisor methods, as its 0.3.14 and 0.7 docs describe them.

Names kept only for compatibility warn (``DeprecationWarning``); pytest
turns warnings into errors here, so every such call is in ``pytest.warns``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings

import pytest

import atasker
from atasker import TASK_HIGH, TASK_NORMAL, TT_MP, TT_THREAD, MissingExtensionError, SupervisorInfo, set_debug
from tests.conftest import WAIT
from tests.mp import kwargs_of


def deprecated(name: str) -> pytest.WarningsChecker:
    return pytest.warns(DeprecationWarning, match=rf"{name}.*kept for code written for the original atasker; use ")


# --------------------------------------------------------------- put_task


def test_put_task_starts_a_thread_object_and_mark_task_completed_is_accepted(supervisor):
    # 0.3.14 "Putting own threads": put_task(t, priority, delay); the thread
    # calls mark_task_completed() when it is done.
    ran, calls, go = threading.Event(), [], threading.Event()

    def mytask():
        ran.set()
        go.wait(WAIT)  # until the test left pytest.warns, which would catch this thread's warning too
        try:
            calls.append(supervisor.mark_task_completed())
        except DeprecationWarning as warning:  # filterwarnings=error makes it raise here
            calls.append(warning)

    t = threading.Thread(target=mytask, name="own-thread")
    with deprecated("put_task"):
        task = supervisor.put_task(t, priority=TASK_NORMAL, delay=None)
    go.set()
    assert ran.wait(WAIT)
    task.result(WAIT)
    assert not t.is_alive()  # the Thread object itself ran, and was joined
    assert task.name == "own-thread"
    assert len(calls) == 1 and isinstance(calls[0], DeprecationWarning)
    assert "mark_task_completed" in str(calls[0])


def test_put_task_thread_form_takes_priority_and_delay_positionally(supervisor):
    t = threading.Thread(target=lambda: None)
    with deprecated("put_task"):
        task = supervisor.put_task(t, TASK_HIGH, 0.01)
    assert task.result(WAIT) is None
    assert task.priority == TASK_HIGH


def test_put_task_0_7_target_form_passes_task_id_and_calls_back(supervisor):
    got, gate = [], threading.Event()

    def target(a, b=0, _task_id=None):
        got.append(_task_id)
        gate.wait(WAIT)
        return a + b

    with deprecated("put_task"):
        task = supervisor.put_task(
            target, args=(2,), kwargs={"b": 3}, callback=got.append, priority=TASK_HIGH, tt=TT_THREAD, task_id="job-1"
        )
    with deprecated("get_task"):
        assert supervisor.get_task("job-1") is task  # 0.7's ids work while the task lives
    gate.set()
    assert task.result(WAIT) == 5
    assert got == ["job-1", 5]
    with deprecated("get_task"):
        assert supervisor.get_task("job-1") is None  # ended: forgotten, as in 0.7


def test_put_task_0_7_form_without_task_id_sends_a_made_up_id_unless_told_not_to(supervisor):
    with deprecated("put_task"):
        task = supervisor.put_task(kwargs_of, kwargs={"x": 1})
    kwargs = task.result(WAIT)
    assert kwargs["x"] == 1 and isinstance(kwargs["_task_id"], str)
    with deprecated("put_task"):
        task = supervisor.put_task(kwargs_of, kwargs={"x": 1}, _send_task_id=False)
    assert task.result(WAIT) == {"x": 1}


def test_put_task_with_no_target_returns_none_as_0_7_did(supervisor):
    with deprecated("put_task"):
        assert supervisor.put_task(None) is None


def test_put_task_0_3_14_process_tuple_gets_task_id_and_calls_back(supervisor):
    results = []
    with deprecated("put_task"):
        task = supervisor.put_task((kwargs_of, (), {"x": 2}, results.append), tt=TT_MP, task_id="mp-1")
    kwargs = task.result(WAIT)
    assert kwargs == {"x": 2, "_task_id": "mp-1"}
    assert results == [kwargs]


def test_put_task_accepts_the_original_task_type_numbers(supervisor):
    with deprecated("put_task"):
        task = supervisor.put_task(kwargs_of, tt=2)  # the original's TT_MP was 2
    task.result(WAIT)
    assert task.tt == "mp"


def test_get_task_knows_ordinary_task_ids_too(supervisor):
    gate = threading.Event()
    task = supervisor.submit(gate.wait, (WAIT,))
    with deprecated("get_task"):
        assert supervisor.get_task(task.id) is task
    gate.set()
    task.result(WAIT)


def test_a_deprecation_warning_is_shown_once_per_call_site(supervisor):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        for _ in range(3):
            supervisor.mark_task_completed()  # one site, three calls
        supervisor.mark_task_completed(task_id="x")  # another site
    assert [w.category for w in seen] == [DeprecationWarning, DeprecationWarning]
    assert all(w.filename == __file__ for w in seen)  # they point at the caller


# --------------------------------------------------------------- schedulers


class Scheduler:
    """What the 0.3.14 docs ask of a scheduler: ``stop`` (regular) and ``loop`` (async)."""

    extra_loops = ["side_loop"]

    def __init__(self):
        self.looping = threading.Event()
        self.side = threading.Event()
        self.cancelled = threading.Event()
        self.stopped_with = []
        self._stop = None
        self._loop = None

    async def loop(self):
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.looping.set()
        try:
            await self._stop.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def side_loop(self):
        self.side.set()

    def stop(self, wait=True):
        self.stopped_with.append(wait)
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)


def test_register_scheduler_runs_its_loop_and_extra_loops_and_stop_stops_it(make_supervisor):
    sup = make_supervisor()
    scheduler = Scheduler()
    with deprecated("register_scheduler"):
        assert sup.register_scheduler(scheduler) is True
    assert scheduler.looping.wait(WAIT) and scheduler.side.wait(WAIT)
    assert "__supervisor__" in sup.get_aloops()  # the name the original reserved for its loop
    assert sup.stop() is True
    assert scheduler.stopped_with == [True]


def test_unregister_scheduler_cancels_its_loop(make_supervisor):
    sup = make_supervisor()
    scheduler = Scheduler()
    with deprecated("register_scheduler"):
        sup.register_scheduler(scheduler)
    assert scheduler.looping.wait(WAIT)
    with deprecated("unregister_scheduler"):
        assert sup.unregister_scheduler(scheduler) is True
    assert scheduler.cancelled.wait(WAIT)
    with deprecated("unregister_scheduler"):
        assert sup.unregister_scheduler(scheduler) is False
    sup.stop()
    assert scheduler.stopped_with == []  # no longer registered: not stopped


def test_sync_schedulers_are_stopped_with_the_supervisor_unless_unregistered(make_supervisor):
    sup = make_supervisor()
    kept, dropped = Scheduler(), Scheduler()
    with deprecated("register_sync_scheduler"):
        assert sup.register_sync_scheduler(kept) is True
    with deprecated("register_sync_scheduler"):
        sup.register_sync_scheduler(dropped)
    with deprecated("unregister_sync_scheduler"):
        assert sup.unregister_sync_scheduler(dropped) is True
    with deprecated("unregister_sync_scheduler"):
        assert sup.unregister_sync_scheduler(dropped) is False
    assert sup.get_info().schedulers == {kept: None}
    sup.stop(wait=False)
    assert kept.stopped_with == [False] and dropped.stopped_with == []


# --------------------------------------------------------------- stop / start


def test_stop_takes_the_documented_0_3_14_call(make_supervisor):
    sup = make_supervisor()
    task = sup.submit(pow, (2, 3))
    with deprecated(r"stop\(stop_schedulers"):
        assert sup.stop(wait=True, stop_schedulers=True, cancel_tasks=False) is True
    assert task.result(0) == 8 and not sup.is_active()


def test_stop_takes_the_original_positional_order(make_supervisor):
    sup = make_supervisor()
    with deprecated(r"stop\(stop_schedulers"):
        assert sup.stop(True, True, False) is True


def test_stop_without_stop_schedulers_does_not_warn(make_supervisor):
    assert make_supervisor().stop(wait=True, cancel_tasks=True) is True


def test_start_accepts_the_original_daemon_option(make_supervisor):
    sup = make_supervisor(start=False)
    sup.start(daemon=True)
    assert sup.submit(pow, (2, 2)).result(WAIT) == 4


def test_poll_delay_is_accepted_and_ignored(make_supervisor):
    sup = make_supervisor()
    assert sup.poll_delay == 0.1
    sup.poll_delay = 0.01
    assert sup.submit(pow, (3, 2)).result(WAIT) == 9


# --------------------------------------------------------------- get_info


def test_get_info_has_the_original_attributes_and_stays_a_dict(supervisor):
    gate = threading.Event()
    running = supervisor.submit(gate.wait, (WAIT,))
    aloop = supervisor.create_aloop("info-loop")
    info = supervisor.get_info()
    assert isinstance(info, dict) and isinstance(info, SupervisorInfo)
    assert info["task_types"]["thread"]["running"] == 1  # the dict, as before
    assert info.task_types is info["task_types"]  # keys are attributes too
    assert info.thread_tasks_count == 1 and info.thread_tasks == [running.id]
    assert info.mp_tasks_count == 0
    assert (info.thread_pool_size, info.thread_reserve_normal, info.thread_reserve_high) == (4, 2, 2)
    assert info.aloops == {"info-loop": aloop}
    assert info.tasks == info.task_info == {running.id: running}
    assert info.id == supervisor.name and info.active is True
    assert "thread_tasks_count" not in info  # attributes, not keys: dict users see what they saw
    with pytest.raises(AttributeError, match="no 'nonsense'"):
        info.nonsense  # noqa: B018
    gate.set()
    running.result(WAIT)


def test_get_info_has_mp_attributes_once_the_process_pool_exists(supervisor):
    supervisor.set_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    supervisor.submit(pow, (2, 2), tt=TT_MP).result(WAIT)
    info = supervisor.get_info()
    assert (info.mp_pool_size, info.mp_reserve_normal, info.mp_reserve_high) == (1, 0, 0)
    assert info.mp_tasks_count == 0 and info.mp_tasks == []


# --------------------------------------------------------------- mp_pool, set_debug


def test_mp_pool_is_none_until_the_pool_is_sized(make_supervisor):
    sup = make_supervisor()
    with deprecated("mp_pool"):
        assert sup.mp_pool is None
    sup.set_mp_pool(pool_size=1)
    with deprecated("mp_pool"):
        pool = sup.mp_pool
    assert pool is sup.executor(TT_MP)
    other = make_supervisor()
    other.create_mp_pool(start_method="spawn")  # as the original: create_mp_pool makes the pool
    with deprecated("mp_pool"):
        assert other.mp_pool is other.executor(TT_MP)


def test_set_debug_turns_the_libraries_debug_log_on_and_off():
    log = logging.getLogger("atasker")
    before = log.level
    try:
        set_debug()
        assert log.getEffectiveLevel() == logging.DEBUG
        atasker.set_debug(False)
        assert log.level == logging.NOTSET
    finally:
        log.setLevel(before)


# --------------------------------------------------------------- blocking


@pytest.mark.parametrize(
    "call",
    [
        lambda sup: sup.put_task(pow, (2, 2)),
        lambda sup: sup.mark_task_completed(),
        lambda sup: sup.get_task("x"),
        lambda sup: sup.register_scheduler(Scheduler()),
        lambda sup: sup.register_sync_scheduler(Scheduler()),
        lambda sup: sup.unregister_scheduler(Scheduler()),
        lambda sup: sup.unregister_sync_scheduler(Scheduler()),
        lambda sup: sup.stop(stop_schedulers=True),
    ],
)
def test_blocking_the_compat_plugin_takes_the_original_names_with_it(make_supervisor, call):
    sup = make_supervisor(block_plugins=["atasker.builtin.compat"])
    with pytest.raises(MissingExtensionError, match=r"needs plugin 'atasker.builtin.compat'.*which is blocked"):
        call(sup)
    info = sup.get_info()  # the core's info stays
    assert info["active"] is True and not hasattr(info, "thread_tasks_count")


def test_blocking_the_process_plugin_takes_mp_pool_with_it(make_supervisor):
    sup = make_supervisor(block_plugins=["atasker.builtin.mp"])
    with pytest.raises(MissingExtensionError, match=r"needs plugin 'atasker.builtin.mp'"):
        sup.mp_pool  # noqa: B018


def test_background_task_accepts_the_0_3_14_group_and_daemon_with_a_warning(supervisor):
    with deprecated(r"background_task\(group=..., daemon=...\)"):
        starter = atasker.background_task(pow, group=None, daemon=True, supervisor=supervisor)
    assert starter(2, 4).result(WAIT) == 16


def test_get_info_accepts_the_original_arguments(supervisor):
    info = supervisor.get_info(tt=TT_THREAD, aloops=False, schedulers=False)
    assert info.thread_tasks_count == 0


def test_a_worker_takes_the_original_executor_func_keyword(supervisor):
    ran = threading.Event()
    worker = atasker.BackgroundEventWorker(worker_name="w", executor_func=lambda **kw: ran.set(), supervisor=supervisor)
    worker.start()
    worker.trigger()
    assert ran.wait(WAIT)
    worker.stop()


@pytest.mark.parametrize(
    "call",
    [
        lambda sup: sup.put_task(pow, (2, 2), _send_task_id=False).result(WAIT),
        lambda sup: sup.get_task("x"),
        lambda sup: sup.mp_pool,
        lambda sup: sup.register_sync_scheduler(Scheduler()),
        lambda sup: sup.stop(stop_schedulers=True),
        lambda sup: atasker.BackgroundQueueWorker(func=print, supervisor=sup).put_threadsafe(1),
        lambda sup: atasker.background_task(print, daemon=True),
    ],
)
def test_every_deprecation_warning_points_at_the_callers_line(make_supervisor, call):
    sup = make_supervisor()
    with pytest.warns(DeprecationWarning) as seen:
        call(sup)
    assert [w.filename for w in seen] == [__file__]


def test_the_original_task_type_numbers_elsewhere_fail_naming_the_constants(supervisor):
    with pytest.raises(TypeError, match="such as TT_THREAD, TT_MP, TT_COROUTINE, got 2"):
        atasker.background_task(print, tt=2, supervisor=supervisor)
