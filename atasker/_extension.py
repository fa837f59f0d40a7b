"""Base of the supervisor's API mixins (aloops, process pool)."""

from __future__ import annotations


class SupervisorExtension:
    """Mixins of :class:`TaskSupervisor` override :meth:`_before_stop` /
    :meth:`_on_stop` and call super."""

    def _before_stop(self, wait: bool | float, cancel_tasks: bool) -> None:
        """Called first thing by ``stop()``, before tasks are drained."""

    def _on_stop(self, wait: bool | float, cancel_tasks: bool, all_done: bool) -> None:
        """Called by ``stop()`` after tasks ended and executors shut down."""
