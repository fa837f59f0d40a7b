"""Workers: every kind, sync and async, overrides, stop, errors, timing."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time

import pytest

from atasker import (
    TASK_HIGH,
    TASK_LOW,
    BackgroundAsyncWorker,
    BackgroundEventWorker,
    BackgroundIntervalWorker,
    BackgroundQueueWorker,
    BackgroundWorker,
    background_worker,
)
from tests.conftest import WAIT


class Counter:
    """Counts runs; sets an event when *target* is reached."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.calls: list[tuple] = []
        self.lock = threading.Lock()
        self.reached = threading.Event()

    def hit(self, *args, **kwargs) -> int:
        with self.lock:
            self.calls.append((args, kwargs))
            n = len(self.calls)
        if n >= self.target:
            self.reached.set()
        return n


def test_background_worker_loops_until_false(supervisor):
    counter = Counter(5)

    @background_worker(supervisor=supervisor)
    def work(*args, **kwargs):
        return False if counter.hit(*args, **kwargs) >= 5 else None

    assert isinstance(work, BackgroundWorker)
    work.start(1, x=2)
    assert counter.reached.wait(WAIT)
    assert work.stop(wait=WAIT)
    assert len(counter.calls) == 5 and not work.is_active()
    args, kwargs = counter.calls[0]
    assert args == (1,) and kwargs["x"] == 2
    assert kwargs["_worker"] is work and kwargs["_worker_name"] == "work"


def test_worker_class_with_run_and_o(supervisor):
    counter = Counter(3)

    class MyWorker(BackgroundWorker):
        def run(self, **kwargs):
            n = counter.hit(**kwargs)
            if n >= 3:
                return False

    worker = MyWorker(supervisor=supervisor, o="the-object", name="mine")
    worker.start()
    assert counter.reached.wait(WAIT)
    worker.stop()
    assert counter.calls[0][1]["o"] == "the-object"
    assert counter.calls[0][1]["_worker_name"] == "mine"


def test_start_time_overrides(supervisor):
    seen = []
    done = threading.Event()

    @background_worker(supervisor=supervisor, priority=TASK_LOW)
    def work(**kwargs):
        (task,) = [t for t in supervisor.get_tasks() if t.status == 1]  # this run
        seen.append((kwargs["_worker_name"], task.priority))
        done.set()
        return False

    work.start(_worker_name="renamed", _priority=TASK_HIGH)
    assert done.wait(WAIT)
    work.stop()
    assert seen == [("renamed", TASK_HIGH)]


def test_stop_from_inside_and_outside(supervisor):
    inside = threading.Event()

    @background_worker(supervisor=supervisor)
    def stops_itself(_worker, **kwargs):
        _worker.stop()  # must not wait for itself
        inside.set()

    stops_itself.start()
    assert inside.wait(WAIT)
    assert stops_itself.stop(wait=WAIT)
    assert not stops_itself.is_active()

    counter = Counter(3)

    @background_worker(supervisor=supervisor)
    def forever(**kwargs):
        counter.hit()

    forever.start()
    assert counter.reached.wait(WAIT)
    assert forever.stop(wait=WAIT)
    count = len(counter.calls)
    assert not forever.is_active()
    assert supervisor.get_tasks() == [] and len(counter.calls) == count


def test_errors_go_to_on_error_and_the_worker_goes_on(supervisor):
    errors = []
    counter = Counter(3)

    def on_error(e, **kwargs):
        errors.append((type(e), kwargs))

    @background_worker(supervisor=supervisor, on_error=on_error, on_error_kwargs={"where": "w"})
    def flaky(**kwargs):
        n = counter.hit()
        if n >= 3:
            return False
        raise ValueError(n)

    flaky.start()
    assert counter.reached.wait(WAIT)
    flaky.stop(wait=WAIT)
    assert errors == [(ValueError, {"where": "w"}), (ValueError, {"where": "w"})]


def test_async_worker_runs_on_an_aloop(supervisor):
    counter = Counter(3)
    threads = set()

    @background_worker(supervisor=supervisor)
    async def work(**kwargs):
        await asyncio.sleep(0)
        threads.add(threading.current_thread().name)
        return False if counter.hit() >= 3 else None

    assert isinstance(work, BackgroundAsyncWorker)
    work.start()
    assert counter.reached.wait(WAIT)
    assert work.stop(wait=WAIT)
    assert all(name.startswith("supervisor_aloop_") for name in threads)


def test_interval_worker_is_accurate(supervisor):
    runs = []

    @background_worker(interval=0.02, supervisor=supervisor)
    def tick(**kwargs):
        runs.append(time.monotonic())
        time.sleep(0.005)  # sleep-ok: the work a run does, not synchronisation

    done = threading.Event()
    threading.Timer(2.0, done.set).start()
    t0 = time.monotonic()
    tick.start()
    assert done.wait(WAIT)
    tick.stop(wait=WAIT)
    in_window = [t for t in runs if t - t0 < 2.0]
    assert 90 <= len(in_window) <= 110, len(in_window)


