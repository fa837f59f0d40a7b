"""Pool sizes that follow the cluster's worker threads.

The scheduler's add-worker / remove-worker events (on the client's event
loop) post a refresh to the EventThread, which asks the scheduler for the
thread count; a thread of its own then applies the sizes with
``supervisor.set_pool``.  Sizes the user set are left alone.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atasker import Pool, SupervisorAPI

    from .connection import Connection
    from .events import EventThread

__all__ = ["SIZE_KEYS", "PoolSizer", "auto_sizes", "cluster_threads"]

from .registry import state_of

logger = logging.getLogger("atasker.dask")

#: The pool sizes that follow the cluster.
SIZE_KEYS = ("pool_size", "reserve_normal", "reserve_high")


def auto_sizes(threads: int) -> dict[str, int]:
    """Pool sizes for a cluster of *threads* worker threads.

    * ``pool_size`` = threads (at least 1: ``0`` would mean unlimited): LOW
      tasks never wait on the cluster, so none is ever queued there ahead of
      more urgent work;
    * ``reserve_normal`` = 7 x threads: NORMAL tasks keep up to eight per
      thread handed to Dask, one running and the rest waiting on the
      scheduler in Dask priority order, so that a thread that finishes finds
      its next task there instead of idling for the round trip to atasker
      and back (10-25 ms on a busy machine);
    * ``reserve_high`` = 8 x threads: HIGH tasks up to sixteen per thread,
      ahead of the NORMAL ones on the cluster.

    Measured with 1,000 trivial NORMAL tasks on 2 threads, against direct
    ``client.submit``: one task per thread on the cluster ran at 0.39-0.46x,
    two at 0.49x, four at 0.64-0.71x, eight at 0.90-0.92x, sixteen no faster
    (0.90x); 10 ms tasks at 0.90-0.93x with four or eight.
    """
    return {"pool_size": max(1, threads), "reserve_normal": 7 * threads, "reserve_high": 8 * threads}


def cluster_threads(client: Any) -> int:
    """Worker threads on the cluster (a round trip to the scheduler)."""
    try:
        info = client.scheduler_info(n_workers=-1)  # all workers, not the first few
    except TypeError:  # distributed before n_workers=: it lists them all
        info = client.scheduler_info()
    workers = info.get("workers", {}) if info else {}
    return sum(int(w.get("nthreads", 0) or 0) for w in workers.values())


class PoolSizer:
    """Keeps the sizes of one executor's pool at :func:`auto_sizes` of the cluster's threads.

    Only the sizes in :attr:`following`: those the user did not set (the
    sizes in the supervisor's pool configuration that this plugin did not
    write), less any the user changes later (:meth:`resize`).  Takes the
    connection's lock for its own state, and notifies ``connection.changed``
    once sizes for a thread count are applied.
    """

    def __init__(self, supervisor: SupervisorAPI, pool: Pool, connection: Connection, events: EventThread) -> None:
        self._supervisor = supervisor
        self._tt = pool.tt
        self._connection = connection
        self._events = events
        configured = supervisor.pool_config(pool.tt)
        written = state_of(supervisor).written
        self.following = {k for k in SIZE_KEYS if k not in configured or written.get(k) == configured[k]}
        self._auto = {k: getattr(pool, k) for k in SIZE_KEYS}
        #: Worker threads on the cluster, ``None`` before the first connection.
        self.threads: int | None = None
        self._applied_threads: int | None = None
        self._apply_lock = threading.RLock()
        self._applying = threading.local()
        self._refresh_posted = False

    def resize(self, pool: Pool) -> None:
        """The pool changed: sizes the user set to other values stop following the cluster."""
        if getattr(self._applying, "active", False):
            return  # our own set_pool
        with self._apply_lock:
            for key in list(self.following):
                if getattr(pool, key) != self._auto.get(key):
                    self.following.discard(key)

    def on_cluster_event(self, event: Any) -> None:
        """A scheduler event (on the client's event loop: hand over, never block)."""
        try:
            _, msg = event
        except (TypeError, ValueError):
            return
        if isinstance(msg, dict) and msg.get("action") in ("add-worker", "remove-worker"):
            with self._connection.lock:
                if self._refresh_posted:
                    return
                self._refresh_posted = True
            self._events.post(self._refresh_threads)

    def set_threads(self, threads: int) -> None:
        """The cluster has *threads* worker threads: apply the sizes for them (soon)."""
        with self._connection.lock:
            self.threads = threads
        # Not on this thread: set_pool takes the supervisor's configuration
        # lock, which stop() holds while it waits for this executor's threads.
        threading.Thread(target=self._apply_sizes, name="atasker_dask_resize", daemon=True).start()

    def wait_threads(self, threads: int, timeout: float | None = None) -> bool:
        """Wait until the sizes for *threads* cluster threads are applied; ``False`` on timeout."""
        with self._connection.changed:
            return self._connection.changed.wait_for(lambda: self._applied_threads == threads, timeout)

    def _refresh_threads(self) -> None:
        """Ask the scheduler for the thread count (on the EventThread)."""
        with self._connection.lock:
            self._refresh_posted = False
            client = self._connection.connected_client_locked()
        if client is None:
            return
        try:
            threads = cluster_threads(client)
        except Exception as exc:
            logger.debug("atasker-dask: scheduler_info failed: %s", exc)
            return
        self.set_threads(threads)

    def _apply_sizes(self) -> None:
        with self._apply_lock:
            threads = self.threads
            if threads is None or self._connection.closed:
                return
            sizes = {k: v for k, v in auto_sizes(threads).items() if k in self.following and self._auto.get(k) != v}
            if sizes:
                self._auto.update(sizes)
                state_of(self._supervisor).written.update(sizes)
                self._applying.active = True
                try:
                    self._supervisor.set_pool(self._tt, **sizes)
                except Exception:
                    logger.exception("atasker-dask: could not resize the dask pool to %s", sizes)
                finally:
                    self._applying.active = False
            with self._connection.changed:
                self._applied_threads = threads
                self._connection.changed.notify_all()
