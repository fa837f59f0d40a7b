"""Where a supervisor's dask tasks run: :func:`configure` and :func:`local_cluster`.

Settings are per supervisor and read when the dask executor connects (on
the first dask task, and again after a lost connection).  Without
:func:`configure`, ``ATASKER_DASK_ADDRESS`` names the scheduler; without
either, atasker starts a :func:`local_cluster` and closes it on ``stop()``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from atasker import default_supervisor
from atasker.core.task import validate_seconds

if TYPE_CHECKING:
    from distributed import LocalCluster

    from atasker import SupervisorAPI, TaskSupervisor

__all__ = [
    "DEFAULT_CLUSTER_CONFIG",
    "ENV_ADDRESS",
    "DaskSettings",
    "configure",
    "local_cluster",
    "settings_for",
    "wait_seconds",
]

#: Environment variable naming the scheduler when :func:`configure` did not.
ENV_ADDRESS = "ATASKER_DASK_ADDRESS"

#: Dask configuration applied while atasker starts a local cluster.  With the
#: default worker saturation (1.1) a scheduler sends a worker more tasks than
#: it has threads, and those no longer wait in priority order: five LOW then
#: five HIGH tasks ran as ``LLHHHHHLLL``; with 1.0 as ``HHHHHLLLLL``.
DEFAULT_CLUSTER_CONFIG: Mapping[str, Any] = {"distributed.scheduler.worker-saturation": 1.0}


def wait_seconds(value: object, what: str) -> float | None:
    """*value* checked as a duration and made safe to wait for: the one place the plugin does so.

    The core's rule (:func:`atasker.core.task.validate_seconds`): ``None``
    (no bound) or a finite number of seconds ``>= 0``; ``inf``, ``nan``,
    strings and ``bool`` are refused.  A huge value is clamped to
    ``threading.TIMEOUT_MAX``: ``Condition.wait(1e10)`` raises
    ``OverflowError``.  Call it before anything changes.

    :raises ValueError: naming *what* and the value.
    """
    seconds = validate_seconds(value, what, zero_ok=True)
    return None if seconds is None else min(float(seconds), threading.TIMEOUT_MAX)


@dataclass(frozen=True)
class DaskSettings:
    """How one supervisor reaches its Dask cluster (see :func:`configure`)."""

    address: str | None = None
    scheduler_file: str | None = None
    #: A cluster object the application started (and closes).
    cluster: Any = None
    security: Any = None
    client_kwargs: Mapping[str, Any] = field(default_factory=dict)
    cluster_kwargs: Mapping[str, Any] = field(default_factory=dict)
    cluster_config: Mapping[str, Any] = field(default_factory=dict)
    connect_timeout: float = 10.0
    retry_interval: float = 2.0
    #: Seconds between the client's batches of messages to the scheduler
    #: (Dask's own is 10 ms); ``None`` keeps Dask's.
    submit_interval: float | None = 0.002

    @property
    def remote(self) -> bool:
        """Whether tasks go to an existing scheduler (not a local cluster atasker starts)."""
        return bool(self.address or self.scheduler_file or self.cluster is not None)

    def describe(self) -> str:
        """Where tasks go, for messages."""
        if self.address:
            return f"the Dask scheduler at {self.address}"
        if self.scheduler_file:
            return f"the Dask scheduler of scheduler file {self.scheduler_file}"
        if self.cluster is not None:
            address = getattr(self.cluster, "scheduler_address", None)
            return f"the Dask scheduler of {type(self.cluster).__name__} {address or self.cluster!r}"
        return "a local Dask cluster"


def configure(
    supervisor: TaskSupervisor | None = None,
    *,
    address: str | None = None,
    scheduler_file: str | None = None,
    cluster: Any = None,
    security: Any = None,
    client_kwargs: Mapping[str, Any] | None = None,
    cluster_kwargs: Mapping[str, Any] | None = None,
    cluster_config: Mapping[str, Any] | None = None,
    connect_timeout: float = 10.0,
    retry_interval: float = 2.0,
    submit_interval: float | None = 0.002,
) -> DaskSettings:
    """Say where *supervisor* runs its dask tasks.

    Call it before the supervisor's first dask task (or after ``stop()``);
    with none of *address*, *scheduler_file* and *cluster*, and no
    ``ATASKER_DASK_ADDRESS``, a :func:`local_cluster` is started on first use
    and closed on ``stop()``.

    :param supervisor: default ``atasker.task_supervisor``.
    :param address: a scheduler address, ``tcp://host:8786`` or
        ``tls://host:8786``.
    :param scheduler_file: a scheduler file written by
        ``dask scheduler --scheduler-file``, instead of *address*.
    :param cluster: a cluster object the application started, instead of
        *address*: a :class:`distributed.LocalCluster` (atasker's client then
        shares its event loop thread, as ``Client(cluster)`` does), or any
        ``distributed`` cluster manager (``SSHCluster``, dask-jobqueue's, ...).
        atasker does not close it; the application does, after ``stop()``.
    :param security: a :class:`distributed.security.Security` with the TLS
        credentials for a ``tls://`` scheduler, passed to
        :class:`distributed.Client` (and to the local cluster, if atasker
        starts one).  ``None`` reads them from Dask's configuration
        (``distributed.comm.tls.*``, e.g. ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``).
    :param client_kwargs: more :class:`distributed.Client` arguments (``name``,
        ``direct_to_workers``, ``heartbeat_interval``, ...).
    :param cluster_kwargs: more :func:`local_cluster` arguments for the
        cluster atasker starts (``n_workers``, ``threads_per_worker``,
        ``memory_limit``, ``dashboard_address``, ...).
    :param cluster_config: Dask configuration applied while that cluster
        starts, over :data:`DEFAULT_CLUSTER_CONFIG` (e.g.
        ``{"distributed.scheduler.allowed-failures": 1}``).
    :param connect_timeout: seconds to wait for a remote scheduler.
    :param retry_interval: after a connection attempt failed, dask tasks fail
        at once for this many seconds before the next task tries again.
    :param submit_interval: seconds between the client's batches of messages
        to the scheduler.  Dask batches over 10 ms; atasker submits a task
        each time one finishes, and a shorter interval lets that task reach a
        worker sooner.  ``None`` keeps Dask's.
    :returns: the settings now in force.
    :raises ValueError: more than one of *address*, *scheduler_file* and
        *cluster*, or bad timeouts.
    :raises TypeError: *address* is not a string, or *cluster* not a cluster
        object.
    :raises RuntimeError: the supervisor's dask executor is connected or
        connecting; stop the supervisor first.
    """
    given = [
        name
        for name, value in (("address", address), ("scheduler_file", scheduler_file), ("cluster", cluster))
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"pass one of address, scheduler_file and cluster, not {' and '.join(given)}")
    if address is not None and not isinstance(address, str):
        raise TypeError(
            f"address must be a scheduler address string, got {type(address).__name__}; "
            "pass a cluster object as cluster="
        )
    if cluster is not None and not hasattr(cluster, "scheduler_address"):
        raise TypeError(f"cluster must be a distributed cluster object (with a scheduler_address), got {cluster!r}")
    for name, value in (
        ("connect_timeout", connect_timeout),
        ("retry_interval", retry_interval),
        ("submit_interval", 0 if submit_interval is None else submit_interval),
    ):
        if value is None:  # a bound is required here
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got None")
        wait_seconds(value, name)
    if supervisor is None:
        supervisor = default_supervisor()
    settings = DaskSettings(
        address=address,
        scheduler_file=scheduler_file,
        cluster=cluster,
        security=security,
        client_kwargs=dict(client_kwargs or {}),
        cluster_kwargs=dict(cluster_kwargs or {}),
        cluster_config=dict(cluster_config or {}),
        connect_timeout=float(connect_timeout),
        retry_interval=float(retry_interval),
        submit_interval=None if submit_interval is None else float(submit_interval),
    )
    from .registry import state_of

    state = state_of(supervisor, "atasker_dask.configure()")
    executor = state.executor
    if executor is not None and executor.in_use():
        raise RuntimeError(
            f"the dask executor of supervisor {supervisor.name!r} is already connected to "
            f"{executor.settings.describe()}; call atasker_dask.configure() before its first dask task, "
            "or stop the supervisor first"
        )
    state.settings = settings
    return settings


def settings_for(supervisor: SupervisorAPI) -> DaskSettings:
    """The settings of *supervisor*: :func:`configure`'s, else from the environment."""
    from .registry import state_of

    settings = state_of(supervisor).settings
    if settings is not None:
        return settings
    address = os.environ.get(ENV_ADDRESS, "").strip()
    return DaskSettings(address=address or None)


def available_cpus() -> int:
    """CPUs this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_cluster(
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    config: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> LocalCluster:
    """Start a :class:`distributed.LocalCluster` the way atasker starts one.

    Worker processes (``processes=True``), one thread each, one worker per
    available CPU, the scheduler's HTTP server (and dashboard, if bokeh is
    installed) on a free port of 127.0.0.1, and
    :data:`DEFAULT_CLUSTER_CONFIG` so that Dask honours task priorities.
    Blocks until the workers are up (about half a second for two).

    Like any code that starts processes, a script that calls it (or submits
    the first dask task, which calls it) must do so under
    ``if __name__ == "__main__":``.

    :param n_workers: worker processes (default: available CPUs).
    :param threads_per_worker: threads per worker (default 1).
    :param config: Dask configuration applied while the scheduler starts,
        over :data:`DEFAULT_CLUSTER_CONFIG`.
    :param kwargs: more :class:`distributed.LocalCluster` arguments.
    """
    import dask
    from distributed import LocalCluster

    kwargs.setdefault("processes", True)
    # The scheduler serves HTTP (health, metrics, the dashboard if bokeh is
    # installed) even with no dashboard: a free port, not 8787, so that two
    # clusters on one machine do not clash.
    kwargs.setdefault("dashboard_address", "127.0.0.1:0")
    with dask.config.set({**DEFAULT_CLUSTER_CONFIG, **(config or {})}):
        return LocalCluster(  # type: ignore[no-untyped-call]  # distributed has no annotations here
            n_workers=available_cpus() if n_workers is None else n_workers,
            threads_per_worker=threads_per_worker,
            **kwargs,
        )
