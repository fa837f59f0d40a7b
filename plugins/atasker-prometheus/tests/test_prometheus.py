"""atasker-prometheus: a known workload, then /metrics scraped over real HTTP."""

from __future__ import annotations

import os
import threading
import urllib.request
from importlib.metadata import entry_points

import atasker_prometheus
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from atasker import TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL, TT_MP, WorkerDiedError

WAIT = 30.0


@pytest.fixture(autouse=True)
def _no_autoload(monkeypatch):
    monkeypatch.setenv("ATASKER_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def scrape():
    """``scrape(registry)``: GET /metrics from a real server on 127.0.0.1 (a free port)."""
    servers = {}

    def get(registry):
        if id(registry) not in servers:
            servers[id(registry)] = start_http_server(0, addr="127.0.0.1", registry=registry)
        server, _ = servers[id(registry)]
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=WAIT) as reply:
            assert reply.status == 200
            text = reply.read().decode()
        return Samples(text)

    yield get
    for server, thread in servers.values():
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


class Samples:
    """The samples of one scrape, parsed with prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        found = [
            s.value for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert found, f"no sample {name} {labels} in:\n{self.text}"
        return sum(found)

    def has(self, name: str, **labels: str) -> bool:
        return any(s.name == name and all(s.labels.get(k) == v for k, v in labels.items()) for s in self.samples)


@pytest.fixture
def counted(atasker_supervisor_factory):
    """``counted(registry, **supervisor_options)``: a started supervisor counting into *registry*."""

    def make(registry, **kwargs):
        kwargs.setdefault("autoload", False)
        kwargs.setdefault("plugins", [atasker_prometheus])
        sup = atasker_supervisor_factory(start=False, **kwargs)
        sup.start(prometheus_registry=registry)
        return sup

    return make


def fails():
    raise ValueError("no")


def die():
    os._exit(3)


def test_a_known_workload_scraped_over_http(counted, scrape):
    registry = CollectorRegistry()
    sup = counted(registry, pool_size=2, reserve_normal=0, reserve_high=0, name="jobs")
    gate = threading.Event()
    running = threading.Barrier(3)

    def hold():
        running.wait(WAIT)
        gate.wait(WAIT)

    holders = [sup.submit(hold, priority=TASK_NORMAL) for _ in range(2)]
    running.wait(WAIT)  # both slots busy
    queued_low = [sup.submit(int, priority=TASK_LOW) for _ in range(3)]
    queued_high = sup.submit(fails, priority=TASK_HIGH)
    assert queued_low[0].cancel()

    during = scrape(registry)
    thread = {"supervisor": "jobs", "task_type": "thread"}
    assert during.value("atasker_tasks_running", priority="NORMAL", **thread) == 2
    assert during.value("atasker_queue_depth", priority="LOW", **thread) == 2
    assert during.value("atasker_queue_depth", priority="HIGH", **thread) == 1
    assert during.value("atasker_queue_depth", priority="CRITICAL", **thread) == 0
    assert during.value("atasker_pool_size", **thread) == 2 == pool_size_of(sup)
    assert during.value("atasker_tasks_queued_total", priority="LOW", **thread) == 3
    assert during.value("atasker_tasks_started_total", priority="NORMAL", **thread) == 2
    assert during.value("atasker_tasks_finished_total", priority="LOW", outcome="cancelled", **thread) == 1

    gate.set()
    for t in [*holders, *queued_low[1:]]:
        t.result(WAIT)
    with pytest.raises(ValueError):
        queued_high.result(WAIT)
    critical = sup.submit(int, priority=TASK_CRITICAL, delay=0.01)
    critical.result(WAIT)
    pool_size = sup.get_info()["task_types"]["thread"]["pool_size"]
    sup.stop()  # the finished hooks run after the handles resolve: stop() waits for them

    after = scrape(registry)
    assert after.value("atasker_tasks_queued_total", **thread) == 7
    assert after.value("atasker_tasks_started_total", **thread) == 6  # the cancelled one never started
    assert after.value("atasker_tasks_finished_total", outcome="completed", **thread) == 5
    assert after.value("atasker_tasks_finished_total", priority="HIGH", outcome="failed", **thread) == 1
    assert after.value("atasker_tasks_finished_total", priority="CRITICAL", outcome="completed", **thread) == 1
    assert after.value("atasker_task_wait_seconds_count", **thread) == 6
    assert after.value("atasker_task_run_seconds_count", **thread) == 6
    assert after.value("atasker_task_run_seconds_count", priority="LOW", **thread) == 2
    assert after.value("atasker_task_wait_seconds_count", priority="CRITICAL", **thread) == 1
    assert after.value("atasker_task_wait_seconds_bucket", le="300.0", **thread) == 6  # buckets up to minutes
    assert after.value("atasker_task_wait_seconds_sum", priority="LOW", **thread) > 0  # they waited for the holders
    assert after.value("atasker_pool_size", **thread) == pool_size
    assert after.value("atasker_tasks_running", **thread) == 0
    assert after.value("atasker_queue_depth", **thread) == 0
    assert after.value("atasker_tasks_delayed", supervisor="jobs") == 0
    assert not after.has("atasker_worker_deaths_total")


def test_worker_deaths_of_process_tasks(counted, scrape):
    registry = CollectorRegistry()
    sup = counted(registry, name="procs")
    sup.create_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    with pytest.raises(WorkerDiedError):
        sup.submit(die, tt=TT_MP).result(WAIT * 2)
    assert sup.submit(pow, (2, 3), tt=TT_MP).result(WAIT * 2) == 8  # a new worker took over
    sup.stop()
    samples = scrape(registry)
    mp = {"supervisor": "procs", "task_type": "mp"}
    assert samples.value("atasker_worker_deaths_total", **mp) == 1
    assert samples.value("atasker_tasks_finished_total", outcome="failed", **mp) == 1
    assert samples.value("atasker_tasks_finished_total", outcome="completed", **mp) == 1


def test_several_supervisors_share_a_registry_and_same_names_add_up(counted, scrape):
    registry = CollectorRegistry()
    a = counted(registry, name="a")
    b = counted(registry, name="b")
    a2 = counted(registry, name="a")
    for sup, n in ((a, 1), (b, 2), (a2, 4)):
        for _ in range(n):
            sup.submit(int).result(WAIT)
    other = CollectorRegistry()
    c = counted(other, name="c")
    c.submit(int).result(WAIT)
    sizes = {sup: pool_size_of(sup) for sup in (a, a2)}
    for sup in (a, b, a2, c):
        sup.stop()
    samples = scrape(registry)
    assert samples.value("atasker_tasks_finished_total", supervisor="a") == 5
    assert samples.value("atasker_tasks_finished_total", supervisor="b") == 2
    assert samples.value("atasker_pool_size", supervisor="a", task_type="thread") == sizes[a] + sizes[a2]
    assert not samples.has("atasker_tasks_queued_total", supervisor="c")
    assert scrape(other).value("atasker_tasks_queued_total", supervisor="c") == 1


def test_the_global_registry_is_the_default(atasker_supervisor_factory):
    sup = atasker_supervisor_factory(autoload=False, plugins=[atasker_prometheus], name="global-default")
    sup.submit(int).result(WAIT)
    sup.stop()
    labels = {"supervisor": "global-default", "task_type": "thread", "priority": "NORMAL", "outcome": "completed"}
    assert REGISTRY.get_sample_value("atasker_tasks_finished_total", labels) == 1
    assert sup.extension("prometheus").registry is REGISTRY
    with pytest.raises(TypeError, match="CollectorRegistry"):
        sup.start(prometheus_registry="not a registry")


def test_installed_through_its_entry_point(atasker_supervisor_factory, monkeypatch):
    (ep,) = [ep for ep in entry_points(group="atasker") if ep.name == "prometheus"]
    assert ep.dist.name == "atasker-prometheus" and ep.load() is atasker_prometheus
    monkeypatch.delenv("ATASKER_DISABLE_PLUGIN_AUTOLOAD")
    registry = CollectorRegistry()
    sup = atasker_supervisor_factory(start=False, autoload=True, name="autoloaded")
    assert sup.plugin_manager.records["prometheus"].distribution == "atasker-prometheus"
    sup.start(prometheus_registry=registry)
    sup.submit(int).result(WAIT)
    sup.stop()
    assert registry.get_sample_value("atasker_tasks_started_total", {**_labels("autoloaded")}) == 1
    blocked = atasker_supervisor_factory(autoload=True, block_plugins=["prometheus"])
    with pytest.raises(TypeError, match="prometheus_registry"):
        blocked.start(prometheus_registry=registry)


def pool_size_of(sup):
    return sup.get_info()["task_types"]["thread"]["pool_size"]


def _labels(name):
    return {"supervisor": name, "task_type": "thread", "priority": "NORMAL"}


def test_counts_stay_exact_with_many_submitters_and_workers(counted, scrape):
    registry = CollectorRegistry()
    sup = counted(registry, pool_size=8, reserve_normal=0, reserve_high=0, name="busy")
    per_thread, threads = 500, 8
    priorities = [TASK_LOW, TASK_NORMAL, TASK_HIGH, TASK_CRITICAL]
    go = threading.Barrier(threads)
    handles = []

    def submit_many(k):
        go.wait(WAIT)
        handles.extend(sup.submit(int, priority=priorities[(k + i) % 4]) for i in range(per_thread))

    submitters = [threading.Thread(target=submit_many, args=(k,)) for k in range(threads)]
    for t in submitters:
        t.start()
    for t in submitters:
        t.join(WAIT)
    for h in handles:
        h.result(WAIT)
    sup.stop()
    samples = scrape(registry)
    total = per_thread * threads
    busy = {"supervisor": "busy", "task_type": "thread"}
    assert samples.value("atasker_tasks_queued_total", **busy) == total
    assert samples.value("atasker_tasks_started_total", **busy) == total
    assert samples.value("atasker_tasks_finished_total", outcome="completed", **busy) == total
    assert samples.value("atasker_task_wait_seconds_count", **busy) == total
    assert samples.value("atasker_task_run_seconds_count", **busy) == total
    for band in ("LOW", "NORMAL", "HIGH", "CRITICAL"):
        assert samples.value("atasker_tasks_finished_total", priority=band, **busy) == total / 4
