"""End to end: the real SDK runs real agents against the Responses stand-in, the real
processor streams to a real sidecar process over loopback HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tests.agents_app import AppRun, Gate, agent_with_tool, coordinator_with_researcher
from tests.conftest import metric, spans, thresholds, wait_until
from tests.launcher import SidecarProcess
from watchdog.processor import WatchdogProcessor
from watchdog.standin import StandInServer

FAST = thresholds(response=1.5, function=1.5)


Factory = Callable[..., SidecarProcess]
Watch = Callable[..., WatchdogProcessor]


def seconds_between(start_iso: str, end_iso: str) -> float:
    parse = datetime.fromisoformat
    return (
        parse(end_iso.replace("Z", "+00:00")) - parse(start_iso.replace("Z", "+00:00"))
    ).total_seconds()


def hung_of_kind(sidecar: SidecarProcess, kind: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        return next(iter(spans(sidecar, state="hung", kind=kind)), None)

    return check


def test_hanging_response_in_subagent_is_flagged_with_its_agent(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(FAST)
    watch(sidecar.url, service="briefings")
    run = AppRun(standin, coordinator_with_researcher(("hang",))).start()

    span = wait_until(hung_of_kind(sidecar, "response"), within=10)
    assert span["agent"] == "Researcher"
    assert span["service"] == "briefings"
    assert span["threshold_seconds"] == 1.5
    # Flagged within threshold + 1 s of the span's start (same host: same wall clock).
    assert 1.5 <= seconds_between(span["started_at"], span["flagged_at"]) <= 2.5
    logged = sidecar.wait_for("span_hung", timeout=5)
    assert logged is not None
    assert (logged["kind"], logged["agent"], logged["span_id"]) == (
        "response",
        "Researcher",
        span["span_id"],
    )
    assert logged["age_seconds"] <= 2.5
    # Only the stuck call is flagged, not the tool, agents and trace waiting on it.
    assert [s["kind"] for s in spans(sidecar, state="hung")] == ["response"]
    assert metric(sidecar, "agents_watchdog_hung_spans", kind="response", service="briefings") == 1
    assert (
        metric(sidecar, "agents_watchdog_hung_spans_total", kind="response", service="briefings")
        == 1
    )
    oldest = metric(
        sidecar,
        "agents_watchdog_oldest_open_span_age_seconds",
        kind="response",
        service="briefings",
    )
    assert oldest is not None and oldest >= 1.5

    standin.release()
    assert run.wait() == "Briefing"
    recovered = sidecar.wait_for("span_recovered", timeout=5)
    assert recovered is not None and recovered["span_id"] == span["span_id"]
    assert recovered["duration_seconds"] >= 1.5
    wait_until(
        lambda: (
            metric(sidecar, "agents_watchdog_hung_spans", kind="response", service="briefings")
            in (None, 0)
        )
    )


def test_hanging_function_tool_is_flagged(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(FAST)
    watch(sidecar.url)
    gate = Gate()

    async def stuck() -> str:
        await gate.wait()
        return "report"

    run = AppRun(standin, agent_with_tool(("tool=fetch_report", "reply=Summary"), stuck)).start()
    span = wait_until(hung_of_kind(sidecar, "function"), within=10)
    assert (span["name"], span["agent"]) == ("fetch_report", "Analyst")
    assert seconds_between(span["started_at"], span["flagged_at"]) <= 2.5
    assert span["task_id"] is not None  # the owning asyncio task was recorded
    gate.open()
    assert run.wait() == "Summary"
    assert sidecar.wait_for("span_recovered", timeout=5) is not None


def test_spans_that_finish_in_time_are_never_flagged(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(FAST)
    processor = watch(sidecar.url)

    async def quick() -> str:
        await asyncio.sleep(0.01)
        return "ok"

    runs = [
        AppRun(
            standin,
            agent_with_tool(("tool=fetch_report*3", "tool=fetch_report", "reply=Done"), quick),
        ),
        AppRun(standin, coordinator_with_researcher(("reply=Found",))),
    ]
    for run in runs:
        run.start()
    assert [run.wait() for run in runs] == ["Done", "Briefing"]
    processor.force_flush()
    received = metric(sidecar, "agents_watchdog_events_received_total", service="tests")
    assert received is not None and received >= 30
    count = metric(
        sidecar, "agents_watchdog_span_duration_seconds_count", kind="function", service="tests"
    )
    assert count == 5  # four fetch_report calls and the ask_researcher tool
    assert spans(sidecar) == []
    assert sidecar.wait_for("span_hung", timeout=2.5) is None  # past every threshold
    assert metric(sidecar, "agents_watchdog_hung_spans_total") is None


def test_long_but_active_run_does_not_flag_its_agent(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    # Idle thresholds of 1 s for the containers; the run lasts several times that.
    sidecar = sidecar_factory(
        "[thresholds]\nresponse = 5\nfunction = 5\nagent = 1\nturn = 1\ntask = 1\ntrace = 1\n"
    )
    watch(sidecar.url)

    async def steady() -> str:
        await asyncio.sleep(0.4)
        return "chunk"

    steps = tuple(["tool=fetch_report"] * 8) + ("reply=All done",)
    run = AppRun(standin, agent_with_tool(steps, steady)).start()
    assert run.wait() == "All done"
    durations = metric(
        sidecar, "agents_watchdog_span_duration_seconds_sum", kind="agent", service="tests"
    )
    assert durations is None or durations >= 0  # scraped fine
    wait_until(
        lambda: (
            metric(
                sidecar,
                "agents_watchdog_span_duration_seconds_count",
                kind="agent",
                service="tests",
            )
            == 1
        )
    )
    agent_seconds = metric(
        sidecar, "agents_watchdog_span_duration_seconds_sum", kind="agent", service="tests"
    )
    assert agent_seconds is not None and agent_seconds > 3.0  # three idle thresholds long
    assert not [e for e in sidecar.logs if e.get("event") == "span_hung"]


@pytest.mark.slow
def test_sidecar_restart_mid_run_resyncs_exactly(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(
        "[thresholds]\nresponse = 4\nfunction = 30\nagent = 30\nturn = 30\ntask = 30\ntrace = 30\n"
    )
    processor = watch(sidecar.url)
    run = AppRun(standin, coordinator_with_researcher(("hang",))).start()
    wait_until(lambda: standin.hanging == 1)
    # Everything up to the hang is delivered (the Coordinator's own model call ended,
    # its end may still sit in the flush window), so the listing is what is open.
    processor.force_flush()
    before = spans(sidecar)
    assert [s["agent"] for s in before if s["kind"] == "response"] == ["Researcher"]
    assert all(s["state"] == "open" for s in before)

    sidecar.kill()  # no goodbye, no flush: as if the pod's sidecar container crashed
    sidecar.start()  # same port

    def same_spans() -> list[dict[str, Any]] | None:
        now = spans(sidecar)
        ids = {s["span_id"] for s in now}
        return now if ids == {s["span_id"] for s in before} else None

    after = wait_until(same_spans, within=5)
    started = {s["span_id"]: s["started_at"] for s in before}
    # Original start times, not the restart's: equal up to the clock-offset estimate,
    # which the new sidecar takes from its first few batches (their transit time).
    for span in after:
        assert abs(seconds_between(started[span["span_id"]], span["started_at"])) < 0.25
    # The response is flagged 4 s after it *started*, not 4 s after the restart.
    response = next(s for s in after if s["kind"] == "response")
    hung = sidecar.wait_for("span_hung", timeout=8)
    assert hung is not None and hung["span_id"] == response["span_id"]
    assert hung["age_seconds"] <= 5.0
    assert [e["span_id"] for e in sidecar.logs if e.get("event") == "span_hung"] == [
        response["span_id"]
    ]
    standin.release()
    assert run.wait() == "Briefing"
    wait_until(lambda: spans(sidecar) == [])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_sidecar_down_at_app_start_then_appears(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    port = free_port()
    processor = watch(f"http://127.0.0.1:{port}")
    quick = AppRun(standin, coordinator_with_researcher(("reply=Found",))).start()
    assert quick.wait(timeout=10) == "Briefing"  # the app runs normally without a sidecar
    run = AppRun(standin, coordinator_with_researcher(("hang",))).start()
    wait_until(lambda: standin.hanging == 1)
    sidecar = sidecar_factory(FAST, port=port)
    span = wait_until(hung_of_kind(sidecar, "response"), within=10)
    assert span["agent"] == "Researcher"
    # Exactly the open spans of the hanging run; the finished run left nothing behind.
    kinds = sorted(s["kind"] for s in spans(sidecar))
    assert kinds == [
        "agent",
        "agent",
        "function",
        "response",
        "task",
        "task",
        "trace",
        "turn",
        "turn",
    ]
    assert processor.dropped_events == 0
    standin.release()
    assert run.wait() == "Briefing"
