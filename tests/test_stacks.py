"""Where is it stuck: stacks from the app itself, and from py-spy when it cannot answer."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable

import httpx
import pytest

from tests.agents_app import AppRun, Gate, agent_with_tool
from tests.conftest import need_tool, spans, wait_until
from tests.receivers import Receiver
from watchdog.processor import WatchdogProcessor
from watchdog.sidecar.launcher import SidecarProcess
from watchdog.standin import StandInServer

Factory = Callable[..., SidecarProcess]
Watch = Callable[..., WatchdogProcessor]
CONFIG = """
[thresholds]
function = 1.5
response = 60
agent = 60
turn = 60
task = 60
trace = 60
"""


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
