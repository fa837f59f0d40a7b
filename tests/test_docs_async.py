"""The examples of ``docs/async.rst`` run, in order, as one script.

They use the global ``task_supervisor`` as users do, so they run in a fresh
interpreter (with ``-W error``): the global stays untouched in this process,
and the script's exit also checks that atasker stops its aloops cleanly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "async.rst"

_RUNNER = """
import sys
for path, lineno, source in BLOCKS:
    # Pad with blank lines so tracebacks point at the line in the .rst file.
    code = compile("\\n" * (lineno - 1) + source, path, "exec")
    exec(code, globals())
print("ALL BLOCKS RAN")
"""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line number, dedented source)`` of each ``.. code:: python`` block."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if re.match(r"\.\. code(-block)?:: python\s*$", lines[i].strip()):
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            start = i
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                i += 1
            blocks.append((start + 1, textwrap.dedent("\n".join(lines[start:i])).rstrip() + "\n"))
        else:
            i += 1
    return blocks


def test_the_page_has_examples():
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 8
    assert all(source.strip() for _, source in blocks)


@pytest.mark.parametrize("uvloop", ["as-installed", "blocked"])
def test_async_docs_examples_run(uvloop):
    blocks = [(str(DOC.relative_to(ROOT)), lineno, source) for lineno, source in python_blocks(DOC.read_text())]
    script = f"BLOCKS = {blocks!r}\n{_RUNNER}"
    if uvloop == "blocked":  # the page must work where uvloop is not installed
        script = "import sys\nsys.modules['uvloop'] = None\n" + script
    env = {**os.environ, "ATASKER_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONPATH": str(ROOT)}
    env.pop("ATASKER_UVLOOP", None)
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ALL BLOCKS RAN" in proc.stdout
    assert "cancelled while running" in proc.stdout
    assert "timed out after 0.05 s" in proc.stdout
    for bad in ("never awaited", "was destroyed but it is pending", "Exception ignored"):
        assert bad not in proc.stderr, proc.stderr
