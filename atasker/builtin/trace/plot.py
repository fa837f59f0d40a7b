"""``atasker plot``: a task timeline trace as a PNG.

::

    run.json ─▶ load_trace() ─▶ Trace(slices, cancelled, tracks)
                                   │
                                   ▼
                              plot_trace() ─▶ timeline.png
        ┌──────────────────────────────────────────┬──────────────────┐
        │ one row per pool slot, per task type;    │ wait for a slot  │
        │ one bar per task, coloured by priority   │ per priority:    │
        ├──────────────────────────────────────────┤ p50 and p95      │
        │ tasks waiting per priority over time     │                  │
        └──────────────────────────────────────────┴──────────────────┘

Reading a trace needs nothing but the standard library (the demo and the
tests use :func:`load_trace` and :func:`percentile`); drawing needs
matplotlib, the ``atasker[plot]`` extra, imported only by
:func:`plot_trace` and with the Agg backend (no display needed).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atasker.core.task import BANDS, PRIORITY_COLORS, PRIORITY_NAMES, TASK_NORMAL
from atasker.errors import AtaskerError

__all__ = ["PlotDependencyError", "Slice", "Trace", "load_trace", "percentile", "plot_trace", "run", "wait_stats"]

#: Bands, most urgent first (the order of legends and tables).
_BAND_BY_NAME = {name: band for band, name in PRIORITY_NAMES.items()}


#: Waits shorter than this (seconds) are left out of the queue-depth panel:
#: a task that started at once would only draw a hairline spike.
MIN_WAIT = 1e-3


class PlotDependencyError(AtaskerError, ImportError):
    """matplotlib is missing: ``pip install 'atasker[plot]'``."""


@dataclass(frozen=True)
class Slice:
    """One task of a trace: where and when it ran, how long it waited.

    Times are seconds since the trace started.  For a task cancelled while
    queued, ``slot`` is ``0``, ``duration`` is ``0`` and ``start`` is when
    it was cancelled.
    """

    tt: str
    slot: int
    name: str
    priority: int
    band: int
    start: float
    duration: float
    wait: float
    outcome: str
    id: int | None = None

    @property
    def end(self) -> float:
        """When it ended (seconds since the trace started)."""
        return self.start + self.duration


@dataclass
class Trace:
    """What :func:`load_trace` reads: slices per task and the tracks."""

    slices: list[Slice] = field(default_factory=list)
    #: Tasks cancelled while queued (instant events).
    cancelled: list[Slice] = field(default_factory=list)
    #: Task types in trace order, each with its slot numbers.
    tracks: dict[str, list[int]] = field(default_factory=dict)
    #: ``args`` of the trace's first event (epoch, supervisor, pid).
    meta: dict[str, Any] = field(default_factory=dict)
    #: Whether the file ended without its closing bracket (cut short).
    truncated: bool = False

    @property
    def span(self) -> float:
        """Seconds from the trace start to the last event."""
        ends = [s.end for s in self.slices] + [s.start for s in self.cancelled]
        return max(ends, default=0.0)


def _read_events(path: Path) -> tuple[list[dict[str, Any]], bool]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        truncated = False
    except json.JSONDecodeError:
        # A trace cut short (crash, kill) lacks its closing bracket and may
        # end in a partial line: keep every complete event, as
        # chrome://tracing does.
        body = text.rstrip()
        data = None
        while body:
            try:
                data = json.loads(body.rstrip(",\n ") + "\n]")
                break
            except json.JSONDecodeError:
                cut = body.rfind("\n")
                if cut <= 0:
                    break
                body = body[:cut]
        if data is None:
            raise ValueError(f"{path}: not a trace-event JSON file") from None
        truncated = True
    if isinstance(data, dict):
        data = data.get("traceEvents", [])
    if not isinstance(data, list):
        raise ValueError(f"{path}: not a trace-event JSON file (expected an array of events)")
    return data, truncated


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Read an atasker trace (complete, or cut short by a crash).

    :raises ValueError: the file is not trace-event JSON.
    """
    events, truncated = _read_events(Path(path))
    trace = Trace(truncated=truncated)
    processes: dict[int, str] = {}
    for event in events:
        if not isinstance(event, dict):
            continue
        ph = event.get("ph")
        if ph == "M" and event.get("name") == "process_name":
            processes[event["pid"]] = str(event.get("args", {}).get("name", event["pid"]))
        elif ph == "i" and event.get("s") == "g" and event.get("name") == "atasker trace":
            trace.meta = dict(event.get("args", {}))
    for event in events:
        if not isinstance(event, dict) or event.get("ph") not in ("X", "i") or event.get("s") == "g":
            continue
        args = event.get("args", {})
        tt = str(args.get("tt") or processes.get(event.get("pid", 0), event.get("pid", "?")))
        priority = args.get("priority")
        band = _BAND_BY_NAME.get(event.get("cat", ""), TASK_NORMAL)
        item = Slice(
            tt=tt,
            slot=int(event.get("tid", 0)),
            name=str(event.get("name", "")),
            priority=int(priority) if isinstance(priority, int) else band,
            band=band,
            start=float(event.get("ts", 0)) / 1e6,
            duration=float(event.get("dur", 0)) / 1e6,
            wait=float(args.get("wait_ms", 0)) / 1e3,
            outcome=str(args.get("outcome", "completed")),
            id=args.get("id"),
        )
        if event["ph"] == "X":
            trace.slices.append(item)
            slots = trace.tracks.setdefault(tt, [])
            if item.slot not in slots:
                slots.append(item.slot)
        else:
            trace.cancelled.append(item)
            trace.tracks.setdefault(tt, [])
    order = {name: i for i, name in enumerate(processes.values())}
    trace.tracks = {tt: sorted(trace.tracks[tt]) for tt in sorted(trace.tracks, key=lambda t: order.get(t, len(order)))}
    return trace


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100) of *values*, linearly interpolated; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def wait_stats(slices: Iterable[Slice]) -> dict[int, tuple[int, float, float]]:
    """Per priority band: ``(count, wait p50, wait p95)`` in seconds, most urgent first."""
    waits: dict[int, list[float]] = {}
    for s in slices:
        waits.setdefault(s.band, []).append(s.wait)
    return {
        band: (len(waits[band]), percentile(waits[band], 50), percentile(waits[band], 95))
        for band in BANDS
        if band in waits
    }


