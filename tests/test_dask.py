"""Task type "dask" (plugins/atasker-dask) on real Dask clusters.

One ``LocalCluster`` (two single-thread worker processes) serves the module;
each test has its own supervisor pointed at it with
``atasker_dask.configure``.  Other tests start their own: a lazily started
local cluster, a TLS one, and ``dask scheduler`` / ``dask worker`` processes
started with the real command-line tools (the scale-out and
scheduler-loss test).

Tasks block on ``distributed.Event``s the test controls; nothing here waits
with ``sleep``.  Task functions are module-level so that worker processes
import them (the lambda, closure and ``__main__`` tests cover the others).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import operator
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest.importorskip(
    "atasker_dask", reason="needs the atasker-dask plugin (and dask distributed): pip install -e plugins/atasker-dask"
)

import atasker_dask
from atasker_dask import (
    ENV_ADDRESS,
    TT_DASK,
    DaskTaskTimeoutError,
    DaskWorkerDiedError,
    SchedulerLostError,
    SchedulerUnavailableError,
)
from distributed import Client, Event
from distributed.core import Status
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin
from distributed.security import Security

from atasker import (
    TASK_CRITICAL,
    TASK_HIGH,
    TASK_LOW,
    RemoteTraceback,
    SupervisorStoppedError,
    TaskPicklingError,
    WorkerDiedError,
    background_task,
    co_mp_apply,
)
from tests.conftest import WAIT

# No warning filter: the clusters here bind their HTTP servers to free ports
# (Dask warns about a taken 8787 otherwise) and every client and cluster is
# closed, so Dask emits no warning that pytest's "error" would turn into a
# failure.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and processes")

ROOT = Path(__file__).resolve().parent.parent
DASK = Path(sys.executable).parent / "dask"


# ------------------------------------------------------------- task functions


def blocked(started: str, release: str) -> int:
    """Set Event *started*, wait for Event *release*; return the worker's pid."""
    Event(started).set()
    if not Event(release).wait(60):
        raise TimeoutError(f"event {release!r} was never set")
    return os.getpid()


def stamp(tag: str) -> tuple[str, float]:
    """When this task started (CLOCK_MONOTONIC is one clock for every process)."""
    return tag, time.monotonic()


def fail(message: str) -> None:
    raise ValueError(message)


def suicide() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def takes_submit_keywords(key: str, priority: int = 0, pure: object = None, func: object = None) -> tuple:
    return key, priority, pure, func


