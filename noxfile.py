"""The test suite on every supported Python: ``make test-all`` runs ``nox``.

Sessions (``nox -l`` lists them):

* ``tests-3.10`` ... ``tests-3.13`` -- one venv per Python under ``.nox/``
  with what ``make venv`` installs (atasker with its test and demo extras,
  every package under ``plugins/`` and the test plugin, all editable), then
  ``pytest -q``.  Arguments after ``--`` go to pytest.
* ``minimal`` -- the newest Python with atasker, its test extra and the test
  plugin only: no rich, matplotlib, uvloop or plugin package, so every test
  that needs one of those must skip with a reason (the summary lists them).

Interpreters: pyenv's (``$PYENV_ROOT/versions/3.X.*``, newest patch first)
are put in front of ``PATH`` because pyenv's shims answer only for the
selected version; without pyenv, ``python3.X`` on ``PATH``.  nox never
downloads one.  A missing interpreter fails the run when ``CI`` is set and
is skipped otherwise.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nox

nox.needs_version = ">=2025.10.14"
nox.options.default_venv_backend = "venv"
nox.options.download_python = "never"
nox.options.reuse_venv = "yes"  # a second make test-all creates no venv and downloads nothing
nox.options.error_on_missing_interpreters = bool(os.environ.get("CI"))
nox.options.sessions = ["tests", "minimal"]

ROOT = Path(__file__).resolve().parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
PLUGINS = sorted(
    p.parent for p in [*ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("tests/plugins/*/pyproject.toml")]
)
TEST_PLUGIN = ROOT / "tests" / "plugins" / "atasker-testplugin"


def _pyenv_bins() -> list[str]:
    """The bin directory of pyenv's newest installed patch of each of PYTHONS."""
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    bins = []
    for python in PYTHONS:
        found = [p for p in versions.glob(f"{python}.*") if re.fullmatch(rf"{re.escape(python)}\.\d+", p.name)]
        if found:
            newest = max(found, key=lambda p: int(p.name.rsplit(".", 1)[1]))
            bins.append(str(newest / "bin"))
    return bins


os.environ["PATH"] = os.pathsep.join([*_pyenv_bins(), os.environ.get("PATH", "")])


def _pytest(session: nox.Session) -> None:
    # The pip in each venv is the one its Python bundles; -q keeps the log short.
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite, with every extra and plugin package installed."""
    session.install("-q", "-e", f"{ROOT}[test,demo]", *[f"-e{p}" for p in PLUGINS])
    _pytest(session)


@nox.session(python=PYTHONS[-1])
def minimal(session: nox.Session) -> None:
    """The suite without the optional packages: what needs them skips."""
    session.install("-q", "-e", f"{ROOT}[test]", "-e", str(TEST_PLUGIN))
    session.run("python", "-m", "pip", "uninstall", "-q", "-y", "uvloop", silent=True)
    _pytest(session)
