"""Contract test suites for atasker plugin authors (pytest base classes).

Subclass one in a test module of your plugin, set a few class attributes,
and pytest collects a full behavioural suite::

    from atasker.testing import ExecutorContract

    class TestMyTaskType(ExecutorContract):
        tt = "mine"

* :class:`ExecutorContract` -- task types (executors),
* :class:`QueuePolicyContract` -- queue policies,
* :class:`StatusStoreContract` -- status stores,
* :mod:`atasker.testing.fixtures` -- the pytest plugin (supervisor fixtures
  with leak checks), loaded by the ``pytest11`` entry point;
* :class:`Gate` -- what blocking tasks wait on, across threads, processes
  and event loops (:mod:`atasker.testing.tasks` has the task functions).

The contract classes need pytest (and hypothesis for the policy contract)
and are imported on first use; :mod:`atasker.testing.tasks` needs neither,
so that worker processes can import the task functions cheaply.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from .tasks import Gate

if TYPE_CHECKING:
    from .executor_contract import ExecutorContract
    from .policy_contract import QueuePolicyContract
    from .store_contract import StatusStoreContract

__all__ = ["ExecutorContract", "Gate", "QueuePolicyContract", "StatusStoreContract"]

_CONTRACTS = {
    "ExecutorContract": "executor_contract",
    "QueuePolicyContract": "policy_contract",
    "StatusStoreContract": "store_contract",
}

if "pytest" in sys.modules:  # under pytest: plain asserts in the contracts report their values
    import pytest

    pytest.register_assert_rewrite(*(f"{__name__}.{module}" for module in _CONTRACTS.values()))


def __getattr__(name: str) -> Any:
    module = _CONTRACTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
