"""Shared fixtures: a real sidecar process, the Responses stand-in, and SDK isolation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from agents.models import _openai_shared
from agents.tracing import set_trace_processors

import watchdog.processor as processor_module
from tests.launcher import SidecarProcess
from watchdog.processor import WatchdogProcessor
from watchdog.standin import StandInServer

T = TypeVar("T")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / ".tools" / "usr" / "bin"


def need_tool(name: str, why: str) -> str:
    """Path of a system tool (on PATH, unpacked by scripts/fetch-tools.sh into .tools/, or
    installed by pip beside the interpreter); skips locally when missing, fails under CI=true."""
    path = (
        shutil.which(name)
        or shutil.which(name, path=str(TOOLS))
        or shutil.which(name, path=str(Path(sys.executable).parent))  # pip-installed tools
    )
    if path is None:
        message = f"{name} not installed ({why}); `make test` fetches it where it can"
        message += " (scripts/fetch-tools.sh, or pip's dev group)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def thresholds(**seconds: float) -> str:
    """A ``[thresholds]`` table: the kinds given here as told, model calls, tools and
    containers 60 s otherwise, so that only what a test looks at is ever flagged."""
    table = {kind: 60.0 for kind in ("response", "function", "agent", "turn", "task", "trace")}
    table.update(seconds)
    return "[thresholds]\n" + "".join(f"{kind} = {value:g}\n" for kind, value in table.items())


def wait_until(check: Callable[[], T | None], within: float = 10.0, every: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail the test after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {within} s: {check}")
        time.sleep(every)


@pytest.fixture(autouse=True)
def _sdk_isolation() -> Iterator[None]:
    """Each test starts with no trace processors and restores the SDK's globals after."""
    client = _openai_shared.get_default_openai_client()
    use_responses = _openai_shared.get_use_responses_by_default()
    set_trace_processors([])
    processor_module._installed = None
    try:
        yield
    finally:
        set_trace_processors([])
        processor_module._installed = None
        _openai_shared._default_openai_client = client
        _openai_shared.set_use_responses_by_default(use_responses)


@pytest.fixture
def standin() -> Iterator[StandInServer]:
    """The Responses API stand-in on a loopback port."""
    with StandInServer() as server:
        yield server


@pytest.fixture
def sidecar_factory() -> Iterator[Callable[..., SidecarProcess]]:
    """Start real sidecar processes; all are stopped at the end of the test."""
    started: list[SidecarProcess] = []

    def make(config: str = "", **kwargs: Any) -> SidecarProcess:
        sidecar = SidecarProcess(config, **kwargs)
        started.append(sidecar)
        return sidecar.start()

    yield make
    for sidecar in started:
        sidecar.close()


@pytest.fixture
def watch() -> Iterator[Callable[..., WatchdogProcessor]]:
    """Register a WatchdogProcessor as the SDK's only processor; shut down after."""
    made: list[WatchdogProcessor] = []

    def make(url: str, **kwargs: Any) -> WatchdogProcessor:
        kwargs.setdefault("service", "tests")
        processor = WatchdogProcessor(url, **kwargs)
        made.append(processor)
        set_trace_processors([processor])
        return processor

    yield make
    for processor in made:
        processor.shutdown(timeout=5)


def spans(sidecar: SidecarProcess, **filters: str) -> list[dict[str, Any]]:
    """``GET /v1/spans`` with filters."""
    response = httpx.get(f"{sidecar.url}/v1/spans", params=filters, timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["spans"]
    return result


def metric(sidecar: SidecarProcess, name: str, **labels: str) -> float | None:
    """One sample from ``/metrics``, parsed with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{sidecar.url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


@pytest.fixture
def apps() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``tests.app_process`` scenarios as real app processes (killed at the end);
    each call returns once the app printed ``running``. ``env`` adds to the app's
    environment (``AGENTS_WATCHDOG_*`` and ``OPENAI_AGENTS_DISABLE_TRACING`` are never
    inherited); ``stderr=True`` keeps its stderr readable; ``module`` is the app to run
    (``tests.abort_app`` for the abort table's rows)."""
    started: list[subprocess.Popen[str]] = []

    def start(
        scenario: str,
        sidecar: str,
        standin: str,
        env: dict[str, str] | None = None,
        stderr: bool = False,
        module: str = "tests.app_process",
    ) -> subprocess.Popen[str]:
        environ = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AGENTS_WATCHDOG_") and k != "OPENAI_AGENTS_DISABLE_TRACING"
        }
        process = subprocess.Popen(
            [sys.executable, "-m", module, scenario, sidecar, standin],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
            text=True,
            env={**environ, **(env or {})},
        )
        started.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "running"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