# -------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster():
    """The module's cluster, as atasker starts one (worker-saturation 1.0).

    ``allowed-failures`` 1 instead of Dask's 3: a task whose workers keep
    dying is given up after two deaths, which keeps that test short.
    """
    with atasker_dask.local_cluster(
        n_workers=2, threads_per_worker=1, config={"distributed.scheduler.allowed-failures": 1}
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    """The test's own client: events, pids, scheduler state."""
    with Client(cluster, set_as_default=False) as client:
        yield client


def dask_supervisor(make_supervisor, cluster, **settings):
    sup = make_supervisor(plugins=[atasker_dask])
    atasker_dask.configure(sup, address=cluster.scheduler_address, connect_timeout=WAIT, **settings)
    return sup


@pytest.fixture
def sup(make_supervisor, cluster, client):
    """A supervisor whose dask tasks go to the module's cluster, both workers up."""
    client.wait_for_workers(2, timeout=WAIT * 2)  # a test before may have killed one
    return dask_supervisor(make_supervisor, cluster)


@pytest.fixture
def gate(client, request):
    """``gate()`` -> a fresh distributed Event; all are set at teardown."""
    events = []

    def make() -> Event:
        event = Event(f"{request.node.name}-{uuid.uuid4().hex}", client=client)
        events.append(event)
        return event

    yield make
    for event in events:
        event.set()


def executor(sup):
    return sup.executor(TT_DASK)


def key_on_scheduler(client, key) -> bool:
    return client.run_on_scheduler(lambda dask_scheduler: key in dask_scheduler.tasks)


class SchedulerWatch(SchedulerPlugin):
    """Sets ``ready`` once *count* keys containing *match* reached one of *states*."""

    def __init__(self, match: str, states: tuple[str, ...], count: int) -> None:
        self.match, self.states, self.count = match, states, count
        self.seen: set = set()
        self.ready = threading.Event()

    def transition(self, key, start, finish, *args, **kwargs):
        if self.match in str(key) and finish in self.states:
            self.seen.add(key)
            if len(self.seen) >= self.count:
                self.ready.set()


_watches: dict[str, SchedulerWatch] = {}


def _add_watch(name: str, dask_scheduler=None) -> None:
    # Runs on the scheduler's event loop, in this process (a LocalCluster).
    dask_scheduler.add_plugin(_watches[name], name=name)


def _remove_watch(name: str, dask_scheduler=None) -> None:
    dask_scheduler.remove_plugin(name=name)


@contextlib.contextmanager
def scheduler_watch(client, match: str, states: tuple[str, ...], count: int = 1) -> Iterator[threading.Event]:
    """An event set when the scheduler moved *count* matching keys to *states*."""
    name = uuid.uuid4().hex
    _watches[name] = watch = SchedulerWatch(match, states, count)
    client.run_on_scheduler(_add_watch, name)
    try:
        yield watch.ready
    finally:
        client.run_on_scheduler(_remove_watch, name)
        del _watches[name]


# ------------------------------------------------------------------ the basics


def test_entry_point_and_autoload(make_supervisor):
    eps = {ep.name: ep for ep in entry_points(group="atasker")}
    assert eps["dask"].dist.name == "atasker-dask"
    sup = make_supervisor(autoload=True)
    assert TT_DASK in sup.task_types()
    assert sup.plugin_manager.records["dask"].distribution == "atasker-dask"


def test_result_statuses_and_callback(sup, client, gate):
    sup.set_pool(TT_DASK, pool_size=1, reserve_normal=0, reserve_high=0)
    started, release = gate(), gate()
    got = []
    running = background_task(blocked, tt=TT_DASK, supervisor=sup, callback=got.append)(started.name, release.name)
    queued = sup.submit(operator.mul, (6, 7), tt=TT_DASK)
    assert started.wait(WAIT)
    assert sup.get_task_info(running).status == 1  # on the cluster
    assert sup.get_task_info(queued).status == 0  # waiting for an atasker slot
    release.set()
    pid = running.result(WAIT)
    assert pid in client.run(os.getpid).values() and pid != os.getpid()
    assert got == [pid]  # the callback ran before the handle resolved
    assert queued.result(WAIT) == 42
    assert sup.get_task_info(running) is None and sup.get_task_info(queued) is None
    assert executor(sup).statistics()["on_cluster"] == 0


def test_exception_keeps_its_type_and_the_remote_traceback(sup):
    task = sup.submit(fail, ("bad input",), tt=TT_DASK)
    with pytest.raises(ValueError, match="bad input") as err:
        task.result(WAIT)
    cause = err.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in fail" in cause.tb and "raise ValueError(message)" in cause.tb
    assert task.outcome == "failed" and task.error is err.value


def test_lambda_closure_and_submit_keyword_names(sup):
    offset = 10

    def closure(x):
        return x + offset

    assert sup.submit(closure, (5,), tt=TT_DASK).result(WAIT) == 15
    assert sup.submit(lambda: os.getpid(), tt=TT_DASK).result(WAIT) != os.getpid()
    # key / priority / pure / func are Client.submit keywords too: they reach the function.
    task = sup.submit(takes_submit_keywords, kwargs={"key": "k", "priority": 3, "func": "f"}, tt=TT_DASK)
    assert task.result(WAIT) == ("k", 3, None, "f")


def test_address_from_the_environment(make_supervisor, cluster, client, monkeypatch):
    monkeypatch.setenv(ENV_ADDRESS, cluster.scheduler_address)
    sup = make_supervisor(plugins=[atasker_dask])
    assert sup.submit(os.getpid, tt=TT_DASK).result(WAIT) in client.run(os.getpid).values()
    assert executor(sup).statistics()["address"] == cluster.scheduler_address


def test_a_cluster_object_the_application_started(make_supervisor, cluster, client):
    sup = make_supervisor(plugins=[atasker_dask])
    atasker_dask.configure(sup, cluster=cluster, connect_timeout=WAIT)
    assert sup.submit(os.getpid, tt=TT_DASK).result(WAIT) in client.run(os.getpid).values()
    stats = executor(sup).statistics()
    assert stats["address"] == cluster.scheduler_address and stats["cluster_threads"] == 2
    # Messages to the scheduler go out every 2 ms (submit_interval), not Dask's 10.
    assert atasker_dask.get_client(sup).scheduler_comm.interval == pytest.approx(0.002)
    sup.stop()
    assert cluster.status.name == "running"  # the application's to close, not atasker's
    assert client.submit(operator.neg, 1).result(WAIT) == -1


def test_configure_rejects_conflicting_or_wrong_targets(make_supervisor, cluster):
    sup = make_supervisor(plugins=[atasker_dask], start=False)
    with pytest.raises(ValueError, match="pass one of address, scheduler_file and cluster, not address and cluster"):
        atasker_dask.configure(sup, address=cluster.scheduler_address, cluster=cluster)
    with pytest.raises(TypeError, match="pass a cluster object as cluster="):
        atasker_dask.configure(sup, address=cluster)
    with pytest.raises(TypeError, match="cluster must be a distributed cluster object"):
        atasker_dask.configure(sup, cluster=cluster.scheduler_address)
    with pytest.raises(ValueError, match="submit_interval must be a finite number of seconds >= 0"):
        atasker_dask.configure(sup, submit_interval=-1)


def test_main_module_function_and_exit_without_stop(tmp_path):
    """A script's own function runs on a local cluster the global supervisor
    starts (the plugin loaded through its entry point); tasks still queued
    when the script ends without stop() complete, and it exits cleanly."""
    script = tmp_path / "main_script.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            import atasker_dask
            from atasker import background_task, task_supervisor

            def square_in_main(x):
                return x * x, os.getpid()

            if __name__ == "__main__":
                atasker_dask.configure(cluster_kwargs={"n_workers": 1})
                value, pid = background_task(square_in_main, tt="dask")(7).result(60)
                print(value, pid != os.getpid(), task_supervisor.plugin_manager.records["dask"].distribution)
                for i in range(3):
                    background_task(square_in_main, tt="dask", callback=lambda r: print("late", r[0]))(i)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATASKER_")}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["49", "True", "atasker-dask"]
    assert sorted(lines[1:]) == ["late 0", "late 1", "late 4"], proc.stdout + proc.stderr
    assert "Error" not in proc.stderr, proc.stderr


def test_co_dask_apply_and_await(sup, gate):
    async def main():
        added = await atasker_dask.co_dask_apply(operator.add, (2, 3), supervisor=sup, priority=TASK_HIGH)
        powered = await sup.submit(pow, (2, 5), tt=TT_DASK)
        negated = await co_mp_apply(operator.neg, (4,), supervisor=sup, tt=TT_DASK)
        return added, powered, negated

    assert asyncio.run(main()) == (5, 32, -4)

    started, release = gate(), gate()

    async def give_up():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                atasker_dask.co_dask_apply(blocked, (started.name, release.name), supervisor=sup), 0.5
            )

    asyncio.run(give_up())
    assert sup.get_tasks() == []  # cancelling the coroutine cancelled the task