def test_interval_and_delay_are_exclusive():
    with pytest.raises(ValueError, match="interval and delay are exclusive"):
        BackgroundIntervalWorker(func=print, interval=1, delay=1)
    with pytest.raises(ValueError, match="interval must be a number"):
        BackgroundIntervalWorker(func=print, interval=-1)


def test_interval_worker_delay_and_trigger(supervisor):
    counter = Counter(2)

    @background_worker(delay=30, supervisor=supervisor)
    def slow(**kwargs):
        counter.hit()

    slow.start()  # first run at once, the next in 30 s ...
    slow.trigger()  # ... unless triggered
    assert counter.reached.wait(WAIT)
    assert slow.stop(wait=WAIT)


def test_interval_worker_start_overrides_and_async(supervisor):
    counter = Counter(3)

    @background_worker(interval=30, supervisor=supervisor)
    async def fast(**kwargs):
        counter.hit()

    fast.start(_interval=0.01)
    assert counter.reached.wait(WAIT)
    assert fast.stop(wait=WAIT)


def test_queue_worker_drains_10000_items(supervisor):
    got = []
    done = threading.Event()

    @background_worker(q=True, supervisor=supervisor)
    def consume(item, **kwargs):
        got.append(item)
        if len(got) == 10000:
            done.set()

    assert isinstance(consume, BackgroundQueueWorker)
    consume.start()
    feeders = [threading.Thread(target=lambda k=k: [consume.put((k, i)) for i in range(2500)]) for k in range(4)]
    for t in feeders:
        t.start()
    for t in feeders:
        t.join(WAIT)
    assert done.wait(WAIT * 3)
    consume.stop(wait=WAIT)
    assert sorted(got) == sorted((k, i) for k in range(4) for i in range(2500))
    for k in range(4):  # FIFO per producer
        assert [i for kk, i in got if kk == k] == list(range(2500))


def test_priority_queue_worker(supervisor):
    got = []
    done = threading.Event()

    @background_worker(q=queue.PriorityQueue, supervisor=supervisor)
    def consume(item, **kwargs):
        got.append(item)
        if len(got) == 3:
            done.set()

    for item in (3, 1, 2):
        consume.put(item)  # queued before start: nothing runs yet
    consume.start()
    assert done.wait(WAIT)
    consume.stop()
    assert got == [1, 2, 3]


def test_queue_worker_async_executor(supervisor):
    got = []
    done = threading.Event()

    @background_worker(q=asyncio.Queue, supervisor=supervisor)
    async def consume(item, **kwargs):
        got.append(item)
        if len(got) == 2:
            done.set()

    consume.start()
    consume.put("a")
    consume.put("b")
    assert done.wait(WAIT)
    consume.stop()
    assert got == ["a", "b"]


def test_event_worker(supervisor):
    counter = Counter(2)

    @background_worker(e=True, supervisor=supervisor)
    def on_event(**kwargs):
        counter.hit()

    assert isinstance(on_event, BackgroundEventWorker)
    on_event.start()
    assert supervisor.get_tasks() == []  # nothing runs until triggered
    on_event.trigger()
    threading.Thread(target=on_event.trigger).start()
    assert counter.reached.wait(WAIT)
    on_event.stop(wait=WAIT)


def test_restart(supervisor):
    counter = Counter(1)

    @background_worker(e=True, supervisor=supervisor)
    def on_event(*args, **kwargs):
        counter.hit(*args)

    on_event.start("first")
    on_event.restart("second")
    on_event.trigger()
    assert counter.reached.wait(WAIT)
    on_event.stop(wait=WAIT)
    assert counter.calls[0][0] == ("second",)


def test_supervisor_stop_stops_workers(make_supervisor):
    sup = make_supervisor()
    counter = Counter(3)

    @background_worker(supervisor=sup)
    def forever(**kwargs):
        counter.hit()

    @background_worker(interval=0.01, supervisor=sup)
    def ticking(**kwargs):
        counter.hit()

    forever.start()
    ticking.start()
    assert counter.reached.wait(WAIT)
    assert set(sup.get_workers()) == {forever, ticking}
    assert sup.stop(wait=WAIT)
    assert not forever.is_active() and not ticking.is_active()


def test_process_pool_worker(supervisor):
    from tests.mpworker import SquareWorker

    done = threading.Event()
    SquareWorker.results = []
    worker = SquareWorker(supervisor=supervisor, name="squares")
    original = worker.process_result

    def process_result(result):
        value = original(result)
        if len(SquareWorker.results) == 3:
            done.set()
        return value

    worker.process_result = process_result
    worker.start()
    for item in (2, 3, -4):
        worker.put(item)
    assert done.wait(WAIT * 3)
    assert worker.stop(wait=WAIT)
    assert [r[0] for r in SquareWorker.results] == [4, 9, 16]
    assert all(pid != os.getpid() for _, pid, _ in SquareWorker.results)
    assert SquareWorker.results[0][2] == "squares"


def test_queue_worker_stop_processes_the_queued_items(supervisor):
    got = []

    @background_worker(q=True, supervisor=supervisor)
    def consume(item, **kwargs):
        got.append(item)

    for i in range(10):
        consume.put(i)
    consume.start()
    assert consume.stop(wait=WAIT)  # returns once the 10 items are processed
    assert got == list(range(10))
    assert not consume.is_active() and consume.qsize() == 0
    assert supervisor.get_tasks() == []


