"""Prometheus metrics for atasker, with ``prometheus_client``.

Installed, the plugin is loaded through its entry point (group ``atasker``,
name ``prometheus``) and counts the tasks of every supervisor for
``prometheus_client``'s global registry, or for the registry given with
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

How it is counted::

    hooks task_queued / started / finished (the threads the events happen in)
        └─ Tally of the supervisor: plain counts and histogram buckets per
           (task type, band), one short lock -- no prometheus_client object
           on the hot path (a Histogram.observe costs a microsecond or two)
    registry.collect() (a scrape)
        └─ Collector of the registry: the tallies of its supervisors, and
           the gauges read from supervisor.get_info() (so they never drift)

One collector per registry serves every supervisor that counts for it;
supervisors with the same name add up.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from atasker import WorkerDiedError, hookimpl, priority_band
from atasker.core.task import PRIORITY_NAMES

if TYPE_CHECKING:
    from atasker import SupervisorAPI, Task

__all__ = ["BUCKETS", "EXTENSION", "Families", "SupervisorCollector", "Tally", "__version__", "collector_for"]

__version__ = "1.0.0"

#: The name of the per-supervisor extension: ``supervisor.extension("prometheus")``.
EXTENSION = "prometheus"

#: Histogram buckets (seconds) of the wait and run times: background tasks
#: wait and run from microseconds to minutes, wider than prometheus_client's
#: default (up to 10 s).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_BUCKET_LABELS = (*map(floatToGoString, BUCKETS), "+Inf")

_LABELS = ("supervisor", "task_type", "priority")
_OUTCOMES = ("completed", "failed", "cancelled")


class Series:
    """The counts of one (task type, band): counters and both histograms."""

    __slots__ = ("finished", "queued", "run", "run_sum", "started", "wait", "wait_sum")

    def __init__(self) -> None:
        self.queued = 0
        self.started = 0
        self.finished = dict.fromkeys(_OUTCOMES, 0)
        # Per bucket, not cumulative (the +Inf bucket last); made cumulative at collection.
        self.wait = [0] * (len(BUCKETS) + 1)
        self.wait_sum = 0.0
        self.run = [0] * (len(BUCKETS) + 1)
        self.run_sum = 0.0

    # (wait_sum and run_sum are floats; the rest are counts.)


class Tally:
    """What the plugin counts for one supervisor (``supervisor.extension("prometheus")``).

    The hooks update it under one lock, held for a few additions.
    """

    def __init__(self, supervisor: SupervisorAPI) -> None:
        self.supervisor: Any = supervisor  # a TaskSupervisor: get_info() at collection
        self.lock = threading.Lock()
        self.series: dict[tuple[str, int], Series] = {}
        self.deaths: dict[str, int] = {}
        self.registry: CollectorRegistry | None = None

    def use(self, registry: CollectorRegistry | None) -> None:
        """Count for *registry* from now on (``None``: the global registry)."""
        registry = REGISTRY if registry is None else registry
        if registry is self.registry:
            return
        if self.registry is not None:
            collector_for(self.registry).detach(self)
        self.registry = registry
        collector_for(registry).attach(self)

    def of(self, task: Task) -> Series:
        """The series of the task's task type and band (call with the lock held)."""
        key = (task.tt, priority_band(task.priority))
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        return series

    def snapshot(self) -> tuple[dict[tuple[str, int], Series], dict[str, int]]:
        """Copies of the counts, for a collection."""
        with self.lock:
            copies = {}
            for key, s in self.series.items():
                c = copies[key] = Series()
                c.queued, c.started, c.finished = s.queued, s.started, dict(s.finished)
                c.wait, c.wait_sum, c.run, c.run_sum = list(s.wait), s.wait_sum, list(s.run), s.run_sum
            return copies, dict(self.deaths)


