"""OpenTelemetry tracing for atasker: one span per task.

Installed, the plugin is loaded through its entry point (group ``atasker``,
name ``otel``) and traces every task of every supervisor; not installed (or
blocked: ``ATASKER_BLOCK_PLUGINS=otel``), nothing is imported.  It uses the
OpenTelemetry *API* only: spans go to the tracer provider the application
set up (``opentelemetry.trace.set_tracer_provider``), or to the one given
with ``supervisor.start(otel_tracer_provider=...)``.  Without an SDK the
API's tracer records nothing and costs little.

::

    submit() ── hook atasker_wrap_task_call (submitting thread)
        │  span "task name" starts, its parent the span current here
        │  task.func ─▶ runs with the task span current:
        │     thread / coroutine tasks: the Context object itself
        │     process tasks: the W3C trace context (traceparent), pickled
        ▼     with the call and extracted in the worker process
    hook atasker_task_finished ─ queue wait, run time, outcome, exception
                                 and status ERROR; the span ends

The span lives in the submitting process: it knows the wait, the outcome
and a worker's death.  Work in a process task (spans its code starts, calls
it makes with an instrumented client) is parented to it through the W3C
context, recorded by the worker process's own tracer provider.
"""

from __future__ import annotations

import inspect
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from atasker import WorkerDiedError, hookimpl
from atasker.core.task import priority_name

if TYPE_CHECKING:
    from atasker import SupervisorAPI, Task

__all__ = [
    "DEFAULT_TASK_TYPES",
    "EXTENSION",
    "InContext",
    "Tracing",
    "WithTraceContext",
    "__version__",
]

__version__ = "1.0.0"

#: The name of the per-supervisor extension: ``supervisor.extension("otel")``.
EXTENSION = "otel"

#: Task types whose call runs with the task span current.  ``thread`` and
#: ``coroutine`` run in this process; ``mp`` workers are local processes of
#: the same installation.  Others (a remote ``dask`` worker may not have
#: this package) only with ``start(otel_task_types=...)``.
DEFAULT_TASK_TYPES = frozenset({"thread", "coroutine", "mp"})

#: Task types that run in this process: they get the Context object itself;
#: every other type gets the W3C trace context, which pickles.
_IN_PROCESS = frozenset({"thread", "coroutine"})

# What the global provider is until the application sets one: spans from it
# never record.
_NO_OP_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)

# The span of each task that is queued or running.  Weak: a submission that
# fails after the span started (the task cannot be pickled) leaves no entry.
_spans: weakref.WeakKeyDictionary[Task, trace.Span] = weakref.WeakKeyDictionary()


