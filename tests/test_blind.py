"""Blindness: a process whose agent runs the SDK's tracing keeps from the processor is
a visible state with its reason, never a silence that looks like health."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from agents import Agent, RunConfig, Runner, set_trace_processors, set_tracing_disabled, trace
from openai import AsyncOpenAI

from tests.agents_app import model
from tests.conftest import metric, wait_until
from tests.launcher import SidecarProcess
from tests.receivers import Receiver
from watchdog.processor import WatchdogProcessor, install
from watchdog.standin import StandInServer

Factory = Callable[..., SidecarProcess]
pytestmark = pytest.mark.slow

SETTINGS = {
    "blind-env": "OPENAI_AGENTS_DISABLE_TRACING=1",
    "blind-global": "agents.set_tracing_disabled(True)",
    "blind-run": "RunConfig(tracing_disabled=True)",
}


def processes(sidecar: SidecarProcess) -> list[dict[str, Any]]:
    response = httpx.get(f"{sidecar.url}/v1/processes", timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["processes"]
    return result


@pytest.mark.parametrize("scenario", sorted(SETTINGS))
def test_disabled_tracing_is_a_visible_blind_process(
    standin: StandInServer,
    sidecar_factory: Factory,
    apps: Callable[..., subprocess.Popen[str]],
    scenario: str,
) -> None:
    """Each way users switch tracing off: the process registers anyway and is blind —
    in /v1/processes, /metrics, status, an alert of its own — and the app's stderr
    names the setting and the fix, while its model call hangs unseen."""
    with Receiver() as webhook:
        sidecar = sidecar_factory(f'[[alerts]]\ntype = "webhook"\nurl = "{webhook.url}"\n')
        env = {"OPENAI_AGENTS_DISABLE_TRACING": "1"} if scenario == "blind-env" else {}
        app = apps(scenario, sidecar.url, standin.url, env=env, stderr=True)
        assert app.stderr is not None
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


def test_a_per_run_disable_in_this_process_is_counted_streamed_or_not(
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

        async def untraced_stream() -> Any:
            async with AsyncOpenAI(
                base_url=f"{standin.url}/v1", api_key="test", max_retries=0
            ) as client:
                agent = Agent(name="Quick", instructions="x", model=model(client, "reply=ok"))
                streamed = Runner.run_streamed(
                    agent, "Go.", run_config=RunConfig(tracing_disabled=True)
                )
                in_progress = None
                async for _ in streamed.stream_events():
                    in_progress = in_progress or processor.blindness()
                return streamed.final_output, in_progress

        final, in_progress = asyncio.run(untraced_stream())
        assert final == "ok"
        assert "1 untraced run(s) in progress" in (in_progress or "")
        assert processor.untraced_runs == 2
        assert "untraced run(s) in progress" not in (processor.blindness() or "")
        assert "RunConfig(tracing_disabled=True)" in (processor.blindness() or "")
    finally:
        processor.shutdown()
