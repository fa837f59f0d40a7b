"""Options of the process pool (``create_mp_pool``): start method and checks."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping
from typing import Any

from atasker.core.task import validate_seconds

__all__ = ["check_options", "default_start_method"]


def default_start_method() -> str:
    """``ATASKER_MP_START_METHOD``, else ``forkserver`` where available, else ``spawn``.

    Both are safe in a process with threads (the supervisor has some);
    ``fork`` is not, and is used only when asked for.
    """
    env = os.environ.get("ATASKER_MP_START_METHOD", "").strip()
    if env:
        return env
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def start_context(start_method: Any) -> Any:
    if start_method is None:
        start_method = default_start_method()
    if isinstance(start_method, str):
        methods = multiprocessing.get_all_start_methods()
        if start_method not in methods:
            raise ValueError(f"unknown start method {start_method!r}; this platform has {', '.join(methods)}")
        return multiprocessing.get_context(start_method)
    if hasattr(start_method, "Process") and hasattr(start_method, "get_start_method"):
        return start_method
    raise ValueError(f"start_method must be a start method name or a multiprocessing context, got {start_method!r}")


def check_options(options: Mapping[str, Any]) -> None:
    """Validate ``create_mp_pool`` options other than the sizes; raise on bad ones."""
    start_context(options.get("start_method"))
    initializer = options.get("initializer")
    if initializer is not None and not callable(initializer):
        raise TypeError(f"initializer must be callable, got {initializer!r}")
    max_tasks = options.get("max_tasks_per_child")
    if max_tasks is not None and (type(max_tasks) is not int or max_tasks <= 0):
        raise ValueError(f"max_tasks_per_child must be an int > 0 or None, got {max_tasks!r}")
    validate_seconds(options.get("idle_timeout"), "idle_timeout", zero_ok=False)
