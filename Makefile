# Every command a newcomer needs. Each target creates .venv on first use and reuses it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench bench-quick sdk-suite tools clean

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

# The SDK's own test suite (from the sdist of the installed openai-agents) run twice,
# plain and with a WatchdogProcessor and a real sidecar on every test; report in
# .tools/sdk-suite/report/. Extra arguments: make sdk-suite SDK_SUITE_ARGS='--workers 1'
sdk-suite: $(STAMP)  ## no SDK test changes outcome, no watchdog warning, no hung span left
	$(PY) scripts/sdk_suite/run.py $(SDK_SUITE_ARGS)

tools:  ## system tools some tests use for real (Debian packages unpacked into .tools/)
	scripts/fetch-tools.sh

bench: $(STAMP)  ## benchmarks, full mode (about 20 min): writes docs/performance.md
	$(PY) -m bench

bench-quick: $(STAMP)  ## benchmarks, smoke mode (under 2 min): each figure, its target, PASS/MISS
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache build dist
