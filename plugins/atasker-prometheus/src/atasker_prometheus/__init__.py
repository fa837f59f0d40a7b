"""Prometheus metrics for atasker, with ``prometheus_client``.

Installed, the plugin is loaded through its entry point (group ``atasker``,
name ``prometheus``) and counts the tasks of every supervisor into
``prometheus_client``'s global registry, or into the registry given with
``supervisor.start(prometheus_registry=...)``.  Serve them as usual, e.g.
``prometheus_client.start_http_server(9464)``.

Every series has the labels ``supervisor`` (its name), ``task_type`` and,
where it applies, ``priority`` (the band: ``CRITICAL``, ``HIGH``,
``NORMAL``, ``LOW``; any other integer takes the name of its band)::

    atasker_tasks_queued_total     counter    a task was accepted
    atasker_tasks_started_total    counter    ... admitted and handed to its executor
    atasker_tasks_finished_total   counter    ... ended; label outcome: completed, failed, cancelled
    atasker_worker_deaths_total    counter    ... failed because its worker died (WorkerDiedError)
    atasker_task_wait_seconds      histogram  queued -> started, without the delay
    atasker_task_run_seconds       histogram  started -> finished
    atasker_queue_depth            gauge      tasks waiting in their queue for a slot
    atasker_tasks_running          gauge      tasks running
    atasker_pool_size              gauge      the pool size (no priority label)
    atasker_tasks_delayed          gauge      tasks whose delay is not over (supervisor only)

Counters and histograms are updated by the lifecycle hooks (cached label
children, so a task costs a few lock-protected increments); the gauges are
read from ``supervisor.get_info()`` when the registry is collected, so they
cost nothing per task and never drift.  Several supervisors share one set
of metric families per registry; same-named supervisors add up.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from atasker import WorkerDiedError, hookimpl, priority_band
from atasker.core.task import priority_name

if TYPE_CHECKING:
    from atasker import SupervisorAPI, Task

__all__ = ["EXTENSION", "RUN_BUCKETS", "WAIT_BUCKETS", "Metrics", "SupervisorMetrics", "__version__", "metrics_for"]

__version__ = "1.0.0"

#: The name of the per-supervisor extension: ``supervisor.extension("prometheus")``.
EXTENSION = "prometheus"

#: Histogram buckets (seconds): background tasks wait and run from
#: microseconds to minutes, wider than prometheus_client's default (to 10 s).
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
RUN_BUCKETS = WAIT_BUCKETS

_LABELS = ("supervisor", "task_type", "priority")


class Metrics:
    """The metric families of one registry, shared by every supervisor that uses it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.queued = Counter("atasker_tasks_queued", "Tasks accepted", _LABELS, registry=registry)
        self.started = Counter("atasker_tasks_started", "Tasks started", _LABELS, registry=registry)
        self.finished = Counter(
            "atasker_tasks_finished", "Tasks ended, by outcome", (*_LABELS, "outcome"), registry=registry
        )
        self.deaths = Counter(
            "atasker_worker_deaths",
            "Tasks that failed because their worker died",
            ("supervisor", "task_type"),
            registry=registry,
        )
        self.wait = Histogram(
            "atasker_task_wait_seconds",
            "Time from queued to started, without the delay",
            _LABELS,
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.run = Histogram(
            "atasker_task_run_seconds", "Time from started to finished", _LABELS, buckets=RUN_BUCKETS, registry=registry
        )
        self.gauges = SupervisorGauges()
        registry.register(self.gauges)


class SupervisorGauges(Collector):
    """Queue depth, running tasks and pool sizes of the attached supervisors, read at collection."""

    def __init__(self) -> None:
        self.supervisors: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    def attach(self, supervisor: SupervisorAPI) -> None:
        with self._lock:
            self.supervisors.add(supervisor)

    def detach(self, supervisor: SupervisorAPI) -> None:
        with self._lock:
            self.supervisors.discard(supervisor)

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families())

    def _families(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("atasker_queue_depth", "Tasks waiting in their queue for a slot", labels=_LABELS)
        yield GaugeMetricFamily("atasker_tasks_running", "Tasks running", labels=_LABELS)
        yield GaugeMetricFamily("atasker_pool_size", "Pool size", labels=("supervisor", "task_type"))
        yield GaugeMetricFamily("atasker_tasks_delayed", "Tasks whose delay is not over", labels=("supervisor",))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth: dict[tuple[str, ...], float] = {}
        running: dict[tuple[str, ...], float] = {}
        pool_size: dict[tuple[str, ...], float] = {}
        delayed: dict[tuple[str, ...], float] = {}
        with self._lock:
            supervisors = list(self.supervisors)
        for sup in supervisors:
            info = sup.get_info()
            name = sup.name
            delayed[(name,)] = delayed.get((name,), 0) + info["delayed"]
            for tt, entry in info["task_types"].items():
                pool_size[(name, tt)] = pool_size.get((name, tt), 0) + entry["pool_size"]
                # Every band is reported, so a queue that empties reads 0, not a missing series.
                for band in ("CRITICAL", "HIGH", "NORMAL", "LOW"):
                    depth.setdefault((name, tt, band), 0)
                    running.setdefault((name, tt, band), 0)
                for priority, n in entry["waiting"].items():
                    key = (name, tt, priority_name(priority))
                    depth[key] += n
                for priority, n in entry["running_by_priority"].items():
                    key = (name, tt, priority_name(priority))
                    running[key] += n
        families = self._families()
        for values in (depth, running, pool_size, delayed):
            family = next(families)
            for labels, value in sorted(values.items()):
                family.add_metric(labels, value)
            yield family


_metrics: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()
_metrics_lock = threading.Lock()


def metrics_for(registry: CollectorRegistry | None = None) -> Metrics:
    """The metric families of *registry* (default: the global one), created on first use."""
    registry = REGISTRY if registry is None else registry
    with _metrics_lock:
        metrics = _metrics.get(registry)
        if metrics is None:
            metrics = _metrics[registry] = Metrics(registry)
        return metrics


class SupervisorMetrics:
    """What the plugin keeps per supervisor (``supervisor.extension("prometheus")``).

    The label children of each (task type, band) are looked up once and
    kept: ``Counter.labels()`` takes a lock and builds a key every call.
    """

    def __init__(self, supervisor: SupervisorAPI) -> None:
        self.supervisor = supervisor
        self.metrics: Metrics | None = None
        self.children: dict[tuple[str, int], tuple[Any, ...]] = {}
        self.finished: dict[tuple[str, int, str | None], Any] = {}
        self.deaths: dict[str, Any] = {}

    def use(self, registry: CollectorRegistry | None) -> None:
        """Count into *registry* from now on (``None``: the global registry)."""
        metrics = metrics_for(registry)
        if self.metrics is not None:
            self.metrics.gauges.detach(self.supervisor)
        self.metrics = metrics
        self.children, self.finished, self.deaths = {}, {}, {}
        metrics.gauges.attach(self.supervisor)

    @property
    def registry(self) -> CollectorRegistry:
        """The registry this supervisor counts into."""
        if self.metrics is None:
            self.use(None)
        assert self.metrics is not None
        return self.metrics.registry

    def of(self, task: Task) -> tuple[Any, ...]:
        """``(queued, started, wait, run)`` children of the task's labels."""
        key = (task.tt, priority_band(task.priority))
        children = self.children.get(key)
        if children is None:
            if self.metrics is None:
                self.use(None)
            metrics = self.metrics
            assert metrics is not None
            labels = (self.supervisor.name, task.tt, priority_name(task.priority))
            children = self.children[key] = (
                metrics.queued.labels(*labels),
                metrics.started.labels(*labels),
                metrics.wait.labels(*labels),
                metrics.run.labels(*labels),
            )
        return children

    def finished_of(self, task: Task) -> Any:
        key = (task.tt, priority_band(task.priority), task.outcome)
        child = self.finished.get(key)
        if child is None:
            self.of(task)  # the families exist
            assert self.metrics is not None
            labels = (self.supervisor.name, task.tt, priority_name(task.priority), task.outcome or "")
            child = self.finished[key] = self.metrics.finished.labels(*labels)
        return child

    def death_of(self, task: Task) -> Any:
        child = self.deaths.get(task.tt)
        if child is None:
            self.of(task)
            assert self.metrics is not None
            child = self.deaths[task.tt] = self.metrics.deaths.labels(self.supervisor.name, task.tt)
        return child


def _metrics_of(supervisor: SupervisorAPI) -> SupervisorMetrics:
    ext: SupervisorMetrics = supervisor.extension(EXTENSION)
    return ext


@hookimpl
def atasker_configure(supervisor: SupervisorAPI) -> None:
    """Add the ``"prometheus"`` extension (the global registry until told otherwise)."""
    supervisor.add_extension(EXTENSION, SupervisorMetrics(supervisor))


@hookimpl
def atasker_supervisor_starting(supervisor: SupervisorAPI, options: Mapping[str, Any]) -> list[str]:
    """``start(prometheus_registry=registry)``: count into *registry*."""
    ext = _metrics_of(supervisor)
    if "prometheus_registry" in options:
        registry = options["prometheus_registry"]
        if not isinstance(registry, CollectorRegistry):
            raise TypeError(f"prometheus_registry must be a prometheus_client CollectorRegistry, got {registry!r}")
        ext.use(registry)
        return ["prometheus_registry"]
    if ext.metrics is None:
        ext.use(None)
    return []


@hookimpl
def atasker_task_queued(task: Task) -> None:
    _metrics_of(task.supervisor).of(task)[0].inc()


@hookimpl
def atasker_task_started(task: Task) -> None:
    children = _metrics_of(task.supervisor).of(task)
    children[1].inc()
    if task.time_started is not None and task.time_queued is not None:
        children[2].observe(max(0.0, task.time_started - task.time_queued - (task.delay or 0.0)))


@hookimpl
def atasker_task_finished(task: Task) -> None:
    ext = _metrics_of(task.supervisor)
    ext.finished_of(task).inc()
    if task.time_started is not None and task.time_finished is not None:
        ext.of(task)[3].observe(task.time_finished - task.time_started)
    if isinstance(task.error, WorkerDiedError):
        ext.death_of(task).inc()