class Tracing:
    """What the plugin keeps per supervisor (``supervisor.extension("otel")``).

    :param tracer_provider: where spans go; default: the global provider
        (the API's proxy, so a provider set later is used from then on,
        see :meth:`records`).
    :param task_types: task types whose call runs with the task span
        current (see :data:`DEFAULT_TASK_TYPES`).
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None, task_types: Iterable[str] = ()) -> None:
        self.use(tracer_provider)
        self.task_types = frozenset(task_types) or DEFAULT_TASK_TYPES

    def use(self, tracer_provider: trace.TracerProvider | None) -> None:
        """Send the spans of tasks submitted from now on to *tracer_provider*."""
        self.tracer = trace.get_tracer(__name__, __version__, tracer_provider=tracer_provider)
        self._provider = tracer_provider
        self._records = tracer_provider is not None and type(tracer_provider) not in _NO_OP_PROVIDERS
        self._recheck = 0.0

    def records(self) -> bool:
        """Whether spans may be recorded: a provider other than the API's no-op one is set up.

        The global provider is looked up at most once a second while it is
        the no-op one (the lookup reads the environment: about a
        microsecond per task otherwise), so one set later takes effect
        within a second; once set, it stays.
        """
        if self._records or self._provider is not None:
            return self._records
        now = time.monotonic()
        if now < self._recheck:
            return False
        self._recheck = now + 1.0
        self._records = type(trace.get_tracer_provider()) not in _NO_OP_PROVIDERS
        return self._records


class InContext:
    """Call ``__wrapped__`` with an OpenTelemetry Context attached (in this process).

    With *awaits* (coroutine tasks, ``async def`` functions), the call
    returns a coroutine that makes the call and awaits its awaitable with
    the context attached, so the task span is current across the awaits.
    The call is made there, not before: a task cancelled before its
    coroutine started never makes it (an awaitable made earlier is left to
    whoever made it, as without this plugin).
    """

    __slots__ = ("__wrapped__", "awaits", "context")

    def __init__(self, context: otel_context.Context, call: Callable[..., Any], awaits: bool) -> None:
        self.context = context
        self.__wrapped__ = call
        self.awaits = awaits

    def attached(self) -> otel_context.Context:
        return self.context

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.awaits:
            return _awaiting(self, args, kwargs)
        token = otel_context.attach(self.attached())
        try:
            return self.__wrapped__(*args, **kwargs)
        finally:
            otel_context.detach(token)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.__wrapped__!r}>"


class WithTraceContext(InContext):
    """Call ``__wrapped__`` with the W3C trace context it carries: it pickles,
    and runs in a worker process (or wherever the task type runs it)."""

    __slots__ = ("carrier",)

    def __init__(self, carrier: dict[str, str], call: Callable[..., Any], awaits: bool) -> None:
        super().__init__(otel_context.Context(), call, awaits)
        self.carrier = carrier

    def attached(self) -> otel_context.Context:
        return propagate.extract(self.carrier)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.carrier, self.__wrapped__, self.awaits))


async def _awaiting(wrapper: InContext, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    token = otel_context.attach(wrapper.attached())
    try:
        awaitable = wrapper.__wrapped__(*args, **kwargs)
        if not inspect.isawaitable(awaitable):
            raise TypeError(
                f"{wrapper.__wrapped__!r} returned {type(awaitable).__name__}, not an awaitable: "
                "a coroutine task needs an async def function (tt='thread' runs a plain one)"
            )
        return await awaitable
    finally:
        otel_context.detach(token)


def _tracing(supervisor: SupervisorAPI) -> Tracing:
    tracing: Tracing = supervisor.extension(EXTENSION)
    return tracing


@hookimpl
def atasker_configure(supervisor: SupervisorAPI) -> None:
    """Add the ``"otel"`` extension: the tracer of this supervisor."""
    supervisor.add_extension(EXTENSION, Tracing())


@hookimpl
def atasker_supervisor_starting(supervisor: SupervisorAPI, options: Mapping[str, Any]) -> list[str]:
    """``start(otel_tracer_provider=..., otel_task_types=[...])``."""
    handled = []
    tracing = _tracing(supervisor)
    if "otel_tracer_provider" in options:
        tracing.use(options["otel_tracer_provider"])
        handled.append("otel_tracer_provider")
    if "otel_task_types" in options:
        types = options["otel_task_types"]
        if isinstance(types, str) or not all(isinstance(t, str) for t in types):
            raise TypeError(f"otel_task_types must be task type names (a list of str), got {types!r}")
        tracing.task_types = frozenset(types)
        handled.append("otel_task_types")
    return handled


@hookimpl
def atasker_wrap_task_call(task: Task, call: Callable[..., Any]) -> Callable[..., Any] | None:
    """Start the task's span under the submitter's current span; run the call in it."""
    tracing = _tracing(task.supervisor)
    parent = otel_context.get_current()
    if not trace.get_current_span(parent).get_span_context().is_valid and not tracing.records():
        return None  # no SDK and no trace to join: nothing to record or carry (the cheap way out)
    attributes: dict[str, Any] = {
        "atasker.task.id": task.id,
        "atasker.task.type": task.tt,
        "atasker.task.priority": task.priority,
        "atasker.task.priority_band": priority_name(task.priority),
        "atasker.supervisor": task.supervisor.name,
    }
    if task.delay:
        attributes["atasker.task.delay"] = task.delay
    span = tracing.tracer.start_span(task.name, context=parent, kind=SpanKind.INTERNAL, attributes=attributes)
    if span.get_span_context().is_valid:
        _spans[task] = span
        context = trace.set_span_in_context(span, parent)  # the parent's baggage too
    elif trace.get_current_span(parent).get_span_context().is_valid:
        # A tracer that records nothing (older APIs' no-op tracer returns an
        # invalid span even under a valid parent): the trace goes on in the task.
        context = parent
    else:
        return None  # no SDK and no trace to join: nothing to record or carry
    tt = task.tt
    if tt not in tracing.task_types:
        return None
    if tt in _IN_PROCESS:
        return InContext(context, call, awaits=tt == "coroutine")
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    # A process task's worker runs an async def function's coroutine itself.
    return WithTraceContext(carrier, call, awaits=inspect.iscoroutinefunction(call))


@hookimpl
def atasker_task_finished(task: Task) -> None:
    """Record the outcome (and the exception: status ERROR) and end the span."""
    span = _spans.pop(task, None) if _spans else None
    if span is None:
        return
    # Set here, all at once: one call into the span (it takes a lock) rather
    # than one per attribute, and no hook at the start.
    attributes: dict[str, Any] = {"atasker.task.outcome": task.outcome or ""}
    started, queued, finished = task.time_started, task.time_queued, task.time_finished
    if started is not None:
        if queued is not None:
            attributes["atasker.task.queue_wait"] = max(0.0, started - queued - (task.delay or 0.0))
        if finished is not None:
            attributes["atasker.task.run_time"] = finished - started
    error = task.error
    if isinstance(error, WorkerDiedError):
        attributes["atasker.task.worker_died"] = True
    span.set_attributes(attributes)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    end = task.time_finished
    span.end(end_time=int(end * 1e9) if end is not None else None)
