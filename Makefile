# Every command a newcomer needs. Each target creates .venv on first use and reuses it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench bench-quick tools clean

# Re-installs only when the dependency list changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)  ## a real agent app hangs; the sidecar flags it, then sees it recover
	$(PY) -m watchdog.demo

lint: $(STAMP)  ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint  ## lint, then the whole test suite (slow scenarios included), 3 workers
	$(PY) -m pytest -n 3 --dist loadfile

tools:  ## system tools some tests use for real (Debian packages unpacked into .tools/)
	scripts/fetch-tools.sh

bench: $(STAMP)  ## benchmarks, full mode (about 20 min): writes docs/performance.md
	$(PY) -m bench

bench-quick: $(STAMP)  ## benchmarks, smoke mode (under 2 min): each figure, its target, PASS/MISS
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache build dist
