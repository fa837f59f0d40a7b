"""Reliability suite: sizes and the figures each run records.

``make test`` runs it at CI sizes; ``make stress`` (``ATASKER_STRESS=1``)
runs the full sizes the docs quote.  Every test records its figures with the
``figures`` fixture; they are printed at the end of the run and written to
``reliability-figures.json`` when ``ATASKER_FIGURES`` names a file.
"""

from __future__ import annotations

import json
import os

import pytest

STRESS = os.environ.get("ATASKER_STRESS", "") not in ("", "0")

_FIGURES: dict[str, dict[str, object]] = {}


def size(ci: int, full: int) -> int:
    """The CI size, or the full size under ``make stress``."""
    return full if STRESS else ci


@pytest.fixture
def figures(request: pytest.FixtureRequest):
    """``figures(name=value, ...)`` records figures for this test."""
    entry = _FIGURES.setdefault(request.node.name, {})

    def record(**values: object) -> None:
        entry.update(values)

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _FIGURES:
        return
    terminalreporter.section("atasker reliability figures" + (" (stress sizes)" if STRESS else " (CI sizes)"))
    for test, values in _FIGURES.items():
        terminalreporter.write_line(f"{test}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    target = os.environ.get("ATASKER_FIGURES")
    if target:
        with open(target, "w") as fh:
            json.dump({"stress": STRESS, "figures": _FIGURES}, fh, indent=2)
