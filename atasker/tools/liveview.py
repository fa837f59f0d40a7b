"""A live terminal view of a supervisor: ``with task_supervisor.live(total=n):``.

::

    pool threads ── atasker_task_finished ─▶ _Counter (done / failed per task type)
                                                  │
    display thread (refresh_per_second) ──────────┤ + supervisor.get_info()
                                                  ▼
                                            Snapshot ─▶ rich table + progress bar (a terminal)
                                                     └▶ one plain line per plain_interval (CI logs)

Per task type it shows tasks running, the pool size and its reserves, how
many of the reserve slots are in use, tasks waiting per priority, tasks done
and tasks per second; with ``total`` a progress bar and an ETA.

The view only reads: it takes a snapshot from its own display thread at a
fixed rate (display, not dispatch -- no task waits for it) and counts
finished tasks through a tiny observer plugin registered while the view is
open.  With rich installed (the ``atasker[live]`` extra) and a terminal it
draws a table that updates in place; otherwise -- output to a file or a
pipe, CI logs, or no rich -- it prints one plain line every
``plain_interval`` seconds and a final one.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from atasker.core.signals import signals_to_main_thread
from atasker.core.supervisor import default_supervisor
from atasker.core.task import Task
from atasker.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from types import TracebackType

    from atasker.core.supervisor import TaskSupervisor

__all__ = ["LiveView", "Snapshot", "TaskTypeSnapshot", "live"]

#: Seconds of history the tasks-per-second figure is averaged over.
RATE_WINDOW = 3.0
#: Rows of the built-in task types come first, in this order.
_ORDER = {"thread": 0, "mp": 1, "coroutine": 2}


@dataclass(frozen=True)
class TaskTypeSnapshot:
    """One task type at one moment (a row of the live view)."""

    tt: str
    running: int
    pool_size: int
    reserve_normal: int
    reserve_high: int
    #: Slots of each reserve in use (tasks running beyond ``pool_size``).
    normal_in_use: int
    high_in_use: int
    #: CRITICAL tasks running beyond pool and reserves (the pool grew).
    beyond: int
    #: Tasks waiting for a slot, per priority (most urgent first).
    waiting: dict[int, int]
    done: int
    failed: int
    rate: float

    @property
    def waiting_total(self) -> int:
        """Tasks waiting for a slot, all priorities."""
        return sum(self.waiting.values())


@dataclass(frozen=True)
class Snapshot:
    """What the live view shows at one moment."""

    name: str
    elapsed: float
    task_types: list[TaskTypeSnapshot] = field(default_factory=list)
    done: int = 0
    failed: int = 0
    rate: float = 0.0
    total: int | None = None
    delayed: int = 0

    @property
    def eta(self) -> float | None:
        """Seconds until ``total`` tasks are done at the current rate, if known."""
        if self.total is None or self.rate <= 0 or self.done >= self.total:
            return None
        return max(0, self.total - self.done) / self.rate


class _Counter:
    """Observer plugin: counts finished tasks per task type while the view is open."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: collections.Counter[str] = collections.Counter()
        self.failed: collections.Counter[str] = collections.Counter()

    @hookimpl
    def atasker_task_finished(self, task: Task) -> None:
        with self.lock:
            self.done[task.tt] += 1
            if task.outcome == "failed":
                self.failed[task.tt] += 1

    def read(self) -> tuple[dict[str, int], dict[str, int]]:
        with self.lock:
            return dict(self.done), dict(self.failed)


def _rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


