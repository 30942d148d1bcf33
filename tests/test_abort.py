"""The abort ladder's cooperative steps with the real SDK, processor and sidecar."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.agents_app import AppRun, agent_with_tool, coordinator_with_researcher, single_agent
from tests.conftest import metric, spans, thresholds, wait_until
from tests.launcher import SidecarProcess
from watchdog.processor import RunAborted, WatchdogProcessor
from watchdog.standin import StandInServer

Factory = Callable[..., SidecarProcess]
Watch = Callable[..., WatchdogProcessor]
TOKEN = "abort-token"

CANCEL_RESPONSES = (
    thresholds(response=1.5)
    + """
[abort]
grace_seconds = 3
[[rules]]
kind = "response"
action = "cancel"
"""
)


def steps(sidecar: SidecarProcess) -> list[tuple[str, str]]:
    return [(e["step"], e["outcome"]) for e in sidecar.logs if e.get("event") == "abort_step"]


def test_rule_cancel_ends_the_run_with_run_aborted_and_spares_the_healthy_one(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(CANCEL_RESPONSES)
    watch(sidecar.url, service="briefings")

    async def steady() -> str:
        await asyncio.sleep(0.3)
        return "chunk"

    healthy = AppRun(
        standin,
        agent_with_tool(tuple(["tool=fetch_report"] * 12) + ("reply=Healthy",), steady),
        guarded=True,
    ).start()
    stuck = AppRun(standin, single_agent("hang"), guarded=True).start()
    with pytest.raises(RunAborted, match="response span .* hung"):
        stuck.wait(timeout=15)
    assert healthy.wait(timeout=20) == "Healthy"  # same process, undisturbed
    assert standin.hanging == 0  # the stuck request was abandoned by the cancelled task
    wait_until(lambda: ("cancel", "succeeded") in steps(sidecar))
    assert steps(sidecar) == [("cancel", "requested"), ("cancel", "succeeded")]
    results = [e for e in sidecar.logs if e.get("event") == "abort_step_result"]
    assert results and results[0]["outcome"] == "delivered"
    assert (
        metric(sidecar, "agents_watchdog_aborts_total", action="cancel", outcome="succeeded") == 1
    )
    incident = httpx.get(f"{sidecar.url}/v1/incidents").json()["incidents"][0]
    timeline = httpx.get(f"{sidecar.url}/v1/incidents/{incident['id']}").json()["timeline"]
    assert [e["detail"]["outcome"] for e in timeline if e["event"] == "abort"][:2] == [
        "requested",
        "delivered",
    ]
    wait_until(lambda: spans(sidecar) == [])


def test_cancelling_a_sub_agent_ends_the_whole_run(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    """Cancel ends the run, wherever the span hung: the SDK would report a cancelled
    tool task to the calling agent as a tool error and go on, so the run itself is
    cancelled too, and the caller sees RunAborted (without abortable())."""
    sidecar = sidecar_factory(CANCEL_RESPONSES)
    watch(sidecar.url)
    run = AppRun(standin, coordinator_with_researcher(("hang",))).start()
    with pytest.raises(RunAborted, match="response span .* hung"):
        run.wait(timeout=15)
    wait_until(lambda: ("cancel", "succeeded") in steps(sidecar))
    assert standin.hanging == 0


def test_dry_run_records_but_sends_nothing(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(
        CANCEL_RESPONSES.replace("grace_seconds = 3", "grace_seconds = 1\ndry_run = true")
    )
    watch(sidecar.url)
    run = AppRun(standin, coordinator_with_researcher(("hang",)), guarded=True).start()
    wait_until(lambda: ("cancel_trace", "timed_out") in steps(sidecar), within=10)
    assert steps(sidecar) == [
        ("cancel", "dry_run"),
        ("cancel", "timed_out"),
        ("cancel_trace", "dry_run"),
        ("cancel_trace", "timed_out"),
    ]
    assert not [e for e in sidecar.logs if e.get("event") == "abort_step_result"]
    assert standin.hanging == 1 and not run.done.is_set()
    standin.release()
    assert run.wait() == "Briefing"


def test_manual_abort_needs_the_token_and_cancels(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(
        CANCEL_RESPONSES.replace('action = "cancel"', 'action = "alert"'),
        env={"AGENTS_WATCHDOG_TOKEN": TOKEN},
    )
    watch(sidecar.url, token=TOKEN)
    run = AppRun(standin, single_agent("hang"), guarded=True).start()
    auth = {"authorization": f"Bearer {TOKEN}"}

    def hung() -> Any:
        listing = httpx.get(f"{sidecar.url}/v1/spans?state=hung", headers=auth).json()["spans"]
        return next(iter(listing), None)

    span = wait_until(hung)
    url = f"{sidecar.url}/v1/spans/{span['span_id']}/abort"
    assert httpx.post(url, json={"action": "cancel"}).status_code == 401
    assert (
        httpx.post(
            url, json={"action": "cancel"}, headers={"authorization": "Bearer x"}
        ).status_code
        == 401
    )
    bad = httpx.post(url, json={"action": "explode"}, headers=auth)
    assert bad.status_code == 400 and "action must be one of" in bad.json()["detail"]
    unknown = httpx.post(url, json={"action": "cancel", "colour": 1}, headers=auth)
    assert unknown.status_code == 400 and "colour" in unknown.json()["detail"]
    missing = httpx.post(f"{sidecar.url}/v1/spans/span_nope/abort", json={}, headers=auth)
    assert missing.status_code == 404
    command = [sys.executable, "-m", "watchdog.cli", "abort", span["span_id"], "--url", sidecar.url]
    refused = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "AGENTS_WATCHDOG_TOKEN": "wrong"},
    )
    assert refused.returncode == 2 and "wrong bearer token" in refused.stderr
    accepted = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "AGENTS_WATCHDOG_TOKEN": TOKEN},
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "started: cancel -> cancel_trace" in accepted.stdout
    with pytest.raises(RunAborted, match="requested by operator"):
        run.wait(timeout=15)


def test_abort_without_a_configured_token_is_forbidden(sidecar_factory: Factory) -> None:
    sidecar = sidecar_factory()
    response = httpx.post(f"{sidecar.url}/v1/spans/span_x/abort", json={"action": "cancel"})
    assert response.status_code == 403
    assert "needs a token" in response.json()["detail"]


def test_the_grace_runs_from_when_the_app_is_told() -> None:
    """Commands ride on the reply to the app's next batch, up to a heartbeat after they
    are queued: the grace the app gets to act starts when it takes the command, so a
    late heartbeat does not eat into it."""
    from collections import Counter
    from types import SimpleNamespace

    from watchdog.sidecar.abort import AbortLadder
    from watchdog.sidecar.commands import CommandQueue
    from watchdog.sidecar.config import AbortConfig

    grace = 0.3
    process = SimpleNamespace(service="svc", info=SimpleNamespace(instance_id="p1", pid=4242))
    span = SimpleNamespace(
        key="p1/s1", span_id="s1", trace_id="t1", kind="function", reason="open too long",
        process=process, action="cancel",
    )  # fmt: skip
    steps: list[tuple[str, str]] = []
    commands = CommandQueue()
    ladder = AbortLadder(
        AbortConfig(grace_seconds=grace),
        Counter(),
        lambda _span, step, outcome, _detail: steps.append((step, outcome)),
        commands=commands,
    )

    async def climb() -> None:
        ladder.start(span, "cancel", by="rule")  # type: ignore[arg-type]
        await asyncio.sleep(grace * 0.8)  # the app's next batch comes late in the grace
        assert [c.action for c in commands.take("p1")] == ["cancel"]
        await asyncio.sleep(grace * 0.6)  # past the grace from the request, not from then
        assert steps == [("cancel", "requested")]
        await asyncio.sleep(grace * 0.8)
        assert ("cancel", "timed_out") in steps
        await ladder.stop()

    asyncio.run(climb())