class SupervisorCollector(Collector):
    """The metrics of every supervisor that counts for one registry."""

    def __init__(self) -> None:
        self.tallies: weakref.WeakSet[Tally] = weakref.WeakSet()
        self._lock = threading.Lock()

    def attach(self, tally: Tally) -> None:
        with self._lock:
            self.tallies.add(tally)

    def detach(self, tally: Tally) -> None:
        with self._lock:
            self.tallies.discard(tally)

    def describe(self) -> list[Metric]:
        return Families().all()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            tallies = list(self.tallies)
        f = Families()
        # Summed by labels: supervisors with the same name add up.
        counts: dict[tuple[str, tuple[str, ...]], list[float]] = {}

        def add(family: Metric, labels: tuple[str, ...], *values: float) -> None:
            total = counts.get((family.name, labels))
            if total is None:
                counts[(family.name, labels)] = list(values)
            else:
                for i, v in enumerate(values):
                    total[i] += v

        for tally in tallies:
            sup = tally.supervisor
            name = sup.name
            series, died = tally.snapshot()
            for (tt, band), s in series.items():
                labels = (name, tt, PRIORITY_NAMES[band])
                add(f.queued, labels, s.queued)
                add(f.started, labels, s.started)
                for outcome, n in s.finished.items():
                    if n:
                        add(f.finished, (*labels, outcome), n)
                add(f.wait, labels, s.wait_sum, *s.wait)
                add(f.run, labels, s.run_sum, *s.run)
            for tt, n in died.items():
                add(f.deaths, (name, tt), n)
            info = sup.get_info()
            add(f.delayed, (name,), info["delayed"])
            for tt, entry in info["task_types"].items():
                add(f.pool_size, (name, tt), entry["pool_size"])
                per_band = {band: [0, 0] for band in PRIORITY_NAMES}  # every band: an empty queue reads 0
                for priority, n in entry["waiting"].items():
                    per_band[priority_band(priority)][0] += n
                for priority, n in entry["running_by_priority"].items():
                    per_band[priority_band(priority)][1] += n
                for band, (waiting, busy) in per_band.items():
                    add(f.depth, (name, tt, PRIORITY_NAMES[band]), waiting)
                    add(f.running, (name, tt, PRIORITY_NAMES[band]), busy)
        histograms = {f.wait.name: f.wait, f.run.name: f.run}
        simple = {m.name: m for m in f.all() if m.name not in histograms}
        for (family_name, label_values), values in sorted(counts.items()):
            if family_name in histograms:
                cumulative = 0.0
                buckets: list[tuple[str, float]] = []
                for bound, count in zip(_BUCKET_LABELS, values[1:], strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                histograms[family_name].add_metric(list(label_values), buckets, values[0])
            else:
                simple[family_name].add_metric(list(label_values), values[0])  # type: ignore[attr-defined]
        yield from f.all()


class Families:
    """One empty set of the metric families (filled by a collection)."""

    def __init__(self) -> None:
        self.queued = CounterMetricFamily("atasker_tasks_queued", "Tasks accepted", labels=_LABELS)
        self.started = CounterMetricFamily("atasker_tasks_started", "Tasks started", labels=_LABELS)
        self.finished = CounterMetricFamily(
            "atasker_tasks_finished", "Tasks ended, by outcome", labels=(*_LABELS, "outcome")
        )
        self.deaths = CounterMetricFamily(
            "atasker_worker_deaths", "Tasks that failed because their worker died", labels=("supervisor", "task_type")
        )
        self.wait = HistogramMetricFamily(
            "atasker_task_wait_seconds", "Time from queued to started, without the delay", labels=_LABELS
        )
        self.run = HistogramMetricFamily("atasker_task_run_seconds", "Time from started to finished", labels=_LABELS)
        self.depth = GaugeMetricFamily("atasker_queue_depth", "Tasks waiting in their queue for a slot", labels=_LABELS)
        self.running = GaugeMetricFamily("atasker_tasks_running", "Tasks running", labels=_LABELS)
        self.pool_size = GaugeMetricFamily("atasker_pool_size", "Pool size", labels=("supervisor", "task_type"))
        self.delayed = GaugeMetricFamily(
            "atasker_tasks_delayed", "Tasks whose delay is not over", labels=("supervisor",)
        )

    def all(self) -> list[Metric]:
        return [
            self.queued,
            self.started,
            self.finished,
            self.deaths,
            self.wait,
            self.run,
            self.depth,
            self.running,
            self.pool_size,
            self.delayed,
        ]


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, SupervisorCollector] = weakref.WeakKeyDictionary()
_collectors_lock = threading.Lock()


def collector_for(registry: CollectorRegistry | None = None) -> SupervisorCollector:
    """The collector of *registry* (default: the global one), registered on first use."""
    registry = REGISTRY if registry is None else registry
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = _collectors[registry] = SupervisorCollector()
            registry.register(collector)
        return collector


def _tally(supervisor: SupervisorAPI) -> Tally:
    tally: Tally = supervisor.extension(EXTENSION)
    return tally


@hookimpl
def atasker_configure(supervisor: SupervisorAPI) -> None:
    """Add the ``"prometheus"`` extension, counting for the global registry until told otherwise."""
    tally = Tally(supervisor)
    supervisor.add_extension(EXTENSION, tally)
    tally.use(None)


@hookimpl
def atasker_supervisor_starting(supervisor: SupervisorAPI, options: Mapping[str, Any]) -> list[str]:
    """``start(prometheus_registry=registry)``: count for *registry*."""
    if "prometheus_registry" not in options:
        return []
    registry = options["prometheus_registry"]
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(f"prometheus_registry must be a prometheus_client CollectorRegistry, got {registry!r}")
    _tally(supervisor).use(registry)
    return ["prometheus_registry"]


@hookimpl
def atasker_task_queued(task: Task) -> None:
    tally = _tally(task.supervisor)
    with tally.lock:
        tally.of(task).queued += 1


@hookimpl
def atasker_task_started(task: Task) -> None:
    started, queued = task.time_started, task.time_queued
    wait = max(0.0, started - queued - (task.delay or 0.0)) if started is not None and queued is not None else 0.0
    i = bisect.bisect_left(BUCKETS, wait)  # the first bucket whose bound is >= wait ("le")
    tally = _tally(task.supervisor)
    with tally.lock:
        series = tally.of(task)
        series.started += 1
        series.wait[i] += 1
        series.wait_sum += wait


@hookimpl
def atasker_task_finished(task: Task) -> None:
    started, finished = task.time_started, task.time_finished
    ran = started is not None and finished is not None
    run = finished - started if ran else 0.0  # type: ignore[operator]  # both set when ran
    i = bisect.bisect_left(BUCKETS, run)
    tally = _tally(task.supervisor)
    died = isinstance(task.error, WorkerDiedError)
    with tally.lock:
        series = tally.of(task)
        series.finished[task.outcome or "completed"] += 1
        if ran:
            series.run[i] += 1
            series.run_sum += run
        if died:
            tally.deaths[task.tt] = tally.deaths.get(task.tt, 0) + 1
