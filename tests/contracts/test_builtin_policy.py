"""The queue policy contract on the built-in ``"priority"`` policy, strict order included."""

from __future__ import annotations

from atasker.testing import QueuePolicyContract


class TestPriorityPolicy(QueuePolicyContract):
    """The default policy: strict priority, FIFO within a priority."""

    policy_name = "priority"
    strict_priority_order = True
