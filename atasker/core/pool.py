"""Pool: the limits and running counts of one task type in one supervisor.

The queue policy decides on it (:meth:`Pool.may_start`); the dispatcher
counts running tasks on it; ``set_pool`` changes its sizes.
"""

from __future__ import annotations

import math
from types import EllipsisType
from typing import Any

from atasker.core.task import BANDS, TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL

__all__ = ["BANDS", "Pool", "check_sizes"]


class Pool:
    """Limits and running counts of one task type in one supervisor.

    ``pool_size`` slots serve every priority; NORMAL may also use
    ``reserve_normal``; HIGH also ``reserve_high``; CRITICAL is limited only
    by ``capacity`` (what the executor can physically run, ``None`` for a
    pool that grows).  ``pool_size == 0`` means unlimited.

    Sizes change through :meth:`configure` (the supervisor's ``set_pool``),
    which recomputes the per-band limits once, so that :meth:`may_start` --
    called for every task -- is a dict lookup and a comparison.
    """

    __slots__ = ("_capacity", "_limits", "_sizes", "_window", "running", "running_by_priority", "tt")

    def __init__(
        self,
        tt: str,
        pool_size: int = 0,
        reserve_normal: int = 0,
        reserve_high: int = 0,
        capacity: int | None = None,
    ) -> None:
        self.tt = tt
        self._sizes = (pool_size, reserve_normal, reserve_high)
        self._capacity = capacity
        self._window = 1
        self._limits: dict[int, float] = {}
        #: Tasks of this type running now, in all and per priority.
        self.running = 0
        self.running_by_priority: dict[int, int] = {}
        self._recompute()

    @property
    def pool_size(self) -> int:
        """Slots for every priority (``0``: unlimited)."""
        return self._sizes[0]

    @property
    def reserve_normal(self) -> int:
        """Extra slots for NORMAL and more urgent tasks."""
        return self._sizes[1]

    @property
    def reserve_high(self) -> int:
        """Extra slots for HIGH and more urgent tasks."""
        return self._sizes[2]

    @property
    def capacity(self) -> int | None:
        """What the executor can run at once (``None``: it grows)."""
        return self._capacity

    def configure(
        self,
        pool_size: int | None = None,
        reserve_normal: int | None = None,
        reserve_high: int | None = None,
        capacity: int | EllipsisType | None = ...,
    ) -> None:
        """Change sizes (``None`` keeps a size; ``capacity=...`` keeps it)."""
        size, normal, high = self._sizes
        self._sizes = (
            size if pool_size is None else pool_size,
            normal if reserve_normal is None else reserve_normal,
            high if reserve_high is None else reserve_high,
        )
        if not isinstance(capacity, EllipsisType):
            self._capacity = capacity
        self._recompute()

    @property
    def window(self) -> int:
        """Tasks admitted per slot (``1`` unless the executor pipelines)."""
        return self._window

    def set_window(self, window: int) -> None:
        """Admit up to *window* tasks per slot: for an executor that sends
        tasks ahead to its workers (a bounded pipeline per worker).

        Every limit, ``capacity`` included, is multiplied by *window*.  Any
        thread may call it; the limits are replaced in one assignment, and
        a larger window takes effect at the next admission.
        """
        if type(window) is not int or window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        self._window = window
        self._recompute()

    def _recompute(self) -> None:
        size, normal, high = self._sizes
        win = self._window
        cap = math.inf if self._capacity is None else self._capacity * win
        unlimited = size == 0
        # One new dict, bound at once: may_start never sees half an update.
        self._limits = {
            TASK_CRITICAL: cap,
            TASK_HIGH: min(cap, math.inf if unlimited else (size + normal + high) * win),
            TASK_NORMAL: min(cap, math.inf if unlimited else (size + normal) * win),
            TASK_LOW: min(cap, math.inf if unlimited else size * win),
        }

    def limit(self, band: int) -> float:
        """How many tasks may run in total when a task of *band* starts."""
        return self._limits[band]

    def may_start(self, band: int) -> bool:
        """Whether a task of priority band *band* may start now."""
        return self.running < self._limits[band]

    def info(self) -> dict[str, Any]:
        """Sizes and running counts, for :meth:`TaskSupervisor.get_info`."""
        return {
            "pool_size": self.pool_size,
            "reserve_normal": self.reserve_normal,
            "reserve_high": self.reserve_high,
            "capacity": self.capacity,
            "running": self.running,
            "running_by_priority": {p: n for p, n in self.running_by_priority.items() if n},
        }

    def __repr__(self) -> str:
        size, normal, high = self._sizes
        return f"<Pool {self.tt} size={size}+{normal}+{high} capacity={self._capacity} running={self.running}>"


def check_sizes(pool_size: int | None, reserve_normal: int | None, reserve_high: int | None) -> dict[str, int]:
    """The sizes that are set, validated: each an ``int >= 0`` (not ``bool``).

    :raises ValueError: naming the size and the value.
    """
    sizes = {}
    for key, value in (
        ("pool_size", pool_size),
        ("reserve_normal", reserve_normal),
        ("reserve_high", reserve_high),
    ):
        if value is None:
            continue
        if type(value) is not int or value < 0:
            raise ValueError(f"{key} must be an int >= 0, got {value!r}")
        sizes[key] = value
    return sizes
