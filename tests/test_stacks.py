"""Where is it stuck: stacks from the app itself, and from py-spy when it cannot answer."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable

import httpx
import pytest

from tests.agents_app import AppRun, Gate, agent_with_tool
from tests.conftest import need_tool, spans, thresholds, wait_until
from tests.launcher import SidecarProcess
from tests.receivers import Receiver
from watchdog._stacks import bounded
from watchdog.processor import WatchdogProcessor
from watchdog.protocol import MAX_STACK_LENGTH
from watchdog.standin import StandInServer

Factory = Callable[..., SidecarProcess]
Watch = Callable[..., WatchdogProcessor]
CONFIG = thresholds(function=1.5)


def test_hung_tool_stack_shows_the_awaiting_line(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    gate = Gate()

    async def fetch_report_body() -> str:
        await gate.wait()  # <- where it is stuck
        return "report"

    with Receiver() as webhook:
        sidecar = sidecar_factory(CONFIG + f'[[alerts]]\ntype = "webhook"\nurl = "{webhook.url}"\n')
        watch(sidecar.url)
        run = AppRun(
            standin, agent_with_tool(("tool=fetch_report", "reply=Done"), fetch_report_body)
        ).start()
        span = wait_until(
            lambda: next((s for s in spans(sidecar, state="hung") if s["stack"]), None)
        )
        assert span["stack_source"] == "in-process"
        stack = span["stack"]
        assert stack.startswith("Task ")
        assert "in fetch_report_body" in stack and "await gate.wait()" in stack
        assert "tests/agents_app.py" in stack and "await self._event.wait()" in stack
        assert "Thread 'agents-app'" in stack
        logged = sidecar.wait_for("span_stack", timeout=1)
        assert logged is not None and logged["source"] == "in-process"
        gate.open()
        assert run.wait() == "Done"
        resolved = webhook.wait_for(lambda b: len(b) == 2)[1]
    assert "await gate.wait()" in resolved["alerts"][0]["annotations"]["stack"]
    incident = httpx.get(f"{sidecar.url}/v1/incidents").json()["incidents"][0]
    timeline = httpx.get(f"{sidecar.url}/v1/incidents/{incident['id']}").json()["timeline"]
    stacks = [e["detail"] for e in timeline if e["event"] == "stacks"]
    assert stacks and stacks[0]["source"] == "in-process" and "gate.wait" in stacks[0]["stack"]


@pytest.mark.slow
def test_a_process_that_cannot_answer_is_dumped_by_py_spy(
    standin: StandInServer, sidecar_factory: Factory, apps: Callable[..., subprocess.Popen[str]]
) -> None:
    need_tool("py-spy", "out-of-process stacks")
    sidecar = sidecar_factory(CONFIG)
    app = apps("blocking", sidecar.url, standin.url)
    try:
        wait_until(lambda: [s for s in spans(sidecar) if s["kind"] == "function"])
        app.send_signal(signal.SIGSTOP)  # it can no longer answer anything
        span = wait_until(
            lambda: next((s for s in spans(sidecar, state="hung") if s["stack_source"]), None),
            within=30,
        )
        assert span["stack_source"] == "py-spy", span
        assert "crunch" in span["stack"] and "app_process.py" in span["stack"]
        logged = sidecar.wait_for("span_stack", timeout=1)
        assert logged is not None and "py-spy" in logged["note"]
    finally:
        app.send_signal(signal.SIGCONT)


@pytest.mark.slow
def test_a_hung_model_call_in_an_app_process_alerts_with_its_call_chain(
    standin: StandInServer, sidecar_factory: Factory, apps: Callable[..., subprocess.Popen[str]]
) -> None:
    with Receiver() as webhook:
        sidecar = sidecar_factory(
            CONFIG.replace("response = 60", "response = 1.5")
            + f'[[alerts]]\ntype = "webhook"\nurl = "{webhook.url}"\n'
        )
        app = apps("hang", sidecar.url, standin.url)
        firing = webhook.wait_for(lambda bodies: len(bodies) >= 1)[0]["alerts"][0]
    labels, stack = firing["labels"], firing["annotations"]["stack"]
    assert (labels["alertname"], labels["kind"], labels["agent"]) == (
        "AgentSpanHung",
        "response",
        "Researcher",
    )
    assert labels["pid"] == str(app.pid)
    # The first message already says where: the awaiting chain from the Coordinator's
    # tool call down through the sub-agent's run into the OpenAI client's HTTP read.
    assert stack.startswith("Task "), stack
    chain = [
        "in hung_model_call",  # the app's own code, outermost
        "in _run_agent_impl",  # the Coordinator's tool running the Researcher
        "(the span's task)",
        "in run_single_turn",
        "openai/_base_client.py",
        "in handle_async_request",  # the HTTP read that never returns
    ]
    position = 0
    for frame in chain:  # each one below the one before
        position = stack.find(frame, position)
        assert position >= 0, (frame, stack)


def test_a_long_stack_is_cut_in_the_middle_keeping_both_ends() -> None:
    text = "Task 'outer'\n" + "  File 'x.py', line 1, in f\n" * 5_000 + "    await read()  # stuck"
    cut = bounded(text)
    assert len(cut) <= MAX_STACK_LENGTH < len(text)
    assert cut.startswith("Task 'outer'\n") and cut.endswith("await read()  # stuck")
    assert "characters omitted" in cut
    assert bounded("short") == "short"
