"""``background_task`` and ``wait_completed``: the seed's user API.

A decorated function keeps one :class:`~atasker.TaskSpec`, validated when
it is decorated, and hands it to :meth:`TaskSupervisor.submit` on each call.
"""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast, overload

from atasker.builtin.compat import deprecated
from atasker.builtin.coroutine.aloop import TT_COROUTINE
from atasker.builtin.mp.api import TT_MP
from atasker.builtin.thread import TT_THREAD
from atasker.core.supervisor import TaskSupervisor, default_supervisor
from atasker.core.task import TASK_NORMAL, Task, TaskSpec

__all__ = ["TT_COROUTINE", "TT_MP", "TT_THREAD", "background_task", "wait_completed"]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def background_task(
    f: Callable[..., Any],
    *,
    name: str | None = ...,
    priority: int = ...,
    delay: float | None = ...,
    tt: str | None = ...,
    callback: Callable[[Any], Any] | None = ...,
    supervisor: TaskSupervisor | None = ...,
    timeout: float | None = ...,
    loop: Any = ...,
    options: dict[str, Any] | None = ...,
    group: Any = ...,
    daemon: Any = ...,
) -> Callable[..., Task]: ...
@overload
def background_task(
    f: None = None,
    *,
    name: str | None = ...,
    priority: int = ...,
    delay: float | None = ...,
    tt: str | None = ...,
    callback: Callable[[Any], Any] | None = ...,
    supervisor: TaskSupervisor | None = ...,
    timeout: float | None = ...,
    loop: Any = ...,
    options: dict[str, Any] | None = ...,
    group: Any = ...,
    daemon: Any = ...,
) -> Callable[[Callable[..., Any]], Callable[..., Task]]: ...


def background_task(
    f: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    priority: int = TASK_NORMAL,
    delay: float | None = None,
    tt: str | None = None,
    callback: Callable[[Any], Any] | None = None,
    supervisor: TaskSupervisor | None = None,
    timeout: float | None = None,
    loop: Any = None,
    options: dict[str, Any] | None = None,
    group: Any = None,
    daemon: Any = None,
) -> Any:
    """Make *f* a background task: calling it queues a task and returns at once.

    Use it as ``@background_task``, ``@background_task(priority=TASK_HIGH)``
    or ``background_task(f, name=..., priority=...)(*args, **kwargs)``.  The
    call returns a :class:`~atasker.Task` handle -- the seed's task id and a
    :class:`concurrent.futures.Future` in one.

    :param f: the task function (``async def`` functions default to
        ``tt=TT_COROUTINE``).
    :param name: task name for info and logs (default: the function's name).
    :param priority: ``TASK_LOW``, ``TASK_NORMAL`` (default), ``TASK_HIGH``,
        ``TASK_CRITICAL`` or any int >= 0; lower is more urgent.
    :param delay: seconds to wait before the task joins its queue.
    :param tt: task type: ``TT_THREAD`` (default), ``TT_MP``, ``TT_COROUTINE``
        or any plugin's name.
    :param callback: ``callback(result)``, called after the task succeeded.
    :param supervisor: the supervisor to use (default ``task_supervisor``).
    :param timeout: run timeout in seconds, where the task type supports it.
    :param loop: for coroutine tasks: an aloop, its name, or a running
        asyncio loop to run on (``options={"loop": ...}``).
    :param options: task-type specific options, e.g. a plugin's
        (``task.options`` for its executor).
    :param group: the original's (a thread group): deprecated and ignored.
    :param daemon: the original's (a daemon thread): deprecated and ignored
        (tasks run on the pool's threads).
    :raises TypeError: *f* is not callable, or a bad option.
    :raises UnknownTaskTypeError: no plugin provides *tt* (checked here,
        at decoration: this loads the supervisor's plugins).
    :raises InvalidPriorityError: *priority* is invalid.
    :raises ValueError: a bad *delay* or *timeout*.
    """
    if group is not None or daemon is not None:
        deprecated("background_task(group=..., daemon=...)", "nothing: leave them out", stacklevel=3)
    if loop is not None:
        options = {**(options or {}), "loop": loop}
    # Validated now, at decoration, even if the task type is resolved later.
    spec = TaskSpec(
        tt=tt or TT_THREAD,
        priority=priority,
        name=name,
        delay=delay,
        callback=callback,
        timeout=timeout,
        options=options,
    )
    if f is None:
        return functools.partial(_task_starter, spec=spec, tt_given=tt is not None, supervisor=supervisor)
    return _task_starter(f, spec, tt is not None, supervisor)


def _task_starter(
    f: Callable[..., Any], spec: TaskSpec, tt_given: bool, supervisor: TaskSupervisor | None
) -> Callable[..., Task]:
    """The starter ``background_task`` returns: ``f``'s calls, submitted with *spec*."""
    if not callable(f):
        raise TypeError(f"background_task needs a callable, got {type(f).__name__}: {f!r}")
    if getattr(f, "background_task", False):
        f = cast(Any, f).__wrapped__  # re-decorating a task starter: run the function, not a starter
    if not tt_given and inspect.iscoroutinefunction(f):
        spec = spec.replace(tt=TT_COROUTINE)
    if spec.name is None:
        spec = spec.replace(name=getattr(f, "__qualname__", None) or repr(f))
    # The task type is known now, not at the first call.
    (supervisor or default_supervisor()).registry("task type").get(spec.tt)

    @functools.wraps(f)
    def start_task(*args: Any, **kwargs: Any) -> Task:
        return (supervisor or default_supervisor()).submit(f, args, kwargs, spec=spec)

    start_task.background_task = True  # type: ignore[attr-defined]  # marks a starter (see re-decorating above)
    return start_task


def wait_completed(tasks: Task | Iterable[Task], timeout: float | None = None) -> Any:
    """Wait for tasks and return their results.

    As in atasker 0.7; but there a task's ``result`` was an attribute, while
    here the handle is a :class:`concurrent.futures.Future`: ``task.result()``.

    :param tasks: one task handle, or an iterable of them.
    :param timeout: seconds to wait in all; ``None`` waits forever.
    :returns: the result for one task, a list of results for several.
    :raises TimeoutError: not every task completed in time.
    :raises Exception: the first failed task's exception.
    """
    if isinstance(tasks, concurrent.futures.Future):
        return tasks.result(timeout)
    tasks = list(tasks)
    _, not_done = concurrent.futures.wait(tasks, timeout)
    if not_done:
        raise TimeoutError(f"{len(not_done)} of {len(tasks)} task(s) did not complete in {timeout} s")
    return [task.result() for task in tasks]