class LiveView:
    """A live view of *supervisor*; a context manager (also ``start``/``stop``).

    :param supervisor: the supervisor to watch.
    :param total: tasks expected to finish while the view is open: shows a
        progress bar and an ETA (``None``: no progress bar).
    :param refresh_per_second: display rate of the rich view.
    :param plain_interval: seconds between plain lines (non-terminal output).
    :param console: a ``rich.console.Console`` to draw on; a console that is
        not a terminal gets plain lines on its file.
    :param file: where to draw without *console* (default ``sys.stdout``);
        rich is used if it is installed and *file* is a terminal.
    :param plain: force plain lines (``True``) or rich (``False``); default:
        decide from the output as above.
    :param title: shown in the header (default: the supervisor's name).
    """

    def __init__(
        self,
        supervisor: TaskSupervisor,
        *,
        total: int | None = None,
        refresh_per_second: float = 4.0,
        plain_interval: float = 2.0,
        console: Any = None,
        file: IO[str] | None = None,
        plain: bool | None = None,
        title: str | None = None,
    ) -> None:
        if total is not None and (type(total) is not int or total < 0):
            raise ValueError(f"total must be an int >= 0 or None, got {total!r}")
        if not refresh_per_second > 0 or not plain_interval > 0:
            raise ValueError("refresh_per_second and plain_interval must be > 0")
        self.supervisor = supervisor
        self.total = total
        self.refresh_per_second = float(refresh_per_second)
        self.plain_interval = float(plain_interval)
        self.title = title or supervisor.name
        self._console = console
        self._file = file
        self._plain_forced = plain
        self._counter = _Counter()
        self._samples: collections.deque[tuple[float, int, dict[str, int]]] = collections.deque()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Any = None  # rich.live.Live in rich mode
        self._lock = threading.Lock()  # one refresh at a time
        self._t0 = 0.0
        #: ``True`` when drawing with rich, ``False`` for plain lines (set by start).
        self.rich = False
        #: The last snapshot drawn.
        self.last: Snapshot | None = None

    # ------------------------------------------------------------- lifecycle

    def __enter__(self) -> LiveView:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LiveView:
        """Start counting and drawing (from a display thread of its own)."""
        if self._thread is not None:
            raise RuntimeError("this live view is already started")
        self._stop_event.clear()
        self._samples.clear()
        self._counter = _Counter()
        self._t0 = time.monotonic()
        self.supervisor.register_plugin(self._counter, name=f"atasker.live.{id(self):x}")
        self.rich = self._use_rich()
        if self.rich:
            from rich.console import Console
            from rich.live import Live

            console = self._console or Console(file=self._file or sys.stdout)
            self._live = Live(console=console, auto_refresh=False, transient=False)
            self._live.start()
            interval = 1.0 / self.refresh_per_second
        else:
            interval = self.plain_interval
        self._thread = threading.Thread(target=self._run, args=(interval,), name="atasker_live", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Snapshot:
        """Draw the final state, stop drawing and counting; return the final snapshot."""
        thread = self._thread
        if thread is None:
            raise RuntimeError("this live view is not started")
        self._thread = None
        self._stop_event.set()
        if thread is not threading.current_thread():
            thread.join()
        try:
            snap = self.refresh(final=True)
            if self._live is not None:
                self._live.stop()
                self._live = None
        finally:
            if self.supervisor.plugin_manager.is_registered(self._counter):
                self.supervisor.unregister_plugin(self._counter)
        return snap

    def _use_rich(self) -> bool:
        if self._plain_forced is not None:
            if not self._plain_forced and not _rich_available():
                raise ImportError("the rich live view needs rich: pip install 'atasker[live]'")
            return not self._plain_forced
        if self._console is not None:
            return bool(self._console.is_terminal)
        out = self._file or sys.stdout
        try:
            terminal = out.isatty()
        except (AttributeError, ValueError):
            terminal = False
        return terminal and _rich_available()

    def _run(self, interval: float) -> None:
        signals_to_main_thread()  # Ctrl-C goes to the main thread
        # A fixed display rate: this thread only reads, no task waits for it.
        while not self._stop_event.wait(interval):
            try:
                self.refresh()
            except Exception:  # the display must never take the program down
                import logging

                logging.getLogger("atasker").exception("atasker live view: refresh failed")
                return

    # ------------------------------------------------------------- snapshots

    def snapshot(self, average: bool = False) -> Snapshot:
        """The numbers the view shows now (also usable without drawing).

        :param average: tasks per second since the view started, instead of
            over the last few seconds (the final frame shows that).
        """
        now = time.monotonic()
        info = self.supervisor.get_info()
        done_by_tt, failed_by_tt = self._counter.read()
        done = sum(done_by_tt.values())
        # tasks/s over the last RATE_WINDOW seconds (since start, at first).
        samples = self._samples
        samples.append((now, done, done_by_tt))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        t_then, done_then, by_tt_then = samples[0] if len(samples) > 1 and not average else (self._t0, 0, {})
        span = now - t_then
        rows = []
        for tt, entry in info["task_types"].items():
            rows.append(_row(tt, entry, done_by_tt.get(tt, 0), failed_by_tt.get(tt, 0), by_tt_then.get(tt, 0), span))
        rows.sort(key=lambda r: _ORDER.get(r.tt, len(_ORDER)))  # stable: others in creation order
        return Snapshot(
            name=self.title,
            elapsed=now - self._t0,
            task_types=rows,
            done=done,
            failed=sum(failed_by_tt.values()),
            rate=(done - done_then) / span if span > 0 else 0.0,
            total=self.total,
            delayed=info.get("delayed", 0),
        )

    def refresh(self, final: bool = False) -> Snapshot:
        """Take a snapshot and draw it now; return it.

        :param final: the last frame: rates averaged since the view started.
        """
        with self._lock:
            snap = self.snapshot(average=final)
            self.last = snap
            if self._live is not None:
                self._live.update(render_rich(snap), refresh=True)
            else:
                out = self._console.file if self._console is not None else (self._file or sys.stdout)
                print(render_plain(snap, final=final), file=out, flush=True)
            return snap


def _row(tt: str, entry: dict[str, Any], done: int, failed: int, done_then: int, span: float) -> TaskTypeSnapshot:
    running = entry["running"]
    size, normal, high = entry["pool_size"], entry["reserve_normal"], entry["reserve_high"]
    over = max(0, running - size) if size else 0
    normal_used = min(normal, over)
    high_used = min(high, over - normal_used)
    return TaskTypeSnapshot(
        tt=tt,
        running=running,
        pool_size=size,
        reserve_normal=normal if size else 0,
        reserve_high=high if size else 0,
        normal_in_use=normal_used,
        high_in_use=high_used,
        beyond=over - normal_used - high_used,
        waiting=dict(sorted(entry.get("waiting", {}).items())),
        done=done,
        failed=failed,
        rate=(done - done_then) / span if span > 0 else 0.0,
    )


# ------------------------------------------------------------------ renderers


def _pool_text(row: TaskTypeSnapshot) -> str:
    if not row.pool_size:
        return "unlimited"
    return f"{row.pool_size} +{row.reserve_normal}N +{row.reserve_high}H"


def _reserves_text(row: TaskTypeSnapshot) -> str:
    if not row.pool_size:
        return "-"
    text = f"N {row.normal_in_use}/{row.reserve_normal} H {row.high_in_use}/{row.reserve_high}"
    if row.beyond:
        text += f"  +{row.beyond} CRITICAL"
    return text


def _waiting_parts(row: TaskTypeSnapshot) -> list[tuple[str, int]]:
    """``(priority name, count)`` per waiting priority, most urgent first."""
    from atasker.core.task import priority_name

    parts: dict[str, int] = {}
    for priority, count in row.waiting.items():
        name = priority_name(priority)
        parts[name] = parts.get(name, 0) + count
    return list(parts.items())


def _eta_text(snap: Snapshot) -> str:
    eta = snap.eta
    if eta is None:
        return ""
    if eta < 1:
        return "ETA <1s"
    return f"ETA {eta:.0f}s" if eta < 120 else f"ETA {eta / 60:.0f}min"


def render_plain(snap: Snapshot, final: bool = False) -> str:
    """One line: per task type running/pool/reserves, waiting, done and rate; then totals."""
    parts = []
    for row in snap.task_types:
        waiting = " ".join(f"{name}={n}" for name, n in _waiting_parts(row)) or "0"
        pool = f"pool {_pool_text(row)}"
        if row.pool_size:
            pool += f", reserves in use {_reserves_text(row)}"
        parts.append(f"{row.tt}: running {row.running} ({pool}), waiting {waiting}, done {row.done} {row.rate:.1f}/s")
    if snap.total is not None:
        pct = 100.0 * snap.done / snap.total if snap.total else 100.0
        totals = f"done {snap.done}/{snap.total} ({pct:.0f}%)"
    else:
        totals = f"done {snap.done}"
    totals += f", {snap.rate:.1f} tasks/s"
    if snap.failed:
        totals += f", {snap.failed} failed"
    if not final and (eta := _eta_text(snap)):
        totals += f", {eta}"
    head = f"[{snap.name} {snap.elapsed:5.1f}s{' final' if final else ''}]"
    return " | ".join([f"{head} {totals}", *parts])


def render_rich(snap: Snapshot) -> Any:
    """A rich renderable: header, a table with a row per task type, a progress bar."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    header = Text.assemble(
        ("atasker ", "bold"),
        (snap.name, "bold cyan"),
        f"  {snap.elapsed:.1f}s  ",
        (f"{snap.done}", "bold"),
        " done  ",
        (f"{snap.rate:.1f}", "bold"),
        " tasks/s",
    )
    if snap.failed:
        header.append(f"  {snap.failed} failed", style="red")
    if snap.delayed:
        header.append(f"  {snap.delayed} delayed", style="dim")
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    for column, justify in (
        ("task type", "left"),
        ("running", "right"),
        ("pool", "left"),
        ("reserves in use", "left"),
        ("waiting", "left"),
        ("done", "right"),
        ("tasks/s", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]  # rich wants a Literal; these are its values
    for row in snap.task_types:
        waiting = Text()
        for name, count in _waiting_parts(row):
            if waiting:
                waiting.append("  ")
            waiting.append(f"{name} {count}", style=_band_style(name))
        table.add_row(
            row.tt,
            str(row.running),
            _pool_text(row),
            _reserves_text(row),
            waiting if waiting else Text("-", style="dim"),
            str(row.done) + (f" ({row.failed} failed)" if row.failed else ""),
            f"{row.rate:.1f}",
        )
    parts: list[Any] = [header, table]
    if snap.total is not None:
        bar = Table.grid(padding=(0, 1))
        bar.add_column()
        bar.add_column()
        pct = 100.0 * snap.done / snap.total if snap.total else 100.0
        bar.add_row(
            ProgressBar(total=max(snap.total, 1), completed=min(snap.done, snap.total), width=40),
            Text(f"{snap.done}/{snap.total} {pct:3.0f}%  {_eta_text(snap)}"),
        )
        parts.append(bar)
    return Group(*parts)


def _band_style(name: str) -> str:
    from atasker.core.task import PRIORITY_COLORS, PRIORITY_NAMES

    for band, band_name in PRIORITY_NAMES.items():
        if band_name == name:
            return f"bold {PRIORITY_COLORS[band]}"
    return ""


def live(supervisor: TaskSupervisor | None = None, *, total: int | None = None, **options: Any) -> LiveView:
    """A live terminal view of a supervisor (default: ``atasker.task_supervisor``).

    Use it as a context manager around the work to watch::

        with atasker.live(total=len(urls)):
            wait_completed([fetch(url) for url in urls])

    :param supervisor: the supervisor to watch.
    :param total: tasks expected to finish meanwhile (progress bar and ETA).
    :param options: see :class:`LiveView` (``console``, ``file``, ``plain``,
        ``refresh_per_second``, ``plain_interval``, ``title``).
    """
    if supervisor is None:
        supervisor = default_supervisor()
    return LiveView(supervisor, total=total, **options)


class LiveViews:
    """The supervisor's ``live()`` (extension ``"live"``)."""

    def __init__(self, supervisor: TaskSupervisor) -> None:
        self.supervisor = supervisor

    def view(self, total: int | None = None, **options: Any) -> LiveView:
        """A :class:`LiveView` of the supervisor; see :func:`live`."""
        return LiveView(self.supervisor, total=total, **options)


@hookimpl
def atasker_configure(supervisor: TaskSupervisor) -> None:
    """Add the ``"live"`` extension (``supervisor.live()``)."""
    supervisor.add_extension("live", LiveViews(supervisor))
