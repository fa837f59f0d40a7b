"""``atasker demo``: priorities and reserves at work, in a tiny thread pool.

The pool has 2 slots for everyone, 1 more reserved for NORMAL and above and
1 more for HIGH and above; CRITICAL always starts at once.  Twenty tasks of
mixed priorities arrive together, each doing 0.2 s of "I/O".  The demo prints
every start as it happens (watched through the ``atasker_task_started`` hook,
a plugin like any other) and then the wait per priority.
"""

from __future__ import annotations

import statistics
import threading
import time

from .hookspecs import hookimpl
from .supervisor import TaskSupervisor
from .task import TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL, Task

NAMES = {TASK_CRITICAL: "CRITICAL", TASK_HIGH: "HIGH", TASK_NORMAL: "NORMAL", TASK_LOW: "LOW"}

# Arrival order: a realistic mix, LOW first so it grabs the pool.
ARRIVALS = [TASK_LOW] * 4 + [TASK_NORMAL, TASK_LOW, TASK_HIGH, TASK_NORMAL, TASK_LOW, TASK_CRITICAL]
ARRIVALS += [TASK_LOW, TASK_HIGH, TASK_NORMAL, TASK_LOW, TASK_NORMAL, TASK_HIGH, TASK_LOW]
ARRIVALS += [TASK_CRITICAL, TASK_NORMAL, TASK_HIGH]


class _StartPrinter:
    """A lifecycle-observer plugin: prints each start with the pool's load."""

    def __init__(self, t0: float, out: list[str]) -> None:
        self.t0 = t0
        self.lock = threading.Lock()
        self.out = out

    @hookimpl
    def atasker_task_started(self, task: Task) -> None:
        sup = task.supervisor
        running = sup.get_info()["task_types"]["thread"]["running"]
        with self.lock:
            line = (
                f"  t={task.time_started - self.t0:5.2f}s  start {task.name:<12} "
                f"{NAMES[task.priority]:<8}  waited {task.time_started - task.time_queued:5.2f}s  "
                f"running {running}"
            )
            self.out.append(line)
            print(line, flush=True)


def run_demo(quick: bool = False) -> int:
    """Run the demo; returns a process exit code."""
    work = 0.05 if quick else 0.2
    print("atasker demo: thread pool_size=2, reserve_normal=1, reserve_high=1")
    print("  LOW may use 2 slots, NORMAL 3, HIGH 4, CRITICAL always starts (the pool grows)")
    print(f"  {len(ARRIVALS)} tasks arrive at once, each sleeps {work}s\n")
    t0 = time.time()
    lines: list[str] = []
    sup = TaskSupervisor(pool_size=2, reserve_normal=1, reserve_high=1, plugins=[_StartPrinter(t0, lines)], name="demo")
    sup.start()
    tasks = []
    counters = dict.fromkeys(NAMES, 0)
    for priority in ARRIVALS:
        counters[priority] += 1
        name = f"{NAMES[priority].lower()}-{counters[priority]}"
        tasks.append(sup.submit(time.sleep, (work,), priority=priority, name=name))
    for task in tasks:
        task.result(timeout=60)
    sup.stop()

    print("\nwait for a slot, per priority (seconds):")
    print(f"  {'priority':<9}{'tasks':>6}{'mean':>8}{'max':>8}")
    for priority in (TASK_CRITICAL, TASK_HIGH, TASK_NORMAL, TASK_LOW):
        waits = [t.time_started - t.time_queued for t in tasks if t.priority == priority]
        print(f"  {NAMES[priority]:<9}{len(waits):>6}{statistics.mean(waits):>8.2f}{max(waits):>8.2f}")
    print("\nCRITICAL started at once; HIGH used its reserve and overtook NORMAL,")
    print("NORMAL overtook LOW; LOW ran last although it arrived first.")
    return 0
