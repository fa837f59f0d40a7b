"""Built-in plugin ``atasker.builtin.trace``: task timelines.

* :mod:`.recorder` -- :class:`TraceRecorder`, a lifecycle observer that
  writes Chrome trace-event JSON (``start(trace="run.json")``);
* :mod:`.plot` -- ``atasker plot``: a trace drawn as a timeline.

Blocking this plugin removes all of it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from atasker.plugin.hookspecs import hookimpl
from atasker.plugin.protocols import CommandType

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

_RECORDER_NAMES = frozenset(
    {
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
    }
)


def __getattr__(name: str) -> Any:
    # The recorder is imported on first use, so that a supervisor that does
    # not trace imports and runs no trace code.
    if name in _RECORDER_NAMES:
        from atasker.builtin.trace import recorder

        return getattr(recorder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["atasker_register_commands", "atasker_supervisor_starting", *sorted(_RECORDER_NAMES)]


@hookimpl
def atasker_supervisor_starting(supervisor: TaskSupervisor, options: Mapping[str, Any]) -> list[str]:
    """``start(trace=...)`` or ``ATASKER_TRACE``: register a recorder for the run.

    Opening the file here means a bad path fails ``start()`` before the
    supervisor accepts a task.
    """
    trace = options.get("trace")
    if trace is None and (supervisor.is_active() or not os.environ.get("ATASKER_TRACE")):
        return ["trace"]
    from atasker.builtin.trace.recorder import PLUGIN_NAME, attach, open_recorder

    if supervisor.is_active():
        assert trace is not None  # see the first test
        attach(supervisor, trace)
        return ["trace"]
    recorder = open_recorder(supervisor, trace)
    if recorder is not None:  # it closes and unregisters itself on stop
        supervisor.register_plugin(recorder, name=PLUGIN_NAME)
    return ["trace"]


def _plot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace", help="trace-event JSON file written by atasker")
    parser.add_argument("-o", "--output", help="PNG file to write (default: the trace's name with .png)")
    parser.add_argument("--title", help="figure title")


def _plot(args: argparse.Namespace) -> int:
    from atasker.builtin.trace.plot import run

    return run(args.trace, args.output, args.title)


@hookimpl
def atasker_register_commands(register: Callable[[CommandType], None]) -> None:
    """Register ``atasker plot``."""
    register(
        CommandType("plot", "draw a trace (start(trace=...), ATASKER_TRACE) as a PNG timeline", _plot_arguments, _plot)
    )