def test_task_options_go_to_client_submit(sup, client):
    pids = client.run(os.getpid)
    address = sorted(pids)[1]
    task = sup.submit(os.getpid, tt=TT_DASK, options={"workers": [address], "retries": 1})
    assert task.result(WAIT) == pids[address]


def test_bad_input_is_a_clear_error(sup):
    with pytest.raises(TypeError, match="unknown dask task option 'nope'; known: allow_other_workers"):
        sup.submit(int, tt=TT_DASK, options={"nope": 1})
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
        sup.submit(int, tt=TT_DASK, timeout=0)
    lock = threading.Lock()
    with pytest.raises(TaskPicklingError, match="function or arguments could not be serialized"):
        sup.submit(lambda: lock, tt=TT_DASK).result(WAIT)
    with pytest.raises(TaskPicklingError, match="result could not be serialized"):
        sup.submit(threading.Lock, tt=TT_DASK).result(WAIT)
    assert sup.submit(operator.neg, (1,), tt=TT_DASK).result(WAIT) == -1


# ---------------------------------------------------------- cancel and timeout


def test_stop_without_waiting_resolves_every_handle(sup):
    # CRITICAL: every task goes to Dask at once, so stop() finds many on the
    # cluster and more being submitted.
    tasks = [sup.submit(time.sleep, (0.005,), tt=TT_DASK, priority=TASK_CRITICAL) for _ in range(1000)]
    atasker_dask.get_client(sup, WAIT)
    ex = executor(sup)
    sup.stop(wait=False)
    not_done = concurrent.futures.wait(tasks, timeout=WAIT).not_done
    assert not not_done, f"{len(not_done)} handles never resolved"
    assert all(t.cancelled() or t.result() is None for t in tasks)
    assert ex.statistics()["on_cluster"] == 0
    # The client closes in the background: let it finish before the next test connects.
    for thread in threading.enumerate():
        if thread.name == "atasker_dask_close":
            thread.join(WAIT)


