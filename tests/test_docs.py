"""The docs are tested: examples run, every hook is documented and tested."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import atasker
from atasker import Task
from atasker.plugin import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SEED = ROOT.parent / "shared" / "seed" / "tasks.rst"

from tests.conftest import WAIT  # noqa: E402


def code_blocks(path: Path) -> list[str]:
    """The ``.. code:: python`` blocks of a page (they run as tests).

    ``.. code-block:: python`` marks an illustrative fragment that is not run.
    """
    blocks = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if re.match(r"\s*\.\. code:: python\s*$", lines[i]):
            i += 1
            body = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                body.append(lines[i])
                i += 1
            blocks.append(textwrap.dedent("\n".join(body)).strip("\n"))
        else:
            i += 1
    return blocks


def tmp_page(text: str) -> Path:
    """*text* as a page file of its own (for all_code)."""
    import tempfile

    page = Path(tempfile.mkdtemp()) / "page.rst"
    page.write_text(text)
    return page


def all_code(path: Path) -> list[str]:
    """Every code block of a page, run or not: reST ``code``/``code-block``
    directives (any language) and Markdown fences."""
    text = path.read_text()
    if path.suffix == ".md":
        return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if re.match(r"\s*\.\. (code|code-block|sourcecode)::", lines[i]):
            i += 1
            body = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                body.append(lines[i])
                i += 1
            blocks.append(textwrap.dedent("\n".join(body)))
        else:
            i += 1
    return blocks


def run_page(path: Path) -> dict:
    """Run a page's examples in one namespace, as a reader would, in order.

    The namespace is a ``__main__`` script's, so code under the
    ``if __name__ == "__main__":`` guard runs, as it does for the reader.
    Only the original atasker's page (``tasks.rst``, kept verbatim) gets the
    module ``tests.mp`` its examples name.
    """
    # A page that stops the global supervisor must not break the next page.
    atasker.task_supervisor.start()
    namespace: dict = {"__name__": "__main__"}
    if path.name == "tasks.rst":
        import tests.mp  # noqa: F401

        namespace["tests"] = sys.modules["tests"]
    for block in code_blocks(path):
        exec(compile(block, f"{path.name}", "exec"), namespace)
        for _name, value in list(namespace.items()):
            # An example that defines a coroutine function shows how to call
            # it from async code: run it, as its reader would.
            if inspect.iscoroutinefunction(value) and not inspect.signature(value).parameters:
                if not getattr(value, "_docs_ran", False):
                    asyncio.run(value())
                    value._docs_ran = True
    for value in namespace.values():
        if isinstance(value, Task):
            value.result(WAIT)
    # Stop the global supervisor (its process workers, aloops) so that later
    # tests see no leftover children; the next page starts it again.
    assert atasker.task_supervisor.stop(wait=WAIT)
    return namespace


# A module of this repository's test suite: a reader outside the repository
# cannot import it.
TESTS_MODULE = re.compile(r"\btests\.\w|\b(?:from|import)\s+tests\b")

DOC_PAGES = sorted([*DOCS.glob("*.rst"), *DOCS.glob("*.md"), ROOT / "README.md"])


@pytest.mark.parametrize("page", [p.relative_to(ROOT).as_posix() for p in DOC_PAGES])
def test_docs_code_names_no_test_suite_module(page):
    path = ROOT / page
    blocks = all_code(path)
    if path.name == "tasks.rst":
        # The original atasker's page names ``tests.mp.test`` and stays
        # verbatim; what follows it (from "Task handles" on, the first
        # section this project added) must not.
        if SEED.exists():
            blocks = blocks[len(all_code(SEED)) :]
        else:
            original = tmp_page(path.read_text().split("\nTask handles\n")[0])
            blocks = blocks[len(all_code(original)) :]
    offending = [b for b in blocks if TESTS_MODULE.search(b)]
    assert not offending, f"{page}: a code block uses this repository's tests package:\n" + "\n---\n".join(offending)


def test_the_tests_module_check_catches_an_import(tmp_path):
    page = tmp_path / "page.rst"
    page.write_text("Page\n****\n\n.. code:: python\n\n    import tests.mp\n    tests.mp.test()\n")
    assert [b for b in all_code(page) if TESTS_MODULE.search(b)]
    page.write_text("Page\n****\n\n.. code:: python\n\n    latests = 1\n    tests = [1]\n")
    assert not [b for b in all_code(page) if TESTS_MODULE.search(b)]


RUN_PAGES = sorted(p.name for p in DOCS.glob("*.rst") if p.name != "tasks.rst" and code_blocks(p))

#: Optional packages a page's examples need (an extra or a plugin package).
PAGE_NEEDS = {"cluster.rst": ("atasker_dask",), "observe.rst": ("matplotlib",)}


def skip_unless_installed(page: str) -> None:
    """Skip a page whose examples need a package that is not installed."""
    missing = [m for m in PAGE_NEEDS.get(page, ()) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the examples of {page} need {', '.join(missing)}, which is not installed")


@pytest.mark.parametrize("page", RUN_PAGES)
def test_docs_page_runs_as_a_script_outside_the_repository(page, tmp_path):
    """A page's examples, pasted in order into a script and run from a
    directory outside the repository: no ``tests`` package to import, and
    process workers import the script as ``__mp_main__``."""
    skip_unless_installed(page)
    script = tmp_path / f"{Path(page).stem}_example.py"
    script.write_text("\n\n".join(code_blocks(DOCS / page)) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_docs_tasks_page_is_the_seed_verbatim():
    page = (DOCS / "tasks.rst").read_text()
    if SEED.exists():
        assert page.startswith(SEED.read_text().rstrip("\n")), "docs/tasks.rst must keep the seed page verbatim"


def test_seed_examples_run_verbatim():
    namespace = run_page(DOCS / "tasks.rst")
    assert isinstance(namespace["task_id"], Task)
    info = namespace["task_info"]
    assert info is None or info.id == namespace["task_id"].id


@pytest.mark.parametrize("page", RUN_PAGES)
def test_docs_examples_run(page):
    skip_unless_installed(page)
    run_page(DOCS / page)


HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("atasker_"))


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    func = getattr(hookspecs, hook)
    doc = inspect.getdoc(func)
    assert doc and len(doc.splitlines()) >= 3, f"{hook} needs a docstring"
    for param in inspect.signature(func).parameters:
        assert f":param {param}:" in doc, f"{hook}: document :param {param}:"
    assert "thread" in doc, f"{hook}: say which thread calls it"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_tested(hook):
    sources = [p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != "test_docs.py"]
    assert any(hook in text for text in sources), f"no test implements or calls {hook}"


def test_public_api_is_documented():
    for name in atasker.__all__:
        obj = getattr(atasker, name)
        if callable(obj) and not isinstance(obj, type(atasker)) and name != "hookimpl" and name != "hookspec":
            assert inspect.getdoc(obj), f"atasker.{name} needs a docstring"


@pytest.mark.slow
def test_sphinx_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    # The reference pages document the plugin packages' modules too.
    pytest.importorskip("atasker_dask", reason="the docs document atasker_dask: pip install -e plugins/atasker-dask")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "atasker_register_task_types" in (tmp_path / "html" / "hooks.html").read_text()