def _queue_depth(items: Iterable[Slice]) -> dict[int, tuple[list[float], list[int]]]:
    """Tasks waiting per band over time, rebuilt from each task's wait (>= MIN_WAIT)."""
    changes: dict[int, list[tuple[float, int]]] = {}
    for s in items:
        if s.wait < MIN_WAIT:
            continue
        changes.setdefault(s.band, []).extend(((s.start - s.wait, 1), (s.start, -1)))
    series = {}
    for band, points in changes.items():
        points.sort()
        xs, ys, depth = [0.0], [0], 0
        for t, d in points:
            depth += d
            xs.append(t)
            ys.append(depth)
        series[band] = (xs, ys)
    return series


def _num(value: float) -> str:
    """A wait for a label: 3 significant digits, no scientific notation."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _import_pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotDependencyError(
            "atasker plot needs matplotlib, which is not installed: pip install 'atasker[plot]'"
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_trace(
    trace: Trace | str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Draw a trace as a PNG timeline with a queue-wait panel; return the PNG's path.

    :param trace: a :class:`Trace` or the path of a trace file.
    :param output: the PNG to write (its folder must exist).
    :param title: the figure title (default: from the trace).
    :raises PlotDependencyError: matplotlib is not installed.
    :raises ValueError: the trace file is not trace-event JSON.
    """
    plt = _import_pyplot()
    from matplotlib.patches import Patch

    if not isinstance(trace, Trace):
        trace = load_trace(trace)
    output = Path(output)

    # Rows: one per slot, task types top to bottom in trace order.
    rows: dict[tuple[str, int], int] = {}
    labels: list[str] = []
    groups: list[tuple[str, int, int]] = []
    for tt, slots in trace.tracks.items():
        first = len(labels)
        for slot in slots:
            rows[(tt, slot)] = len(labels)
            labels.append(f"{tt} {slot}")
        if len(labels) > first:
            groups.append((tt, first, len(labels) - 1))
    n_rows = max(1, len(labels))

    height = min(30.0, 2.6 + 0.24 * n_rows) + 2.4
    fig = plt.figure(figsize=(14, height), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=(3.3, 1), height_ratios=(max(2.0, 0.24 * n_rows + 0.8), 2.0))
    ax = fig.add_subplot(grid[0, 0])
    ax_depth = fig.add_subplot(grid[1, 0], sharex=ax)
    ax_wait = fig.add_subplot(grid[:, 1])

    # Timeline: one broken_barh per (row, band, kind) keeps thousands of bars fast.
    bars: dict[tuple[int, int, str], list[tuple[float, float]]] = {}
    for s in trace.slices:
        kind = "ok" if s.outcome == "completed" else "bad"
        bars.setdefault((rows[(s.tt, s.slot)], s.band, kind), []).append((s.start, max(s.duration, 1e-4)))
    for (row, band, kind), ranges in bars.items():
        ax.broken_barh(
            ranges,
            (row - 0.4, 0.8),
            facecolors=PRIORITY_COLORS[band],
            edgecolors="black" if kind == "bad" else "white",
            linewidth=0.4,
            hatch="xxx" if kind == "bad" else None,
        )
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.set_yticks(range(len(labels)), [label.split(" ")[-1] for label in labels], fontsize=7)
    for i, (tt, first, last) in enumerate(groups):
        if i:
            ax.axhline(first - 0.5, color="0.3", linewidth=0.8)
        ax.text(
            -0.022,
            1 - (first + last + 1) / 2 / n_rows,
            tt,
            transform=ax.transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=10,
            fontweight="bold",
        )
    ax.set_ylabel("pool slot, per task type", labelpad=26)
    ax.grid(axis="x", color="0.9")
    ax.tick_params(labelbottom=False)
    span = trace.span or 1.0
    ax.set_xlim(0, span * 1.01)
    present = [b for b in BANDS if any(s.band == b for s in trace.slices)]
    handles = [Patch(facecolor=PRIORITY_COLORS[b], label=PRIORITY_NAMES[b]) for b in present]
    if any(s.outcome != "completed" for s in trace.slices):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="xxx", label="failed / cancelled"))
    ax.legend(
        handles=handles,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=len(handles),
        fontsize=8,
        frameon=False,
        borderaxespad=0.2,
    )
    n_tasks = len(trace.slices)
    ax.set_title(
        f"{n_tasks} tasks, {span:.1f} s: one row per pool slot, one bar per task",
        fontsize=10,
        loc="left",
    )

    # Queue depth per band over time (rebuilt from each task's wait).
    for band, (xs, ys) in sorted(_queue_depth(trace.slices + trace.cancelled).items()):
        ax_depth.step(xs, ys, where="post", color=PRIORITY_COLORS[band], linewidth=1.4, label=PRIORITY_NAMES[band])
    ax_depth.set_xlabel("seconds since the trace started")
    ax_depth.set_ylabel("tasks waiting")
    ax_depth.set_title("tasks waiting for a slot, per priority (all task types)", fontsize=10, loc="left")
    ax_depth.set_ylim(bottom=0)
    ax_depth.grid(color="0.9")

    # Wait for a slot per priority: p50 bar, p95 whisker.
    stats = wait_stats(trace.slices)
    bands = list(stats)
    worst = max((p95 for _, _, p95 in stats.values()), default=0.0)
    scale, unit = (1.0, "s") if worst >= 1.0 else (1e3, "ms")
    for i, band in enumerate(bands):
        count, p50, p95 = stats[band]
        color = PRIORITY_COLORS[band]
        ax_wait.barh(i, p95 * scale, color=color, alpha=0.3, height=0.7, label="p95" if i == 0 else None)
        ax_wait.barh(i, p50 * scale, color=color, height=0.7, label="p50" if i == 0 else None)
        ax_wait.text(
            p95 * scale,
            i,
            f"  p50 {_num(p50 * scale)}  p95 {_num(p95 * scale)} {unit}\n  {count} tasks",
            va="center",
            fontsize=8,
        )
    ax_wait.set_yticks(range(len(bands)), [PRIORITY_NAMES[b] for b in bands])
    ax_wait.set_ylim(len(bands) - 0.5, -0.5)
    ax_wait.set_xlim(0, max(worst * scale, 1e-3) * 1.9)
    ax_wait.set_xlabel(f"wait for a slot ({unit})")
    ax_wait.set_title("queue wait per priority\n(dark: p50, light: p95)", fontsize=10)
    ax_wait.grid(axis="x", color="0.9")

    label = trace.meta.get("supervisor") or "atasker"
    fig.suptitle(title or f"atasker task timeline: {label}", fontsize=13, fontweight="bold")
    fig.savefig(output, format="png")
    plt.close(fig)
    return output


def run(trace: str, output: str | None = None, title: str | None = None) -> int:
    """``atasker plot TRACE [-o PNG]``: returns a process exit code."""
    import sys

    source = Path(trace)
    target = Path(output) if output else source.with_suffix(".png")
    try:
        plot_trace(source, target, title=title)
    except PlotDependencyError as exc:
        print(f"atasker plot: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"atasker plot: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {target}")
    return 0