def test_stop_from_a_callback(sup, caplog):
    """Callbacks run on the thread that reports every dask outcome: stop(wait=True)
    there is refused with a clear error, stop(wait=False) works."""
    refused = sup.submit(operator.neg, (1,), tt=TT_DASK, callback=lambda _: sup.stop())
    assert refused.result(WAIT) == -1 and sup.is_active()
    assert "RuntimeError: stop(wait=True) called on atasker_dask_" in caplog.text
    stopped = sup.submit(operator.neg, (2,), tt=TT_DASK, callback=lambda _: sup.stop(wait=False))
    assert stopped.result(WAIT) == -2 and not sup.is_active()  # the callback ran before the handle resolved


def test_a_timeout_does_not_keep_a_finished_task_alive(sup):
    task = sup.submit(bytearray, (1000,), tt=TT_DASK, timeout=3600)
    assert len(task.result(WAIT)) == 1000
    ref = weakref.ref(task)
    del task
    gc.collect()
    assert ref() is None


def test_cancel_queued_and_running(sup, client, gate):
    sup.set_pool(TT_DASK, pool_size=1, reserve_normal=0, reserve_high=0)
    started, release = gate(), gate()
    running = sup.submit(blocked, (started.name, release.name), tt=TT_DASK)
    queued = sup.submit(operator.add, (1, 2), tt=TT_DASK)
    assert started.wait(WAIT)
    assert queued.cancel() and queued.cancelled() and queued.status == -1
    key = executor(sup)._key(running)
    assert key_on_scheduler(client, key)
    with scheduler_watch(client, key, ("forgotten",)) as forgotten:
        assert running.cancel()
        assert running.cancelled()  # at once: the handle does not wait for the worker
        assert forgotten.wait(WAIT)  # and Dask dropped the task
    # The slot is free at once, although the cancelled function still holds
    # its worker thread (Dask cannot interrupt it) until it returns.
    after = sup.submit(operator.add, (2, 2), tt=TT_DASK)
    assert after.status == 1
    release.set()
    assert after.result(WAIT) == 4


