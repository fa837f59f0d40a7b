"""Runs ``original_style.py`` as a program, as its users ran theirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_unittest_module_written_for_the_original_passes_unchanged():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ATASKER_DISABLE_PLUGIN_AUTOLOAD", None)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("original_style.py"))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Ran 11 tests" in proc.stderr and "\nOK" in proc.stderr
    # Names kept only for compatibility say what replaces them, once per call site.
    assert proc.stderr.count("DeprecationWarning: put_task() is kept") == 1
    assert "use supervisor.submit(" in proc.stderr
