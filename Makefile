# Every target bootstraps its venv itself: a fresh clone needs only python3 and make.
#   .venv       the dev venv (make venv/test/lint/bench/docs): atasker, every plugin
#               and the test plugin, all editable, plus the test, lint, demo and bench extras
#   .venv-demo  the demo's own small venv (make demo/demo-dask): atasker[demo] only;
#               make demo-dask adds plugins/atasker-dask; never the test plugin
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PLUGIN_DIRS := $(wildcard plugins/*/pyproject.toml) $(wildcard tests/plugins/*/pyproject.toml)
DEMO_VENV := .venv-demo
DEMO_PY := $(DEMO_VENV)/bin/python
DEMO_STAMP := $(DEMO_VENV)/.installed
DEMO_DASK_STAMP := $(DEMO_VENV)/.installed-dask
# The demo venv is installed once and used as is: no byte compilation at
# install (Python compiles what the demo imports on first use), and pip is
# upgraded only when it is older than 21.3 (no editable installs of
# pyproject-only projects; Python 3.10.0-3.10.2 bundle 21.2).
DEMO_PIP := $(DEMO_PY) -m pip install --quiet --no-compile
DEMO_PIP_OK := $(DEMO_PY) -c 'import sys, pip; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (21, 3))'

NOX_STAMP := $(VENV)/.installed-nox

.PHONY: venv demo-venv test demo demo-dask timeline bench bench-quick lint docs stress wheel-smoke clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(PLUGIN_DIRS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,lint,demo,bench]' $(foreach p,$(PLUGIN_DIRS),-e $(dir $(p)))
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q

# The suite on Python 3.10-3.13 (noxfile.py; pyenv's interpreters), each in
# its own venv under .nox/, and once without the optional packages.
.PHONY: test-all
$(NOX_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[matrix]'
	touch $(NOX_STAMP)

# NOX_SESSIONS="tests-3.10 tests-3.13" runs only those; PYTEST_ARGS go to
# pytest in each (.ci/run: -m "not slow").
test-all: $(NOX_STAMP)
	$(PY) -m nox $(if $(NOX_SESSIONS),-s $(NOX_SESSIONS)) $(if $(PYTEST_ARGS),-- $(PYTEST_ARGS))

demo-venv: $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	echo '*' > $(DEMO_VENV)/.gitignore
	$(DEMO_PIP_OK) || $(DEMO_PIP) --upgrade pip
	$(DEMO_PIP) -e '.[demo]'
	touch $(DEMO_STAMP)

# --engine dask runs the CPU-bound tasks on a local Dask cluster (atasker-dask).
$(DEMO_DASK_STAMP): $(DEMO_STAMP) plugins/atasker-dask/pyproject.toml
	$(DEMO_PIP) -e plugins/atasker-dask
	touch $(DEMO_DASK_STAMP)

demo: $(DEMO_STAMP)
	$(DEMO_PY) -m atasker demo

demo-dask: $(DEMO_DASK_STAMP)
	$(DEMO_PY) -m atasker demo --engine dask

# The README's picture: the full demo's timeline.
timeline: venv
	$(PY) -m atasker demo --out build/timeline
	mkdir -p docs/img
	cp build/timeline/timeline.png docs/img/demo-timeline.png

# Every benchmark compares against its peer in the same run and prints ratios.
bench: venv
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

bench-quick: venv
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

stress: venv
	ATASKER_STRESS=1 ATASKER_FIGURES=reliability-figures.json $(PY) -m pytest -q tests/reliability

lint: venv
	$(PY) -m ruff check atasker tests bench plugins .ci noxfile.py
	$(PY) -m ruff format --check atasker tests bench plugins .ci noxfile.py
	$(PY) -m mypy

docs: venv
	$(PY) -m pip install --quiet -e '.[docs]'
	$(PY) -m sphinx -W -b html docs docs/_build/html

# Wheels of atasker and every package under plugins/, installed into a fresh
# venv outside the repo, and a smoke test there (part of .ci/run).
wheel-smoke:
	PYTHON=$(PYTHON) bash .ci/wheel-smoke

clean:
	rm -rf $(VENV) $(DEMO_VENV) .nox docs/_build build *.egg-info .pytest_cache