def test_timeout_fails_the_task_and_cancels_its_future(sup, client, gate):
    started, release = gate(), gate()
    with scheduler_watch(client, executor(sup)._token, ("forgotten",)) as forgotten:
        task = sup.submit(blocked, (started.name, release.name), tt=TT_DASK, timeout=0.5)
        with pytest.raises(DaskTaskTimeoutError, match=r"timeout of 0.5 s") as err:
            task.result(WAIT)
        assert isinstance(err.value, TimeoutError)
        assert forgotten.wait(WAIT)


# ------------------------------------------------------- priorities and pools


_gates: dict[str, threading.Event] = {}


def worker_gate(name: str) -> threading.Event:
    """A threading.Event of this process: a worker process has its own."""
    return _gates.setdefault(name, threading.Event())


def until_ready(started: str, gate_name: str) -> int:
    """Set Event *started*; hold the worker's thread until its ReadyWatch fires."""
    Event(started).set()
    if not worker_gate(gate_name).wait(60):
        raise TimeoutError(f"gate {gate_name!r} never opened")
    return os.getpid()


class ReadyWatch(WorkerPlugin):
    """On a worker: open ``worker_gate(name)`` once *count* matching tasks wait
    there ("ready"), so that the test knows the worker holds all of them."""

    def __init__(self, name: str, match: str, count: int) -> None:
        self.name, self.match, self.count = name, match, count
        self.seen: set = set()

    def transition(self, key, start, finish, **kwargs):
        if self.match in str(key) and finish == "ready":
            self.seen.add(key)
            if len(self.seen) >= self.count:
                worker_gate(self.name).set()


def test_dask_runs_higher_priority_first(sup, client, gate):
    """Five LOW then five HIGH tasks handed to Dask at once (unlimited pool)
    while the worker they must run on is busy: it runs the HIGH ones first."""
    sup.set_pool(TT_DASK, pool_size=0)
    on_it = {"workers": [sorted(client.run(os.getpid))[0]]}
    name, started = uuid.uuid4().hex, gate()
    client.register_plugin(ReadyWatch(name, f"stamp-{executor(sup)._token}", count=10), name=name)
    try:
        blocker = sup.submit(until_ready, (started.name, name), tt=TT_DASK, priority=TASK_CRITICAL, options=on_it)
        assert started.wait(WAIT)
        low = [sup.submit(stamp, ("L",), tt=TT_DASK, priority=TASK_LOW, options=on_it) for _ in range(5)]
        high = [sup.submit(stamp, ("H",), tt=TT_DASK, priority=TASK_HIGH, options=on_it) for _ in range(5)]
        blocker.result(WAIT)
        order = [tag for tag, _ in sorted((t.result(WAIT) for t in low + high), key=operator.itemgetter(1))]
    finally:
        client.unregister_worker_plugin(name)
    assert order == ["H"] * 5 + ["L"] * 5


def test_atasker_priorities_and_reserves(sup, gate):
    sup.set_pool(TT_DASK, pool_size=1, reserve_normal=0, reserve_high=1)
    started, release = gate(), gate()
    blocker = sup.submit(blocked, (started.name, release.name), tt=TT_DASK, priority=TASK_LOW)
    assert started.wait(WAIT)
    low = sup.submit(stamp, ("L",), tt=TT_DASK, priority=TASK_LOW)
    normal = sup.submit(stamp, ("N",), tt=TT_DASK)
    high = sup.submit(stamp, ("H",), tt=TT_DASK, priority=TASK_HIGH)
    assert (low.status, normal.status, high.status) == (0, 0, 1)  # HIGH took its reserve
    assert high.result(WAIT)[0] == "H"  # on the other worker, while the blocker runs
    critical = sup.submit(stamp, ("C",), tt=TT_DASK, priority=TASK_CRITICAL)
    assert critical.status == 1  # CRITICAL starts whatever the pool
    assert critical.result(WAIT)[0] == "C"
    assert (low.status, normal.status) == (0, 0)
    release.set()
    blocker.result(WAIT)
    assert normal.result(WAIT)[1] < low.result(WAIT)[1]


