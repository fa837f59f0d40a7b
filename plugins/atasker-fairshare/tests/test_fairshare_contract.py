"""The queue policy contract on ``"fairshare"``: round-robin by name, so no strict FIFO."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip(
    "atasker_fairshare", reason="needs the atasker-fairshare plugin: pip install -e plugins/atasker-fairshare"
)

import atasker_fairshare

from atasker.testing import QueuePolicyContract


class TestFairSharePolicy(QueuePolicyContract):
    """Strict priority between priorities, but names take turns within one."""

    policy_name = "fairshare"
    strict_priority_order = False

    def supervisor_options(self) -> dict[str, Any]:
        return {"autoload": False, "plugins": [atasker_fairshare]}
