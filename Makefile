# The README's two Quickstart commands: `make demo` and `make test`.
# Each creates .venv when missing and installs everything into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: setup demo test test-all lint docs bench clean

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

# The documentation site (mkdocs.yml): the docs extra is a light install on top of the others.
# --strict fails the build on a broken link or anchor, or an API name that no longer exists.
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

demo: $(STAMP)
	$(VENV)/bin/qlr demo

test: $(RAY_STAMP)
	$(PY) -m pytest -q -m 'not slow or ray'

test-all: $(RAY_STAMP)
	$(PY) -m pytest -q -m ''

# ruff over everything; mypy over qlr/, the typed public API ([tool.mypy] in pyproject.toml);
# lint-imports checks the import contracts ([tool.importlinter]). It reads the package from
# disk, where the editable install joins envs/ and agents/ to qlr only through an import hook,
# so it reads a throwaway tree of links laid out as the wheel installs (pyproject's package-dir),
# made afresh each time so that a new module counts. It runs from inside that tree because it
# looks in the current folder first, where the checkout's own qlr/ would hide the tree.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	tree=$$(mktemp -d) && trap 'rm -rf "$$tree"' EXIT && mkdir "$$tree/qlr" \
		&& ln -s "$(CURDIR)"/qlr/* "$$tree/qlr/" \
		&& ln -s "$(CURDIR)/envs" "$$tree/qlr/envs" \
		&& ln -s "$(CURDIR)/agents" "$$tree/qlr/agents" \
		&& ln -s "$(CURDIR)/experiments/configs" "$$tree/qlr/configs" \
		&& cd "$$tree" && "$(CURDIR)/$(VENV)/bin/lint-imports" --no-cache "$(CURDIR)/pyproject.toml"

clean:
	rm -rf $(VENV) runs build *.egg-info .mypy_cache
