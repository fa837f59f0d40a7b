"""The errors of coroutine tasks and aloops."""

from __future__ import annotations

from atasker.errors import AtaskerError

__all__ = ["AloopStoppedError", "UnknownAloopError"]


class UnknownAloopError(AtaskerError, LookupError):
    """No aloop has the name asked for; the message lists the known ones."""


class AloopStoppedError(AtaskerError, RuntimeError):
    """The aloop (or event loop) a coroutine task targets is not running."""
