"""Building and resizing a task type's slot: its pool, queue policy and executor.

The supervisor calls these on first use of a task type and from
``set_pool()``; they hold the supervisor's ``_config_lock`` while they
create (never while user code runs), as the lock order in
:mod:`atasker.core.supervisor` says.
"""

from __future__ import annotations

from typing import Any

from atasker.core.dispatch import Slot
from atasker.core.pool import Pool, check_sizes
from atasker.plugin.protocols import EXECUTOR_MEMBERS, QUEUE_POLICY_MEMBERS, missing_members

#: The :class:`~atasker.TaskSupervisor` (importing it, even for types only,
#: would make an import cycle: it imports this module).
TaskSupervisor = Any

__all__ = ["make_slot", "resize_slot"]


def make_slot(sup: TaskSupervisor, tt: str) -> Slot:
    """The slot of task type *tt*, created (pool, policy, executor) if it is new.

    :raises UnknownTaskTypeError: no plugin provides *tt*.
    :raises TypeError: the policy or the executor lacks protocol members.
    """
    with sup._config_lock:
        slot: Slot | None = sup._dispatch.slots.get(tt)
        if slot is not None:
            return slot
        task_type = sup.registry("task type").get(tt)
        config = sup._pool_config.get(tt, {})
        default_size = task_type.pool_size() if callable(task_type.pool_size) else task_type.pool_size
        pool = Pool(
            tt,
            pool_size=config.get("pool_size", default_size),
            reserve_normal=config.get("reserve_normal", task_type.reserve_normal),
            reserve_high=config.get("reserve_high", task_type.reserve_high),
        )
        pm = sup.plugin_manager
        chosen = pm.hook.atasker_select_queue_policy(supervisor=sup, task_type=task_type)
        policy_name = chosen or sup._lifecycle.policy_name
        policy = sup.registry("queue policy").get(policy_name).factory(pool)
        missing = missing_members(policy, QUEUE_POLICY_MEMBERS)
        if missing:
            raise TypeError(f"queue policy {policy_name!r} ({type(policy).__qualname__}) lacks {', '.join(missing)}")
        executor = task_type.executor_factory(sup, pool)
        missing = missing_members(executor, EXECUTOR_MEMBERS)
        if missing:
            executor.shutdown(wait=False) if callable(getattr(executor, "shutdown", None)) else None
            raise TypeError(
                f"the executor of task type {tt!r} ({type(executor).__qualname__}) lacks "
                f"{', '.join(missing)}; see atasker.Executor and atasker.BaseExecutor"
            )
        pool.configure(capacity=executor.capacity())
        new = Slot(pool, policy, executor)
        sup._dispatch.slots[tt] = new
        return new


def resize_slot(
    sup: TaskSupervisor,
    tt: str,
    pool_size: int | None,
    reserve_normal: int | None,
    reserve_high: int | None,
) -> None:
    """What :meth:`TaskSupervisor.set_pool` does (see there)."""
    sizes = check_sizes(pool_size, reserve_normal, reserve_high)
    sup.registry("task type").get(tt)  # an unknown task type is an error, not a silent no-op
    dispatch = sup._dispatch
    with sup._config_lock:
        sup._pool_config.setdefault(tt, {}).update(sizes)
        slot = dispatch.slots.get(tt) if dispatch.active else None
    if slot is None:
        return
    with dispatch.lock:
        slot.pool.configure(**sizes)
        started = dispatch.admit(slot)
    slot.executor.resize(slot.pool)
    with dispatch.lock:
        slot.pool.configure(capacity=slot.executor.capacity())
        started += dispatch.admit(slot)
    if started:
        dispatch.launch(slot, started)
