"""Built-in plugin ``atasker.builtin.trace``: task timelines.

* :mod:`.recorder` -- :class:`TraceRecorder`, a lifecycle observer that
  writes Chrome trace-event JSON (``start(trace="run.json")``);
* :mod:`.plot` -- ``atasker plot``: a trace drawn as a timeline.

Blocking this plugin removes all of it.
"""

from __future__ import annotations

from atasker.builtin.trace.recorder import (
    PLUGIN_NAME,
    PRIORITY_COLORS,
    PRIORITY_NAMES,
    TRACE_CNAMES,
    TraceRecorder,
    attach,
    get_recorder,
    open_recorder,
    priority_name,
    trace_path,
)

__all__ = [
    "PLUGIN_NAME",
    "PRIORITY_COLORS",
    "PRIORITY_NAMES",
    "TRACE_CNAMES",
    "TraceRecorder",
    "attach",
    "get_recorder",
    "open_recorder",
    "priority_name",
    "trace_path",
]
