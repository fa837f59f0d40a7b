"""atasker-otel with the real OpenTelemetry SDK: spans read back from the
in-memory exporter; process tasks in real worker processes."""

from __future__ import annotations

import asyncio
import os
import threading
from importlib.metadata import entry_points

import atasker_otel
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, StatusCode, TraceFlags

from atasker import TASK_HIGH, TT_COROUTINE, TT_MP, WorkerDiedError

WAIT = 30.0


@pytest.fixture(autouse=True)
def _no_autoload(monkeypatch):
    monkeypatch.setenv("ATASKER_DISABLE_PLUGIN_AUTOLOAD", "1")


class Spans:
    """A tracer provider of the SDK that keeps finished spans in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def finished(self):
        return list(self.exporter.get_finished_spans())

    def named(self, name):
        found = [s for s in self.finished() if s.name == name]
        assert len(found) == 1, [s.name for s in self.finished()]
        return found[0]


@pytest.fixture
def spans():
    return Spans()


@pytest.fixture
def traced(atasker_supervisor_factory, spans):
    """``traced(**supervisor_options)``: a started supervisor whose tasks go to ``spans``."""

    def make(**kwargs):
        kwargs.setdefault("autoload", False)
        kwargs.setdefault("plugins", [atasker_otel])
        sup = atasker_supervisor_factory(start=False, **kwargs)
        sup.start(otel_tracer_provider=spans.provider)
        return sup

    return make


def ids(span_context):
    return span_context.trace_id, span_context.span_id


def current_ids():
    """In the task: the ids of the span current there, and where it ran."""
    return ids(trace.get_current_span().get_span_context()), os.getpid(), threading.get_ident()


def fails(message):
    raise ValueError(message)


# ------------------------------------------------------------------ threads


def test_one_span_per_task_parented_to_the_submitters_span(traced, spans):
    sup = traced(pool_size=2)
    with spans.tracer.start_as_current_span("request") as request:
        task = sup.submit(current_ids, name="fetch", priority=TASK_HIGH)
    (inside, pid, thread) = task.result(WAIT)
    sup.stop()
    span = spans.named("fetch")
    assert span.parent.span_id == request.get_span_context().span_id
    assert span.context.trace_id == request.get_span_context().trace_id
    assert inside == ids(span.context)  # current in the pool thread, not the request span
    assert thread != threading.get_ident() and pid == os.getpid()
    attrs = span.attributes
    assert attrs["atasker.task.id"] == task.id
    assert attrs["atasker.task.type"] == "thread"
    assert attrs["atasker.task.priority"] == TASK_HIGH
    assert attrs["atasker.task.priority_band"] == "HIGH"
    assert attrs["atasker.supervisor"] == sup.name
    assert attrs["atasker.task.outcome"] == "completed"
    assert "atasker.task.worker_died" not in attrs
    assert attrs["atasker.task.queue_wait"] >= 0 and attrs["atasker.task.run_time"] >= 0
    assert span.status.status_code == StatusCode.UNSET
    assert not span.events
    wait_and_run = attrs["atasker.task.queue_wait"] + attrs["atasker.task.run_time"]
    assert wait_and_run <= (span.end_time - span.start_time) / 1e9 + 1e-3
    assert span.end_time == int(task.time_finished * 1e9)


def test_a_failed_task_records_its_exception_and_status_error(traced, spans):
    sup = traced()
    task = sup.submit(fails, ("bad input",), name="parse")
    with pytest.raises(ValueError, match="bad input"):
        task.result(WAIT)
    sup.stop()
    span = spans.named("parse")
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "ValueError: bad input"
    assert span.attributes["atasker.task.outcome"] == "failed"
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "bad input"


def test_spans_in_a_task_and_tasks_it_submits_are_children_of_its_span(traced, spans):
    sup = traced(pool_size=2)
    tracer = spans.tracer

    def outer():
        with tracer.start_as_current_span("inner work"):
            pass
        return sup.submit(current_ids, name="nested").result(WAIT)

    with tracer.start_as_current_span("request"):
        sup.submit(outer, name="outer").result(WAIT)
    sup.stop()
    outer_span = spans.named("outer")
    assert spans.named("inner work").parent.span_id == outer_span.context.span_id
    assert spans.named("nested").parent.span_id == outer_span.context.span_id
    assert outer_span.parent.span_id == spans.named("request").context.span_id


def test_queue_wait_and_a_task_cancelled_while_queued(traced, spans):
    sup = traced(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    started = threading.Event()

    def hold():
        started.set()
        gate.wait(WAIT)

    first = sup.submit(hold, name="hold")
    assert started.wait(WAIT)
    waiting = sup.submit(int, name="waits")
    cancelled = sup.submit(int, name="cancelled")
    assert cancelled.cancel()
    gate.set()
    first.result(WAIT)
    waiting.result(WAIT)
    sup.stop()
    span = spans.named("waits")
    # It waited at least as long as "hold" ran after it was submitted.
    assert span.attributes["atasker.task.queue_wait"] >= waiting.time_started - waiting.time_queued - 1e-6
    assert span.attributes["atasker.task.queue_wait"] > 0
    gone = spans.named("cancelled")
    assert gone.attributes["atasker.task.outcome"] == "cancelled"
    assert gone.events == () or list(gone.events) == []
    assert gone.status.status_code == StatusCode.UNSET


def test_a_delayed_task_keeps_its_submitters_parent(traced, spans):
    sup = traced()
    with spans.tracer.start_as_current_span("request") as request:
        task = sup.submit(current_ids, name="later", delay=0.05)  # queued by the timer thread
    inside, _, _ = task.result(WAIT)
    sup.stop()
    span = spans.named("later")
    assert span.parent.span_id == request.get_span_context().span_id
    assert inside == ids(span.context)
    assert span.attributes["atasker.task.delay"] == 0.05
    # The span covers the delay; the wait does not count it.
    duration = (span.end_time - span.start_time) / 1e9
    assert duration >= 0.05
    assert span.attributes["atasker.task.queue_wait"] <= duration - 0.05 + 1e-3


def test_each_supervisor_traces_to_its_own_provider(traced, spans, atasker_supervisor_factory):
    other = Spans()
    sup = traced()
    sup2 = atasker_supervisor_factory(start=False, autoload=False, plugins=[atasker_otel], name="second")
    sup2.start(otel_tracer_provider=other.provider)
    sup.submit(int, name="one").result(WAIT)
    sup2.submit(int, name="two").result(WAIT)
    sup.stop()
    sup2.stop()
    assert [s.name for s in spans.finished()] == ["one"]
    assert [s.name for s in other.finished()] == ["two"]
    assert other.named("two").attributes["atasker.supervisor"] == "second"


def test_a_task_type_left_out_gets_a_span_but_runs_its_function_as_submitted(traced, spans):
    sup = traced()
    sup.start(otel_task_types=["coroutine"])
    with spans.tracer.start_as_current_span("request") as request:
        task = sup.submit(current_ids, name="plain")
    inside, _, _ = task.result(WAIT)
    sup.stop()
    assert task.func is current_ids
    assert inside != ids(spans.named("plain").context)
    assert spans.named("plain").parent.span_id == request.get_span_context().span_id
    with pytest.raises(TypeError, match="otel_task_types"):
        sup.start(otel_task_types="thread")


# --------------------------------------------------------------- coroutines


async def async_current_ids():
    await asyncio.sleep(0)  # the span stays current across awaits
    return ids(trace.get_current_span().get_span_context())


def test_coroutine_task_submitted_from_a_coroutine(traced, spans):
    sup = traced()

    async def handler():
        with spans.tracer.start_as_current_span("async request") as request:
            task = sup.submit(async_current_ids, name="co", tt=TT_COROUTINE)
            return request, await task

    request, inside = asyncio.run(handler())
    sup.stop()
    span = spans.named("co")
    assert span.parent.span_id == request.get_span_context().span_id
    assert inside == ids(span.context)
    assert span.attributes["atasker.task.type"] == "coroutine"


def test_aloop_background_task_of_a_coroutine_object(traced, spans):
    sup = traced(pool_size=1)
    aloop = sup.create_aloop("otel-tests")
    sup.set_coroutine_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()

    async def hold():
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, WAIT)

    with spans.tracer.start_as_current_span("request") as request:
        held = aloop.background_task(hold(), name="hold")
        queued = aloop.background_task(async_current_ids(), name="object")
        never = aloop.background_task(async_current_ids(), name="never")
    assert never.cancel()  # closed by the aloop, never awaited: no warning
    gate.set()
    inside = queued.result(WAIT)
    held.result(WAIT)
    sup.stop()
    span = spans.named("object")
    assert inside == ids(span.context)
    assert span.parent.span_id == request.get_span_context().span_id
    assert spans.named("never").attributes["atasker.task.outcome"] == "cancelled"


def test_a_coroutine_task_of_a_plain_function_still_fails_clearly(traced, spans):
    sup = traced()
    task = sup.submit(lambda: 42, tt=TT_COROUTINE, name="plain")
    with pytest.raises(TypeError, match="not an awaitable"):
        task.result(WAIT)
    sup.stop()
    assert spans.named("plain").status.status_code == StatusCode.ERROR


# ---------------------------------------------------------------- processes


def pid_ids_and_task_id(_task_id=None):
    return current_ids()[:2], _task_id


async def async_in_process():
    await asyncio.sleep(0)
    return ids(trace.get_current_span().get_span_context()), os.getpid()


def die():
    os._exit(3)


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_process_task_runs_in_the_w3c_context_of_its_span(traced, spans, start_method):
    sup = traced()
    sup.create_mp_pool(start_method=start_method, pool_size=1, reserve_normal=0, reserve_high=0)
    with spans.tracer.start_as_current_span("request") as request:
        task = sup.submit(pid_ids_and_task_id, name="crunch", tt=TT_MP)
        co = sup.submit(async_in_process, name="async crunch", tt=TT_MP)
    (inside, pid), task_id = task.result(WAIT * 2)
    co_inside, co_pid = co.result(WAIT * 2)
    sup.stop()
    span = spans.named("crunch")
    assert pid != os.getpid() and co_pid != os.getpid()
    assert inside == ids(span.context)  # the child's current span is the task span
    assert co_inside == ids(spans.named("async crunch").context)
    assert task_id == task.id  # _task_id still reaches a function that takes it
    assert span.parent.span_id == request.get_span_context().span_id
    assert span.attributes["atasker.task.type"] == "mp"


def test_a_worker_death_ends_the_span_with_status_error(traced, spans):
    sup = traced()
    sup.create_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    task = sup.submit(die, name="dies", tt=TT_MP)
    with pytest.raises(WorkerDiedError):
        task.result(WAIT * 2)
    sup.stop()
    span = spans.named("dies")
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description.startswith("ProcessDiedError: worker process")
    assert span.attributes["atasker.task.worker_died"] is True
    assert any(e.attributes.get("exception.type", "").endswith("ProcessDiedError") for e in span.events)


def test_without_an_sdk_a_remote_trace_context_still_reaches_a_process_task(atasker_supervisor_factory):
    # No tracer provider at all (the API's no-op tracer): nothing is
    # recorded, but the trace the submitter joined (say, from an incoming
    # request's traceparent) reaches the worker process.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    sup = atasker_supervisor_factory(autoload=False, plugins=[atasker_otel])
    sup.create_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        task = sup.submit(pid_ids_and_task_id, tt=TT_MP)
    finally:
        otel_context.detach(token)
    (inside, _), _ = task.result(WAIT * 2)
    assert inside == (0x1234, 0x5678)
    # ... and with no trace to join, the task runs its function untouched.
    plain = sup.submit(pid_ids_and_task_id, tt=TT_MP)
    assert plain.func is pid_ids_and_task_id
    assert plain.result(WAIT * 2)[0][0] == (0, 0)
    sup.stop()


# ------------------------------------------------------------- installation


def test_installed_through_its_entry_point_and_off_unless_loaded(atasker_supervisor_factory, spans, monkeypatch):
    (ep,) = [ep for ep in entry_points(group="atasker") if ep.name == "otel"]
    assert ep.dist.name == "atasker-otel" and ep.load() is atasker_otel
    monkeypatch.delenv("ATASKER_DISABLE_PLUGIN_AUTOLOAD")
    sup = atasker_supervisor_factory(start=False, autoload=True)
    assert sup.plugin_manager.records["otel"].distribution == "atasker-otel"
    sup.start(otel_tracer_provider=spans.provider)
    sup.submit(int, name="autoloaded").result(WAIT)
    sup.stop()
    assert spans.named("autoloaded")
    blocked = atasker_supervisor_factory(autoload=True, block_plugins=["otel"])
    assert not blocked.plugin_manager.has_plugin("otel")
    with pytest.raises(TypeError, match="otel_tracer_provider"):
        blocked.start(otel_tracer_provider=spans.provider)


GLOBAL_PROVIDER_SCRIPT = """
import atasker_otel
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from atasker import TaskSupervisor

# The plugin is loaded and the supervisor started before the application
# sets up its tracer provider, as when the plugin comes in by its entry point.
sup = TaskSupervisor(plugins=[atasker_otel], autoload=False)
sup.start()
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
sup.submit(int, name="global").result(timeout=30)
sup.stop()
print([s.name for s in exporter.get_finished_spans()])
"""


def test_the_global_tracer_provider_is_the_default(tmp_path):
    # In a fresh interpreter: the global provider can be set once per process.
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", GLOBAL_PROVIDER_SCRIPT], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['global']"
