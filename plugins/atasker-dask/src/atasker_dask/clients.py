"""Opening and closing Dask clients, and the local cluster atasker starts.

Nothing here keeps state: :class:`~atasker_dask.connection.Connection` decides
when to open and close, these functions do it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .config import local_cluster

if TYPE_CHECKING:
    from .config import DaskSettings

__all__ = ["check_saturation", "close_quietly", "new_client", "open_client", "set_submit_interval"]

logger = logging.getLogger("atasker.dask")


def open_client(settings: DaskSettings, cluster: Any = None) -> tuple[Any, Any]:
    """A new client for *settings*, and the local cluster it runs on (``None`` for a remote one).

    *cluster*, a local cluster started for an earlier client, is reused if
    it still runs; a new one is started otherwise.
    """
    from distributed import LocalCluster
    from distributed.core import Status

    kwargs: dict[str, Any] = {"set_as_default": False, "timeout": settings.connect_timeout}
    kwargs.update(settings.client_kwargs)
    if settings.cluster is not None:
        if settings.security is not None:
            kwargs.setdefault("security", settings.security)
        if isinstance(settings.cluster, LocalCluster):
            kwargs.setdefault("direct_to_workers", True)  # same machine, as below
        return new_client(settings.cluster, kwargs), None
    if settings.remote:
        if settings.security is not None:
            kwargs.setdefault("security", settings.security)
        if settings.scheduler_file:
            kwargs["scheduler_file"] = settings.scheduler_file
        return new_client(settings.address, kwargs), None
    started = cluster is None or cluster.status in (Status.closing, Status.closed, Status.failed)
    if started:
        cluster_kwargs = dict(settings.cluster_kwargs)
        if settings.security is not None:
            cluster_kwargs.setdefault("security", settings.security)
        cluster = local_cluster(config=settings.cluster_config, **cluster_kwargs)
    # Same machine: fetch results straight from the workers, not via the scheduler.
    kwargs.setdefault("direct_to_workers", True)
    try:
        return new_client(cluster, kwargs), cluster
    except BaseException:
        if started:
            close_quietly(None, cluster)
        raise


def check_saturation(client: Any, address: str | None) -> None:
    """Warn if the scheduler would not hand out tasks in priority order."""
    try:
        # A lambda: Dask sends it by value, the scheduler need not have atasker-dask.
        saturation = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.WORKER_SATURATION)
    except Exception as exc:  # e.g. the scheduler refuses pickled functions
        logger.debug("atasker-dask: could not read the scheduler's worker-saturation: %s", exc)
        return
    if saturation is not None and saturation != 1.0:
        logger.warning(
            "atasker-dask: the Dask scheduler at %s has distributed.scheduler.worker-saturation = %s; "
            "it hands out large groups of similar tasks in priority order only with 1.0 (start it "
            "with DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=1.0)",
            address or client.scheduler.address,
            saturation,
        )


def new_client(target: Any, kwargs: dict[str, Any]) -> Any:
    """``Client(target, **kwargs)``, without a thread left behind when it fails.

    A synchronous ``Client`` starts its event loop thread before it connects,
    and a constructor that raises leaves no object to close: stop that
    thread here (each failed attempt would leave one more).
    """
    from distributed import Client

    client = Client.__new__(Client)
    try:
        client.__init__(target, **kwargs)  # type: ignore[misc]  # exactly this class: made with __new__ above
    except BaseException:
        runner = getattr(client, "_loop_runner", None)
        if runner is not None:
            try:
                # Closed for Client.__del__, which would otherwise try to close
                # it through the loop stopped here.
                client.status = "closed"
                runner.stop()
            except Exception as exc:
                logger.debug("atasker-dask: stopping a failed client's event loop failed: %s", exc)
        raise
    return client


def set_submit_interval(client: Any, interval: float | None) -> None:
    """Let *client* send its messages to the scheduler every *interval* seconds.

    A Dask client batches what it sends the scheduler over 10 ms (a constant
    in ``distributed``, not a configuration key): right for a script that
    submits a graph at once, but atasker submits a task whenever another one
    finishes, so most submissions would wait for the next batch.
    """
    comm = getattr(client, "scheduler_comm", None)
    if interval is None or comm is None or not isinstance(getattr(comm, "interval", None), (int, float)):
        return  # a distributed that batches differently: leave it as it is
    comm.interval = interval


def close_quietly(client: Any, cluster: Any) -> None:
    """Close a client and a cluster, logging (not raising) what goes wrong."""
    if client is not None and client.status == "running":
        try:
            # Or the scheduler tries to tell this client that it left.
            client.unsubscribe_topic("all")
        except Exception as exc:
            logger.debug("atasker-dask: unsubscribing failed: %s", exc)
    for thing in (client, cluster):
        if thing is None:
            continue
        try:
            thing.close()
        except Exception as exc:
            logger.debug("atasker-dask: closing %r failed: %s", thing, exc)