def test_pool_follows_the_cluster_threads(make_supervisor, cluster, client):
    client.wait_for_workers(2, timeout=WAIT * 2)
    sup = dask_supervisor(make_supervisor, cluster)
    fixed = dask_supervisor(make_supervisor, cluster)
    fixed.set_pool(TT_DASK, pool_size=7)  # before first use: kept
    ex, ex_fixed = executor(sup), executor(fixed)
    atasker_dask.get_client(sup, WAIT)
    atasker_dask.get_client(fixed, WAIT)

    def sizes(s):
        info = s.get_info()["task_types"][TT_DASK]
        return info["pool_size"], info["reserve_normal"], info["reserve_high"]

    assert ex.wait_threads(2, WAIT) and ex_fixed.wait_threads(2, WAIT)
    # pool = threads; NORMAL up to 8 per thread on the cluster, HIGH up to 16.
    assert sizes(sup) == (2, 14, 16) and sizes(fixed) == (7, 14, 16)
    assert fixed.pool_config(TT_DASK)["pool_size"] == 7
    try:
        cluster.scale(3)
        assert ex.wait_threads(3, WAIT * 2) and ex_fixed.wait_threads(3, WAIT * 2)
        assert sizes(sup) == (3, 21, 24) and sizes(fixed) == (7, 21, 24)
        sup.set_pool(TT_DASK, reserve_high=9)  # set after first use: kept too
        assert ex.statistics()["following"] == ["pool_size", "reserve_normal"]
    finally:
        cluster.scale(2)
    assert ex.wait_threads(2, WAIT * 2)
    assert sizes(sup) == (2, 14, 9)
    # After a restart the sizes this plugin set still follow; the user's do not.
    sup.stop()
    sup.start()
    atasker_dask.get_client(sup, WAIT)
    assert executor(sup).wait_threads(2, WAIT)
    assert executor(sup).statistics()["following"] == ["pool_size", "reserve_normal"]
    assert sizes(sup) == (2, 14, 9)


# ---------------------------------------------------------------------- faults


def test_worker_killed_mid_task_runs_it_elsewhere(sup, client, gate):
    started, release = gate(), gate()
    task = sup.submit(blocked, (started.name, release.name), tt=TT_DASK)
    assert started.wait(WAIT)
    pids = client.run(os.getpid)
    key = executor(sup)._key(task)
    (address,) = [address for address, keys in client.processing().items() if key in keys]
    os.kill(pids[address], signal.SIGKILL)
    release.set()
    pid = task.result(WAIT * 2)  # Dask re-ran it on a live worker
    assert pid != pids[address]


def test_dask_giving_up_is_a_clear_atasker_error(sup):
    task = sup.submit(suicide, tt=TT_DASK)
    with pytest.raises(DaskWorkerDiedError, match=r"the workers running it died 2 times") as err:
        task.result(WAIT * 3)
    assert isinstance(err.value, WorkerDiedError)
    assert type(err.value.__cause__).__name__ == "KilledWorker"
    assert err.value.allowed_failures == 1 and err.value.last_worker.startswith("tcp://")
    # The nannies restart the workers; the pool serves on.
    assert sup.submit(operator.add, (1, 1), tt=TT_DASK).result(WAIT * 3) == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loop_threads() -> int:
    return sum(thread.name == "IO loop" for thread in threading.enumerate())


def test_unreachable_scheduler_fails_fast(make_supervisor):
    loops = loop_threads()
    sup = make_supervisor(plugins=[atasker_dask])
    atasker_dask.configure(sup, address=f"tcp://127.0.0.1:{free_port()}", connect_timeout=1, retry_interval=60)
    # Submitted while the connection is being attempted: a few wait for it,
    # the rest in atasker's queue; all fail once it fails (the queue without
    # one stack level per task: 500 would exceed the recursion limit).
    tasks = [sup.submit(operator.add, (1, i), tt=TT_DASK) for i in range(500)]
    for task in tasks:
        with pytest.raises(SchedulerUnavailableError, match="could not connect to the Dask scheduler at tcp://") as err:
            task.result(WAIT)
    assert isinstance(err.value, ConnectionError) and err.value.__cause__ is not None
    generation = executor(sup).statistics()["generation"]
    again = sup.submit(operator.add, (1, 1), tt=TT_DASK)  # within retry_interval: no new attempt
    with pytest.raises(SchedulerUnavailableError):
        again.result(WAIT)
    assert executor(sup).statistics()["generation"] == generation
    with pytest.raises(SchedulerUnavailableError):
        atasker_dask.get_client(sup, WAIT)  # an explicit call tries again
    assert sup.submit(operator.add, (2, 2)).result(WAIT) == 4  # thread tasks unaffected
    sup.stop()
    assert loop_threads() == loops  # failed attempts leave no client event loop running


