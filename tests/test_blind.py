"""Blindness: a process whose agent runs the SDK's tracing keeps from the processor is
a visible state with its reason, never a silence that looks like health."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from agents import Agent, RunConfig, Runner, set_trace_processors, set_tracing_disabled, trace
from openai import AsyncOpenAI

from tests.agents_app import model
from tests.conftest import REPO, metric, wait_until
from tests.receivers import Receiver
from watchdog.processor import WatchdogProcessor, install
from watchdog.sidecar.launcher import SidecarProcess
from watchdog.standin import StandInServer

Factory = Callable[..., SidecarProcess]
pytestmark = pytest.mark.slow

SETTINGS = {
    "blind-env": "OPENAI_AGENTS_DISABLE_TRACING=1",
    "blind-global": "agents.set_tracing_disabled(True)",
    "blind-run": "RunConfig(tracing_disabled=True)",
}


@pytest.fixture
def blind_apps() -> Iterator[Callable[[str, str, str], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(scenario: str, sidecar: str, standin: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_WATCHDOG_")}
        env.pop("OPENAI_AGENTS_DISABLE_TRACING", None)
        if scenario == "blind-env":
            env["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.app_process", scenario, sidecar, standin],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def processes(sidecar: SidecarProcess) -> list[dict[str, Any]]:
    response = httpx.get(f"{sidecar.url}/v1/processes", timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["processes"]
    return result


@pytest.mark.parametrize("scenario", sorted(SETTINGS))
def test_disabled_tracing_is_a_visible_blind_process(
    standin: StandInServer,
    sidecar_factory: Factory,
    blind_apps: Callable[[str, str, str], subprocess.Popen[str]],
    scenario: str,
) -> None:
    """Each way users switch tracing off: the process registers anyway and is blind —
    in /v1/processes, /metrics, status, an alert of its own — and the app's stderr
    names the setting and the fix, while its model call hangs unseen."""
    with Receiver() as webhook:
        sidecar = sidecar_factory(f'[[alerts]]\ntype = "webhook"\nurl = "{webhook.url}"\n')
        app = blind_apps(scenario, sidecar.url, standin.url)
        assert app.stdout is not None and app.stderr is not None
        assert app.stdout.readline().strip() == "running"
        blind = wait_until(lambda: [p for p in processes(sidecar) if p["state"] == "blind"])
        assert blind[0]["pid"] == app.pid
        assert SETTINGS[scenario] in blind[0]["blind_reason"]
        assert "install(replace_default=True)" in blind[0]["blind_reason"]
        assert metric(sidecar, "agents_watchdog_processes", state="blind") == 1
        body = webhook.wait_for(lambda bodies: len(bodies) >= 1)[0]
        assert body["alerts"][0]["labels"]["alertname"] == "AgentProcessBlind"
        assert body["status"] == "firing"
        status = subprocess.run(
            [sys.executable, "-m", "watchdog.cli", "status", "--url", sidecar.url, "--json"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 1, status.stdout + status.stderr
        assert any("blind" in line for line in json.loads(status.stdout)["problems"])
        app.kill()
        app.wait(10)
        warning = app.stderr.read()
    assert "agents-watchdog cannot watch this process's agent runs" in warning
    assert SETTINGS[scenario] in warning
    assert warning.count("cannot watch") == 1, warning


def test_a_process_whose_runs_are_traced_again_is_sighted(
    sidecar_factory: Factory, standin: StandInServer
) -> None:
    """In this process: tracing switched off for a while, then on again; the processor
    reports blind, then (after the hold) not blind, and untraced runs are counted."""
    sidecar = sidecar_factory()
    processor = install(url=sidecar.url, service="flicker", replace_default=True)
    try:
        set_tracing_disabled(True)
        with trace("unseen"):
            assert processor.blindness() is not None
            assert "untraced run(s) in progress" in (processor.blindness() or "")
        wait_until(lambda: [p for p in processes(sidecar) if p["state"] == "blind"])
        set_tracing_disabled(False)
        processor._untraced_last -= 10_000  # the hold has passed (no sleeping)
        assert processor.blindness() is None
        processor.force_flush()
        wait_until(lambda: [p for p in processes(sidecar) if p["state"] == "live"])
        assert processor.untraced_runs == 1
    finally:
        set_tracing_disabled(False)
        processor.shutdown()


def test_a_removed_processor_is_blind(sidecar_factory: Factory, standin: StandInServer) -> None:
    """set_trace_processors() after install() drops the processor: the next run says so."""
    sidecar = sidecar_factory()
    processor = install(url=sidecar.url, service="dropped", replace_default=True)
    try:
        set_trace_processors([])
        with trace("wf"):
            pass
        reason = processor.blindness() or ""
        assert "no longer among the SDK's trace processors" in reason
        wait_until(lambda: [p for p in processes(sidecar) if p["state"] == "blind"])
    finally:
        processor.shutdown()


def test_a_per_run_disable_in_this_process_is_counted(
    sidecar_factory: Factory, standin: StandInServer
) -> None:
    sidecar = sidecar_factory()
    processor: WatchdogProcessor = install(url=sidecar.url, service="per-run", replace_default=True)
    try:

        async def untraced_run() -> Any:
            async with AsyncOpenAI(
                base_url=f"{standin.url}/v1", api_key="test", max_retries=0
            ) as client:
                agent = Agent(name="Quick", instructions="x", model=model(client, "reply=ok"))
                return await Runner.run(agent, "Go.", run_config=RunConfig(tracing_disabled=True))

        assert asyncio.run(untraced_run()).final_output == "ok"
        assert processor.untraced_runs == 1
        assert "RunConfig(tracing_disabled=True)" in (processor.blindness() or "")
    finally:
        processor.shutdown()
