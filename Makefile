# Every target bootstraps .venv itself: a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PLUGIN_DIRS := $(wildcard plugins/*/pyproject.toml) $(wildcard tests/plugins/*/pyproject.toml)

.PHONY: venv test demo timeline bench bench-quick lint docs stress clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(PLUGIN_DIRS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,lint,demo]' $(foreach p,$(PLUGIN_DIRS),-e $(dir $(p)))
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q

demo: venv
	$(PY) -m atasker demo

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
	$(PY) -m ruff check atasker tests bench plugins
	$(PY) -m ruff format --check atasker tests bench plugins
	$(PY) -m mypy

docs: venv
	$(PY) -m pip install --quiet -e '.[docs]'
	$(PY) -m sphinx -W -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build build *.egg-info .pytest_cache