def test_queue_worker_stop_from_inside_drains_too(supervisor):
    got = []
    done = threading.Event()

    @background_worker(q=True, supervisor=supervisor)
    def consume(item, _worker, **kwargs):
        got.append(item)
        if item == 0:
            _worker.stop()  # does not wait for itself; items 1..9 still run
        if len(got) == 10:
            done.set()

    for i in range(10):
        consume.put(i)
    consume.start()
    assert done.wait(WAIT)
    assert consume.stop(wait=WAIT)
    assert got == list(range(10)) and not consume.is_active()


def test_queue_worker_items_put_after_stop_wait_for_a_later_start(supervisor):
    got = []
    gate = threading.Event()
    running = threading.Event()

    @background_worker(q=True, supervisor=supervisor)
    def consume(item, **kwargs):
        running.set()
        gate.wait(WAIT)
        got.append(item)

    consume.start()
    consume.put("queued-1")
    assert running.wait(WAIT)
    consume.put("queued-2")
    stopper = threading.Thread(target=consume.stop)
    stopper.start()
    consume.put("after-stop")  # may land before or after stop() took its list
    gate.set()
    stopper.join(WAIT)
    assert not stopper.is_alive() and not consume.is_active()
    assert got[:2] == ["queued-1", "queued-2"]
    left = 3 - len(got)
    assert consume.qsize() == left
    consume.start()
    assert consume.stop(wait=WAIT)
    assert got == ["queued-1", "queued-2", "after-stop"]


def test_queue_worker_stop_without_wait_keeps_and_logs_the_items(supervisor, caplog):
    got = []
    gate = threading.Event()
    running = threading.Event()

    @background_worker(q=True, supervisor=supervisor)
    def consume(item, **kwargs):
        running.set()
        gate.wait(WAIT)
        got.append(item)

    for i in range(5):
        consume.put(i)
    consume.start()
    assert running.wait(WAIT)
    with caplog.at_level("WARNING", logger="atasker"):
        assert consume.stop(wait=False) is False  # item 0 is still running
    assert "4 item(s) still queued" in caplog.text and "consume" in caplog.text
    gate.set()
    assert consume.stop(wait=WAIT)
    assert got == [0] and consume.qsize() == 4  # kept, not dropped
    consume.start()
    assert consume.stop(wait=WAIT)
    assert got == [0, 1, 2, 3, 4]


def test_queue_worker_stop_with_a_timeout_keeps_the_rest(supervisor, caplog):
    got = []
    gate = threading.Event()
    running = threading.Event()

    @background_worker(q=True, supervisor=supervisor)
    def consume(item, **kwargs):
        running.set()
        gate.wait(WAIT)
        got.append(item)

    for i in range(3):
        consume.put(i)
    consume.start()
    assert running.wait(WAIT)
    with caplog.at_level("WARNING", logger="atasker"):
        assert consume.stop(wait=0.05) is False  # item 0 blocks the drain
    assert "2 item(s) still queued" in caplog.text
    gate.set()
    assert consume.stop(wait=WAIT)
    assert got == [0] and consume.qsize() == 2


def test_queue_worker_run_cancelled_before_it_started_keeps_its_item(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,))  # the only slot is busy
    got = []

    @background_worker(q=True, supervisor=sup)
    def consume(item, **kwargs):
        got.append(item)

    consume.start()
    consume.put("a")  # its run waits for the slot
    consume.put("b")
    assert consume.stop(wait=False) is True  # the waiting run is cancelled
    assert consume.qsize() == 2  # "a" went back to the queue
    gate.set()
    blocker.result(WAIT)
    consume.start()
    assert consume.stop(wait=WAIT)
    assert sorted(got) == ["a", "b"]


def test_event_worker_stop_runs_the_trigger_already_asked_for(supervisor):
    runs = []
    second = threading.Event()

    @background_worker(e=True, supervisor=supervisor)
    def on_event(_worker, **kwargs):
        runs.append(1)
        if len(runs) == 1:
            _worker.trigger()  # something happened while we ran ...
            _worker.stop()  # ... and it is still handled before stopping
        else:
            second.set()

    on_event.start()
    on_event.trigger()
    assert second.wait(WAIT)
    assert on_event.stop(wait=WAIT)
    assert runs == [1, 1] and not on_event.is_active()


def test_event_worker_stop_without_wait_keeps_the_trigger(supervisor):
    runs = []
    gate = threading.Event()
    running = threading.Event()

    @background_worker(e=True, supervisor=supervisor)
    def on_event(**kwargs):
        running.set()
        gate.wait(WAIT)
        runs.append(1)

    on_event.start()
    on_event.trigger()
    assert running.wait(WAIT)
    on_event.trigger()  # folded into one more run
    on_event.stop(wait=False)
    gate.set()
    assert on_event.stop(wait=WAIT)
    assert runs == [1]
    on_event.start()  # the trigger was kept: it runs now
    assert on_event.stop(wait=WAIT)
    assert runs == [1, 1]
