"""Packaging metadata (issue #17): this atasker is 1.x, above the original
library's 0.x line on the package index, and every plugin under plugins/
requires it, so that installing a plugin can never pull the original."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

import atasker

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = sorted(ROOT.glob("plugins/*/pyproject.toml"))


def load(path: Path) -> dict:
    with path.open("rb") as f:
        return tomllib.load(f)


def test_version_is_1x_and_agrees_everywhere():
    project = load(ROOT / "pyproject.toml")["project"]
    assert project["version"] == atasker.__version__ == version("atasker")
    assert atasker.__version__.startswith("1.")


@pytest.mark.parametrize("path", [ROOT / "pyproject.toml", *PLUGINS], ids=lambda p: p.parent.name)
def test_spdx_license_and_setuptools_77(path):
    data = load(path)
    # setuptools >= 77 reads an SPDX license string without a deprecation banner.
    assert data["build-system"]["requires"] == ["setuptools>=77"]
    assert data["project"]["license"] == "Apache-2.0"


def test_plugins_require_this_atasker_not_the_original():
    assert len(PLUGINS) >= 3
    for path in PLUGINS:
        project = load(path)["project"]
        atasker_reqs = [r for r in project["dependencies"] if re.match(r"atasker\s*[<>=!~;\[]|atasker$", r)]
        assert atasker_reqs == ["atasker>=1.0,<2"], path
