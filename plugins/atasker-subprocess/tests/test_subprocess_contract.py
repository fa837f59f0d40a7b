"""The executor contract on task type ``"subprocess"``: functions return command lines."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

pytest.importorskip(
    "atasker_subprocess", reason="needs the atasker-subprocess plugin: pip install -e plugins/atasker-subprocess"
)

import atasker_subprocess

from atasker.testing import ExecutorContract, Gate


def echo(value: str) -> list[str]:
    """A command that prints *value*."""
    return ["echo", value]


def refuse(message: str) -> list[str]:
    """The task function itself fails: no command is run."""
    raise ValueError(message)


def wait_on(gate: Gate) -> list[str]:
    """A child process that waits on *gate*."""
    return gate.command()


class TestSubprocessExecutor(ExecutorContract):
    """Results are ``CompletedProcess``es whose stdout is the echoed value."""

    tt = atasker_subprocess.TT_SUBPROCESS
    can_cancel_running = True
    supports_timeout = True
    many = 100

    def supervisor_options(self) -> dict[str, Any]:
        return {"autoload": False, "plugins": [atasker_subprocess]}

    def returning(self, value: Any) -> tuple[Any, tuple[Any, ...]]:
        return echo, (repr(value),)

    def raising(self, message: str) -> tuple[Any, tuple[Any, ...]]:
        return refuse, (message,)

    def blocking(self, gate: Gate) -> tuple[Any, tuple[Any, ...]]:
        return wait_on, (gate,)

    def check_result(self, result: Any, expected: Any) -> None:
        assert isinstance(result, subprocess.CompletedProcess)
        assert result.returncode == 0
        assert result.stdout == f"{expected!r}\n"
