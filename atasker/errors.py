"""Exceptions raised by atasker.  All derive from :class:`AtaskerError`."""

from __future__ import annotations

__all__ = [
    "AtaskerError",
    "InvalidPriorityError",
    "MissingExtensionError",
    "PluginConflictError",
    "PluginLoadError",
    "SupervisorStoppedError",
    "UnknownQueuePolicyError",
    "UnknownStatusStoreError",
    "UnknownTaskTypeError",
    "WorkerDiedError",
]


class AtaskerError(Exception):
    """Base class of every exception atasker raises itself."""


class InvalidPriorityError(AtaskerError, ValueError):
    """A priority that is not an ``int`` >= 0."""


class UnknownTaskTypeError(AtaskerError, LookupError):
    """No plugin provides the task type asked for.

    The message lists the known task types, and any plugin that failed to
    load (it may be the one that would have provided it).
    """


class UnknownQueuePolicyError(AtaskerError, LookupError):
    """No plugin provides the queue policy asked for (the message lists the known ones)."""


class UnknownStatusStoreError(AtaskerError, LookupError):
    """No plugin provides the status store URL scheme asked for (the message lists the known ones)."""


class MissingExtensionError(AtaskerError, LookupError):
    """A supervisor method needs a plugin that is blocked or not registered.

    ``create_aloop()`` needs ``atasker.builtin.coroutine``, ``create_mp_pool()``
    ``atasker.builtin.mp``, ...: the message names the method, the plugin and
    whether it is blocked.
    """


class PluginLoadError(AtaskerError, ImportError):
    """A plugin could not be imported or registered.

    The message names the entry point, its distribution and version; the
    original exception is chained as ``__cause__``.
    """


class PluginConflictError(AtaskerError):
    """Two plugins provide the same name (task type, queue policy, store).

    The message names both plugins and says how to pick one.
    """


class SupervisorStoppedError(AtaskerError, RuntimeError):
    """A task was submitted to a supervisor that is stopping or stopped."""


class WorkerDiedError(AtaskerError):
    """The worker (process, remote worker) running a task died under it."""