# ------------------------------------------------- clusters atasker starts itself


def test_local_cluster_started_lazily_and_closed_on_stop(make_supervisor, monkeypatch):
    monkeypatch.delenv(ENV_ADDRESS, raising=False)
    sup = make_supervisor(plugins=[atasker_dask])
    atasker_dask.configure(sup, cluster_kwargs={"n_workers": 1})
    task = sup.submit(operator.mul, (3, 4), tt=TT_DASK)  # returns at once: the cluster starts meanwhile
    assert task.result(WAIT * 2) == 12
    cluster = executor(sup)._cluster
    assert cluster.scheduler.WORKER_SATURATION == 1.0
    assert len(cluster.workers) == 1
    with pytest.raises(RuntimeError, match="already connected"):
        atasker_dask.configure(sup, address="tcp://127.0.0.1:1")
    sup.stop()
    assert cluster.status == Status.closed
    with pytest.raises(SupervisorStoppedError):
        sup.submit(operator.mul, (3, 4), tt=TT_DASK)


def make_tls_credentials(tmp_path: Path) -> Security:
    """A self-signed certificate (CA, scheduler, worker and client at once)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return Security(
        tls_ca_file=str(cert),
        tls_client_cert=str(cert),
        tls_client_key=str(key),
        tls_scheduler_cert=str(cert),
        tls_scheduler_key=str(key),
        tls_worker_cert=str(cert),
        tls_worker_key=str(key),
        require_encryption=True,
    )


@pytest.mark.skipif(not any(Path(p, "openssl").exists() for p in os.get_exec_path()), reason="needs openssl")
def test_tls_security_passes_through(make_supervisor, tmp_path, caplog):
    security = make_tls_credentials(tmp_path)
    # In-process workers: this test is about the connection, not pickling.
    # Dask's default worker-saturation: atasker warns when it connects.
    with atasker_dask.local_cluster(
        n_workers=1,
        processes=False,
        protocol="tls://",
        security=security,
        host="127.0.0.1",
        config={"distributed.scheduler.worker-saturation": 1.1},
    ) as tls_cluster:
        address = tls_cluster.scheduler_address
        assert address.startswith("tls://")
        sup = make_supervisor(plugins=[atasker_dask])
        atasker_dask.configure(sup, address=address, security=security, connect_timeout=WAIT)
        with caplog.at_level("WARNING", logger="atasker.dask"):
            assert sup.submit(operator.mul, (6, 7), tt=TT_DASK).result(WAIT) == 42
        assert "worker-saturation = 1.1" in caplog.text
        plain = make_supervisor(plugins=[atasker_dask])
        atasker_dask.configure(plain, address=address, connect_timeout=1)
        with pytest.raises(SchedulerUnavailableError, match="could not connect"):
            plain.submit(operator.mul, (6, 7), tt=TT_DASK).result(WAIT)
        sup.stop()
        plain.stop()


# ------------------------------------------ scale out with the command-line tools


class DaskProcesses:
    """``dask scheduler`` / ``dask worker`` processes, each in its own session."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ATASKER_")}
        # What the docs tell users: Dask honours priorities reliably at 1.0.
        self.env["DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION"] = "1.0"
        # The scheduler and workers import the task functions, as a user's
        # would import the user's code: this module is tests.test_dask.
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), self.env.get("PYTHONPATH")]))

    def start(self, *args: str) -> subprocess.Popen:
        with open(self.tmp_path / f"{args[0]}-{len(self.procs)}.log", "w") as log:
            proc = subprocess.Popen(
                [str(DASK), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def scheduler(self, port: int) -> subprocess.Popen:
        return self.start(
            "scheduler", "--host", "127.0.0.1", "--port", str(port),
            "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
        )  # fmt: skip

    def worker(self, address: str, name: str) -> subprocess.Popen:
        return self.start(
            "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
            "--name", name,
        )  # fmt: skip

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(WAIT)

    def kill_all(self) -> None:
        for proc in self.procs:
            try:
                self.kill(proc)
            except ProcessLookupError:
                pass


def wait_for_cluster(address: str, workers: int) -> None:
    """Poll for the scheduler with a client connect timeout, then wait for workers."""
    with Client(address, timeout=WAIT * 3, set_as_default=False) as probe:
        probe.wait_for_workers(workers, timeout=WAIT * 3)


@pytest.mark.slow
def test_scale_out_with_dask_command_line_tools(make_supervisor, tmp_path):
    """Run tasks through a scheduler address; lose the scheduler; reconnect."""
    address = f"tcp://127.0.0.1:{free_port()}"
    dask = DaskProcesses(tmp_path)
    try:
        scheduler = dask.scheduler(int(address.rsplit(":", 1)[1]))
        dask.worker(address, "w0")
        dask.worker(address, "w1")
        wait_for_cluster(address, 2)

        sup = make_supervisor(plugins=[atasker_dask])
        atasker_dask.configure(sup, address=address, connect_timeout=1, retry_interval=0)
        tasks = [sup.submit(pow, (i, 2), tt=TT_DASK, priority=TASK_LOW if i % 2 else TASK_HIGH) for i in range(20)]
        assert [t.result(WAIT) for t in tasks] == [i * i for i in range(20)]
        client = atasker_dask.get_client(sup, WAIT)
        worker_pids = set(client.run(os.getpid).values())
        assert len(worker_pids) == 2
        assert {sup.submit(os.getpid, tt=TT_DASK).result(WAIT) for _ in range(6)} <= worker_pids
        assert executor(sup).wait_threads(2, WAIT)
        assert sup.get_info()["task_types"][TT_DASK]["pool_size"] == 2

        # The scheduler goes away with a task running and one queued.
        sup.set_pool(TT_DASK, pool_size=1, reserve_normal=0, reserve_high=0)
        name = uuid.uuid4().hex
        running = sup.submit(blocked, (f"{name}-started", f"{name}-release"), tt=TT_DASK)
        queued = sup.submit(operator.add, (1, 1), tt=TT_DASK)
        assert Event(f"{name}-started", client=client).wait(WAIT)
        assert queued.status == 0
        lost_at = time.monotonic()
        dask.kill(scheduler)
        for task in (running, queued):
            with pytest.raises(SchedulerLostError, match=f"lost the connection to the Dask scheduler at {address}"):
                task.result(WAIT)
        assert time.monotonic() - lost_at < WAIT / 2  # promptly, not after a timeout
        assert sup.submit(operator.mul, (3, 3)).result(WAIT) == 9  # thread tasks unaffected
        later = sup.submit(operator.add, (2, 2), tt=TT_DASK)  # tries again, fails within connect_timeout
        with pytest.raises(SchedulerUnavailableError, match="could not connect"):
            later.result(WAIT)

        # A scheduler is back at the same address: the next dask task reconnects.
        dask.scheduler(int(address.rsplit(":", 1)[1]))
        dask.worker(address, "w2")
        wait_for_cluster(address, 1)
        assert sup.submit(operator.add, (3, 3), tt=TT_DASK).result(WAIT) == 6
        assert executor(sup).statistics()["state"] == "connected"
        sup.stop()
    finally:
        dask.kill_all()
