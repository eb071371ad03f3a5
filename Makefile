# The README's two Quickstart commands: `make demo` and `make test`.
# Each creates .venv when missing and installs everything into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray

.PHONY: setup demo test test-all lint bench clean

setup: $(STAMP)

# The CPU build of torch goes in first: with torch already present, the range in
# pyproject.toml is satisfied and pip never pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[train,dev,lrfree]'
	touch $(STAMP)

# Ray is an optional extra: the demo never needs it; the test suite installs it to run the tests
# that start a real local Ray instance (marked `ray`).
$(RAY_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[ray]'
	touch $(RAY_STAMP)

demo: $(STAMP)
	$(VENV)/bin/qlr demo

test: $(RAY_STAMP)
	$(PY) -m pytest -q -m 'not slow or ray'

test-all: $(RAY_STAMP)
	$(PY) -m pytest -q -m ''

# ruff over everything; mypy over qlr/, the typed public API ([tool.mypy] in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs build *.egg-info .mypy_cache
