"""The plugin's state in one supervisor: the extension ``"dask"``.

Added by ``atasker_configure``, so it lives and dies with its supervisor:
the settings :func:`atasker_dask.configure` gave, the live executor, and the
pool sizes atasker-dask wrote itself (so that, after ``stop()`` and
``start()``, they are not mistaken for sizes the user set).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from atasker import MissingExtensionError, hookimpl

if TYPE_CHECKING:
    from atasker import SupervisorAPI

    from .config import DaskSettings
    from .executor import DaskExecutor

__all__ = ["DaskState", "atasker_configure", "executor_of", "state_of"]

EXTENSION = "dask"


class DaskState:
    """What atasker-dask keeps per supervisor."""

    def __init__(self) -> None:
        #: :func:`atasker_dask.configure`'s settings (``None``: the environment's).
        self.settings: DaskSettings | None = None
        #: Pool sizes atasker-dask set to follow the cluster.
        self.written: dict[str, int] = {}
        self._executor: weakref.ref[DaskExecutor] | None = None

    @property
    def executor(self) -> DaskExecutor | None:
        """The live dask executor, if one was created and not shut down."""
        return self._executor() if self._executor is not None else None

    def attach(self, executor: DaskExecutor) -> None:
        """Make *executor* the live one (weakly: the supervisor holds it)."""
        self._executor = weakref.ref(executor)

    def detach(self, executor: DaskExecutor) -> None:
        """Forget *executor* if it still is the live one (a newer one stays)."""
        if self.executor is executor:
            self._executor = None


def state_of(supervisor: SupervisorAPI, needed_by: str = "atasker_dask") -> DaskState:
    """The plugin's state in *supervisor*.

    :raises MissingExtensionError: the plugin is not registered on it
        (install it, or ``TaskSupervisor(plugins=[atasker_dask])``).
    """
    try:
        state: DaskState = supervisor.extension(EXTENSION, needed_by)
    except MissingExtensionError as exc:
        raise MissingExtensionError(
            f"{needed_by}: plugin atasker_dask is not registered on supervisor {supervisor.name!r}; "
            "install atasker-dask (entry point) or pass TaskSupervisor(plugins=[atasker_dask])"
        ) from exc
    return state


def executor_of(supervisor: SupervisorAPI) -> DaskExecutor | None:
    """The live dask executor of *supervisor*, if it has created one."""
    return state_of(supervisor).executor


@hookimpl
def atasker_configure(supervisor: SupervisorAPI) -> None:
    """Add the ``"dask"`` extension (settings, executor, written sizes)."""
    supervisor.add_extension(EXTENSION, DaskState())
