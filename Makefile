# Every command a newcomer needs. Each target creates the virtualenv it uses on first use
# and reuses it; a fresh machine needs only python3, make and git.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PIP    := -m pip --quiet --disable-pip-version-check
# Written by scripts/fetch-tools.sh once every system tool is in place; until then each
# `make test` tries again (quickly: what is already there is not fetched twice).
TOOLS_STAMP := .tools/.fetched-stamp
# CI=true (as .ci/run sets it, and as tests/conftest.py reads it): nothing may be missing.
IN_CI := $(filter 1 true yes True TRUE Yes YES,$(CI))

# Stack capture, cancel and timeout reach into asyncio internals that change between
# Python versions: these tests run again on each newer Python the project supports.
NEWER_PYTHONS := 3.12 3.13
ASYNCIO_TESTS := tests/test_stacks.py tests/test_stacks_sdk.py tests/test_stack_constructs.py \
                 tests/test_abort_semantics.py tests/test_abort_streams.py tests/test_heal.py \
                 tests/test_processor.py tests/test_causes.py tests/test_loops.py \
                 tests/test_blind.py tests/test_hot_path.py
# The interpreter for `make test-py PY=3.12`: pyenv's build of that version first (a
# pyenv shim on PATH answers "command not found" unless the version is selected), then
# pythonX.Y on PATH.
PYENV_ROOT ?= $(HOME)/.pyenv
NOT_FOUND_HINT = pyenv install $*, or python$* on PATH
find_python = $(or $(lastword $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1))),$(shell python$(1) -c 'import sys; print(sys.executable)' 2>/dev/null))

.PHONY: demo test test-newer test-py lint bench bench-quick sdk-suite tools clean

# Re-installs only when the dependency list changes. The `dev` group (PEP 735) needs
# pip >= 25.1, hence the upgrade first: a new venv may come with an older pip.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) $(PIP) install --upgrade 'pip>=25.1'
	$(VPY) $(PIP) install -e . --group dev
	@touch $(STAMP)

demo: $(STAMP)  ## a real agent app hangs; the sidecar flags it, then sees it recover
	$(VPY) -m watchdog.demo

lint: $(STAMP)  ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint $(TOOLS_STAMP)  ## lint, system tools, the whole suite (3 workers), then the asyncio tests on 3.12 and 3.13
	$(VPY) -m pytest -n 3 --dist loadfile
	@$(MAKE) --no-print-directory --keep-going test-newer

# Each newer Python the machine has, every one even when another fails (--keep-going
# above). One it lacks is skipped with a note; under CI=true that is a failure: CI
# tests every supported version.
test-newer: $(addprefix test-newer-,$(NEWER_PYTHONS))

test-newer-%:
	@if [ -n '$(call find_python,$*)' ]; then \
	  $(MAKE) --no-print-directory test-py PY=$*; \
	elif [ -n '$(IN_CI)' ]; then \
	  echo "error: Python $* not found ($(NOT_FOUND_HINT)); CI tests every supported version" >&2; \
	  exit 1; \
	else \
	  echo "note: Python $* not found ($(NOT_FOUND_HINT)): its asyncio tests are skipped"; \
	fi

# make test-py PY=3.12: the asyncio tests on that Python, in .venv-3.12 (created on first
# use, re-installed when pyproject.toml changes), with only the `test` group's tools.
# Three workers as for the whole suite (the tests mostly wait on real processes and
# timers), spread test by test, not file by file: the files differ much in length.
test-py:
	@test -n "$(PY)" || { echo "usage: make test-py PY=3.12" >&2; exit 2; }
	@$(MAKE) --no-print-directory .venv-$(PY)/.installed-stamp PY=$(PY)
	.venv-$(PY)/bin/python -m pytest -n 3 --dist worksteal $(ASYNCIO_TESTS)

.venv-%/.installed-stamp: pyproject.toml
	@interpreter='$(call find_python,$*)'; \
	  test -n "$$interpreter" || { echo "error: Python $* not found ($(NOT_FOUND_HINT))" >&2; exit 1; }; \
	  echo "$$interpreter -m venv .venv-$*"; "$$interpreter" -m venv .venv-$*
	.venv-$*/bin/python $(PIP) install --upgrade 'pip>=25.1'
	.venv-$*/bin/python $(PIP) install -e . --group test
	@touch $@

# The SDK's own test suite (from the sdist of the installed openai-agents) run twice,
# plain and with a WatchdogProcessor and a real sidecar on every test; report in
# .tools/sdk-suite/report/. Extra arguments: make sdk-suite SDK_SUITE_ARGS='--workers 1'
sdk-suite: $(STAMP)  ## no SDK test changes outcome, no watchdog warning, no hung span left
	$(VPY) scripts/sdk_suite/run.py $(SDK_SUITE_ARGS)

# `make test` runs this by itself. Where a tool cannot be fetched it says why and goes
# on: the tests that need it skip, naming it. Under CI=true a missing tool stops the run
# here, before the suite.
$(TOOLS_STAMP): scripts/fetch-tools.sh
	scripts/fetch-tools.sh $(if $(IN_CI),,--best-effort)

tools:  ## fetch the system tools now (Debian's Alertmanager, promtool; as root Chromium, systemd-analyze)
	scripts/fetch-tools.sh

bench: $(STAMP)  ## benchmarks, full mode (about 20 min): writes docs/performance.md
	$(VPY) -m bench

bench-quick: $(STAMP)  ## benchmarks, smoke mode (under 2 min): each figure, its target, PASS/MISS
	$(VPY) -m bench --quick

clean:
	rm -rf $(VENV) $(addprefix .venv-,$(NEWER_PYTHONS)) .tools .mypy_cache .ruff_cache .pytest_cache build dist
