# cmlmon: `make run` starts the whole system locally, `make test` runs every check against real components.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
GEN_STAMP := gen/.stamp
PROTOS := $(shell find protos -name '*.proto')
# A new top-level package must be mapped by the editable install too.
PACKAGES := $(wildcard libs/*/__init__.py services/*/__init__.py)

.PHONY: install gen lint test test-unit test-integration run bench clean

install: $(STAMP) $(GEN_STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# Generated code lives in gen/python (git-ignored); the editable install is refreshed so that it maps it.
$(GEN_STAMP): $(STAMP) $(PROTOS) $(PACKAGES) scripts/gen_protos.py
	$(PY) scripts/gen_protos.py
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

gen: $(GEN_STAMP)

lint: install
	$(VENV)/bin/buf lint protos
	$(VENV)/bin/ruff check libs services tests bench scripts
	$(VENV)/bin/mypy libs services scripts tests

# Two pytest processes (pytest-xdist), whole files to each: tests isolate themselves by unique ids and free ports,
# and each process starts its own session servers; most of the slow tests wait on intervals, not on the CPU.
# `PYTEST_WORKERS=0 make test` runs them in one process.
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile

test: install
	$(PYTEST) tests

test-unit: install
	$(PYTEST) tests/unit

test-integration: install
	$(PYTEST) tests/integration tests/e2e

run: install
	$(PY) -m cmlmon_dev.run

# Benchmarks, each ending with one JSON line; bench/fake_aws.py is the collector benchmark's AWS stand-in.
BENCHES := bench/registry.py bench/collector.py bench/notifier.py

bench: install
	@for b in $(BENCHES); do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) gen .run .mypy_cache .ruff_cache
