"""Thread-task throughput with the SQLite status store vs the in-memory store.

Run: ``python bench/bench_store.py [--quick]``.

Same run, interleaved rounds (memory, sqlite, memory, sqlite, ...), a fresh
supervisor and a fresh database file per round; prints the medians and the
ratio sqlite / memory (the target is >= 0.8x).  Two figures per store:

* **tasks/s** -- N trivial tasks, 8 workers, submit all then wait for every
  handle: what the application sees (records may still be in the buffer);
* **tasks/s durable** -- the same clock stopped after ``stop()`` returned,
  i.e. after the store committed every record.

Also checks that the database holds every task.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atasker import TaskSupervisor


def noop() -> None:
    return None


def one_round(n: int, workers: int, store: str) -> tuple[float, float]:
    sup = TaskSupervisor(pool_size=workers, reserve_normal=0, reserve_high=0, autoload=False, status_store=store)
    sup.start()
    sup.submit(noop).result()  # warm the first thread
    t0 = time.perf_counter()
    futures = [sup.submit(noop) for _ in range(n)]
    wait(futures)
    t1 = time.perf_counter()
    sup.stop()
    t2 = time.perf_counter()
    return n / (t1 - t0), n / (t2 - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer tasks and rounds")
    parser.add_argument("--workers", type=int, default=8)
    opts = parser.parse_args()
    rounds = 5 if opts.quick else 9
    n = 5000 if opts.quick else 20000

    print(
        f"thread tasks, status store: sqlite vs memory "
        f"(python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version})"
    )
    results: dict[str, list[tuple[float, float]]] = {"memory": [], "sqlite": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            results["memory"].append(one_round(n, opts.workers, "memory://"))
            db = Path(tmp) / f"round{i}.db"
            results["sqlite"].append(one_round(n, opts.workers, f"sqlite:///{db}"))
            with sqlite3.connect(db) as conn:
                rows = conn.execute("SELECT count(*) FROM tasks WHERE outcome = 'completed'").fetchone()[0]
            conn.close()
            assert rows == n + 1, f"round {i}: {rows} rows in the database, expected {n + 1}"
    for index, label in ((0, "tasks/s"), (1, "tasks/s durable")):
        mem = statistics.median(r[index] for r in results["memory"])
        sql = statistics.median(r[index] for r in results["sqlite"])
        print(
            f"{label:>16} ({n} tasks, {opts.workers} workers, median of {rounds}): "
            f"memory {mem:,.0f}  sqlite {sql:,.0f}  ratio {sql / mem:.2f}x"
        )


if __name__ == "__main__":
    main()
