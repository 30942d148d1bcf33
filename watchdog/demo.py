"""``make demo``: a real multi-agent app hangs, and the sidecar says so within seconds.

What runs, all on loopback, no API key and no network:
- a stand-in for the OpenAI Responses API (``watchdog.standin``);
- the sidecar, ``agents-watchdog serve``, as a child process with short demo thresholds;
- an openai-agents app: a Coordinator that asks a Researcher sub-agent (as a tool) and
  a Fact-checker tool; the Researcher's model request never returns.

The demo prints what the operator would see — the hung span in ``/v1/spans``, the
Prometheus metrics, the sidecar's log line, the alert arriving at a webhook receiver —
then releases the stuck request and shows the span recovering, the alert resolving and
the incident recorded. It exits 0 when every step happened as described.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from typing import Any

import httpx

DEMO_CONFIG = """\
# Short thresholds so the demo takes seconds; production defaults are minutes.
[thresholds]
default = 5
response = 2
function = 3
agent = 8
turn = 8
task = 8
trace = 8

[incidents]
reconcile_seconds = 5

[[rules]]                 # the fact checker's threshold follows its normal durations
kind = "function"
name = "check_facts"
threshold = "auto"
floor = 0.5
min_samples = 5
"""
WEBHOOK_SINK = """
[[alerts]]
type = "webhook"
name = "demo-receiver"
url = "{url}"
"""

RESEARCHER_SCRIPT = "standin:hang"
COORDINATOR_SCRIPT = "standin:tool=check_facts*6;tool=ask_researcher;reply=Here is your briefing."


def say(text: str = "") -> None:
    """Print one line of the demo's narration, at once."""
    print(text, flush=True)


def build_app(model_client: Any, researcher_script: str = RESEARCHER_SCRIPT) -> Any:
    """The demo's agents: a Coordinator using a Researcher sub-agent and a tool. The
    Researcher's model follows ``researcher_script`` (by default: it hangs)."""
    from agents import Agent, OpenAIResponsesModel, function_tool

    def model(script: str) -> OpenAIResponsesModel:
        return OpenAIResponsesModel(model=script, openai_client=model_client)

    @function_tool
    async def check_facts(claim: str) -> str:
        """Check a claim against the fact base."""
        await asyncio.sleep(0.05)
        return "confirmed"

    researcher = Agent(
        name="Researcher",
        instructions="Research the question thoroughly.",
        model=model(researcher_script),
    )
    return Agent(
        name="Coordinator",
        instructions="Answer with help from your researcher.",
        model=model(COORDINATOR_SCRIPT),
        tools=[
            check_facts,
            researcher.as_tool(
                tool_name="ask_researcher", tool_description="Ask the Researcher a question."
            ),
        ],
    )


class WebhookReceiver:
    """A local stand-in for the team's alert receiver: prints each alert it gets."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.payloads: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                payload = json.loads(body)
                receiver.payloads.append(payload)
                alert = payload["alerts"][0]
                say(
                    f"   [webhook] {payload['status'].upper()} {alert['labels']['alertname']}: "
                    f"{alert['annotations']['summary']}"
                    + (
                        f" ({alert['annotations']['resolution']})"
                        if payload["status"] == "resolved"
                        else ""
                    )
                )
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def statuses(self) -> list[str]:
        """Statuses of the payloads received so far."""
        return [p["status"] for p in self.payloads]


def poll(check: Callable[[], Any], within: float, every: float = 0.1) -> Any:
    """Call ``check`` until it returns something truthy or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(every)


def metric_lines(sidecar_url: str, *names: str) -> list[str]:
    """The sample lines of the named metrics, as Prometheus would scrape them."""
    text = httpx.get(f"{sidecar_url}/metrics", timeout=5).text
    return [line for line in text.splitlines() if line.startswith(names) and "} 0.0" not in line]


def main() -> int:
    """Run the demo; returns 0 when detection and recovery were both shown."""
    from agents import Runner
    from openai import AsyncOpenAI

    from watchdog._sidecar_process import SidecarProcess
    from watchdog.processor import install
    from watchdog.standin import StandInServer

    say("agents-watchdog demo: a multi-agent app hangs; the sidecar notices.")
    say()
    with (
        StandInServer() as standin,
        WebhookReceiver() as webhook,
        SidecarProcess(DEMO_CONFIG + WEBHOOK_SINK.format(url=webhook.url)) as sidecar,
    ):
        say(f"1. Sidecar listening at {sidecar.url} (response threshold 2 s for the demo).")
        say(f"   Responses API stand-in at {standin.url}: the Researcher's request will hang.")
        say(f"   Alerts go to a webhook receiver at {webhook.url}.")
        processor = install(url=sidecar.url, service="demo-app", replace_default=True)
        say("2. App started with one line: install(url=..., service='demo-app').")

        async def run_app() -> str:
            client = AsyncOpenAI(base_url=f"{standin.url}/v1", api_key="demo", max_retries=0)
            try:
                result = await Runner.run(build_app(client), "Brief me on the quarterly numbers.")
                return str(result.final_output)
            finally:
                await client.close()

        outcome: dict[str, Any] = {}

        def in_thread() -> None:
            try:
                outcome["output"] = asyncio.run(run_app())
            except Exception as exc:  # reported below, the demo then fails
                outcome["error"] = exc

        app = threading.Thread(target=in_thread, name="demo-app")
        started = time.monotonic()
        app.start()
        say("3. Coordinator runs: checks a fact, then asks the Researcher ...")

        def hung_response() -> dict[str, Any] | None:
            spans = httpx.get(f"{sidecar.url}/v1/spans?state=hung", timeout=5).json()["spans"]
            return next((s for s in spans if s["kind"] == "response"), None)

        span = poll(hung_response, within=15)
        if not span:
            say("FAILED: the hung span was not flagged.")
            standin.release()
            app.join(10)
            return 1
        say(
            f"4. Flagged {time.monotonic() - started:.1f} s after the run began: "
            f"a '{span['kind']}' span of agent '{span['agent']}' has been open "
            f"{span['age_seconds']:.1f} s (threshold {span['threshold_seconds']:g} s)."
        )
        say(f"   service={span['service']} pid={span['pid']} host={span['host']}")
        say(f"   trace={span['trace_id']} span={span['span_id']}")
        entry = sidecar.wait_for("span_hung", timeout=5)
        if entry is not None:
            say(
                "   sidecar log: "
                + ", ".join(f"{k}={entry[k]}" for k in ("event", "kind", "agent", "age_seconds"))
            )
        poll(lambda: "firing" in webhook.statuses(), within=5)

        def stack_of_span() -> str | None:
            listing = httpx.get(f"{sidecar.url}/v1/spans?state=hung", timeout=5).json()["spans"]
            found = next((s for s in listing if s["span_id"] == span["span_id"]), None)
            return found["stack"] if found else None

        stack = poll(stack_of_span, within=5)
        cause = poll(lambda: _cause_of(sidecar.url, span["span_id"]), within=5)
        if cause:
            say(f"   probable cause: {cause}")
        if stack:
            say("   where it is stuck (the span's task, captured in the app):")
            task_part = stack.split("\nThread ")[0].splitlines()
            for line in task_part[:1] + ["     ..."] + task_part[-6:]:
                say(f"     {line}")
        say(f"   live page: {sidecar.url}/ (the hung span is red there, with its stack)")
        say("   agents-watchdog status (exit 1: something needs attention):")
        code, lines = _status_lines(sidecar.url)
        for line in lines:
            say(f"     {line}")
        say(f"     (exit status {code})")
        say("   /metrics:")
        for line in metric_lines(
            sidecar.url, "agents_watchdog_hung_spans", "agents_watchdog_oldest_open_span_age"
        ):
            say(f"     {line}")

        say("5. The stuck request is released (as when the upstream finally answers) ...")
        standin.release()
        app.join(15)
        recovered = sidecar.wait_for(
            "span_recovered", timeout=10, where=lambda e: e.get("span_id") == span["span_id"]
        )
        if "error" in outcome or recovered is None:
            say(f"FAILED: the run did not finish cleanly ({outcome.get('error')!r}).")
            return 1
        say(
            f"6. Recovered: the span ended after {recovered['duration_seconds']:.1f} s; "
            f"the app answered: {outcome['output']!r}"
        )
        processor.force_flush()
        learned = poll(lambda: _learned_row(sidecar.url, "check_facts"), within=5)
        if not learned:
            say("FAILED: the fact checker's threshold was not learned.")
            return 1
        if learned:
            detail = learned["learning"]
            say(
                f"   learned threshold for tool check_facts: {learned['threshold_seconds']:g} s "
                f"({detail['samples']} calls, p99 {detail['observed_seconds']:.2f} s x "
                f"{detail['factor']:g}, held at the {detail['clamped'] or 'computed'} value; "
                f"GET /v1/thresholds)"
            )
        still_hung = poll(
            lambda: not httpx.get(f"{sidecar.url}/v1/spans?state=hung", timeout=5).json()["spans"],
            within=5,
        )
        say(f"   hung spans now: {'none' if still_hung else 'some (unexpected)'}")
        resolved = poll(lambda: "resolved" in webhook.statuses(), within=5)
        say("7. Incident history (agents-watchdog incidents):")
        listing = httpx.get(f"{sidecar.url}/v1/incidents", timeout=5).json()["incidents"]
        for line in _table(listing):
            say(f"     {line}")
        processor.shutdown()
        if not (still_hung and resolved and listing and listing[0]["state"] == "resolved"):
            say("FAILED: the alert did not resolve or the incident was not recorded.")
            return 1
        say()
        if not heal_by_timeout(standin):
            return 1
        say()
        if not abort_ladder(standin):
            return 1
    say()
    say(
        "Demo complete: detection, stacks, metrics, alerts, recovery, a learned threshold, "
        "incident history, a call healed by timeout, the abort ladder, a blocked-loop "
        "finding and a blind process shown."
    )
    return 0


HEAL_CONFIG = """\
[thresholds]
response = 2

[abort]
grace_seconds = 5

[[rules]]                 # a stuck model call: fail it as a read timeout would, then retry
kind = "response"
action = "timeout"
"""


def heal_by_timeout(standin: Any) -> bool:
    """Part two: the gentlest rung. True when the hung call healed into its retry."""
    from agents import Agent, OpenAIResponsesModel, Runner
    from agents.tracing import set_trace_processors
    from openai import AsyncOpenAI

    from watchdog._sidecar_process import SidecarProcess
    from watchdog.processor import WatchdogProcessor

    say("Part two: heal before stopping.")
    with SidecarProcess(HEAL_CONFIG) as sidecar:
        processor = WatchdogProcessor(sidecar.url, service="demo-app")
        set_trace_processors([processor])

        async def once_hung() -> str:
            # The OpenAI client's own retries (max_retries=2) take over after the timeout.
            client = AsyncOpenAI(base_url=f"{standin.url}/v1", api_key="demo", max_retries=2)
            agent = Agent(
                name="Analyst",
                instructions="Answer.",
                model=OpenAIResponsesModel(model="standin:hang=once", openai_client=client),
            )
            try:
                result = await Runner.run(agent, "Summarise the backlog.")
                return str(result.final_output)
            finally:
                await client.close()

        say("8. A model call hangs once (its retry would answer); its rule says timeout ...")
        started = time.monotonic()
        answer = asyncio.run(once_hung())
        took = time.monotonic() - started
        processor.force_flush()
        sidecar.wait_for(
            "abort_step", timeout=5, where=lambda e: e.get("outcome") in ("succeeded", "timed_out")
        )
        processor.shutdown()
        hung = sidecar.wait_for("span_hung", timeout=5)
        cause = sidecar.wait_for("span_stack", timeout=5)
        steps = [e for e in sidecar.logs if e.get("event") == "abort_step"]
        if hung is not None and cause is not None and cause.get("cause"):
            say(f"   probable cause (in the alert): {cause['cause']}")
        for entry in steps:
            say(f"   ladder: {entry['step']:<12} {entry['outcome']:<10} {entry['detail']}")
        say(
            f"   the run answered {answer!r} after {took:.1f} s: the stuck read failed as a "
            "timeout, the client retried, nobody was paged for an error"
        )
        return (
            bool(steps) and steps[-1]["step"] == "timeout" and steps[-1]["outcome"] == "succeeded"
        )


ABORT_CONFIG = """\
[thresholds]
response = 2
function = 2
agent = 30
turn = 30
task = 30
trace = 30

[abort]
grace_seconds = 1.5

[[rules]]                 # a stuck model call: cancel the run cooperatively
kind = "response"
action = "cancel"

[[rules]]                 # a tool that blocks the event loop: escalate to SIGTERM
kind = "function"
name = "crunch_numbers"
action = "terminate"
"""


def abort_ladder(standin: Any) -> bool:
    """Part two: rules that end stuck runs. True when both cases ended as described."""
    from agents import Agent, OpenAIResponsesModel, Runner
    from agents.tracing import set_trace_processors
    from openai import AsyncOpenAI

    from watchdog._sidecar_process import SidecarProcess
    from watchdog.processor import RunAborted, WatchdogProcessor

    say("Part three: rules that stop stuck runs (cancel first, then SIGTERM, then SIGKILL).")
    with SidecarProcess(ABORT_CONFIG) as sidecar:
        processor = WatchdogProcessor(sidecar.url, service="demo-app")
        set_trace_processors([processor])

        async def solo() -> str:
            client = AsyncOpenAI(base_url=f"{standin.url}/v1", api_key="demo", max_retries=0)
            agent = Agent(
                name="Solo",
                instructions="Answer.",
                model=OpenAIResponsesModel(model="standin:hang", openai_client=client),
            )
            try:
                await Runner.run(agent, "Summarise the backlog.")  # no wrapper needed
                return "finished (unexpected)"
            except RunAborted as exc:
                return f"RunAborted: {exc}"
            finally:
                await client.close()

        say("9. An agent's model call hangs; its rule says cancel: the run ends ...")
        outcome = asyncio.run(solo())
        say(f"   the app caught {outcome}")
        processor.shutdown()
        cancelled = outcome.startswith("RunAborted")

        say("10. In another process, a tool blocks the event loop with time.sleep; its rule")
        say("   says terminate. Cancelling cannot work there, so the ladder escalates ...")
        worker = subprocess.Popen(
            [sys.executable, "-m", "watchdog.demo", "worker", sidecar.url, standin.url],
            stdout=subprocess.DEVNULL,
        )
        try:
            status = worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            status = worker.wait()
        sidecar.wait_for(
            "abort_step",
            timeout=5,
            where=lambda e: e.get("pid") == worker.pid and e.get("outcome") == "succeeded",
        )
        blocked = next(
            (
                e
                for e in sidecar.logs
                if e.get("event") == "event_loop_blocked" and e.get("pid") == worker.pid
            ),
            None,
        )
        if blocked is not None:
            say(
                f"   finding: AgentEventLoopBlocked, the loop lagging {blocked['lag_seconds']:.1f} s;"
                " its thread is at:"
            )
            for line in (blocked.get("stack") or "").splitlines()[-4:]:
                say(f"     {line}")
        for entry in sidecar.logs:
            if entry.get("event") == "abort_step" and entry.get("pid") == worker.pid:
                say(f"   ladder: {entry['step']:<12} {entry['outcome']:<10} {entry['detail']}")
        say(f"   the worker exited with status {status} (-15: ended by SIGTERM)")
        seen_blind = blind_process(sidecar.url, standin.url)
        return cancelled and status == -signal.SIGTERM and blocked is not None and seen_blind


def blind_process(sidecar_url: str, standin_url: str) -> bool:
    """Step 10: a process with the SDK's tracing off is shown as blind, never as healthy."""
    say("11. A third process runs with OPENAI_AGENTS_DISABLE_TRACING=1; its model call hangs")
    say("    where no processor can see it. The watchdog says so instead of staying quiet ...")
    env = {**os.environ, "OPENAI_AGENTS_DISABLE_TRACING": "1"}
    untraced = subprocess.Popen(
        [sys.executable, "-m", "watchdog.demo", "untraced", sidecar_url, standin_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:

        def blind() -> dict[str, Any] | None:
            listed = httpx.get(f"{sidecar_url}/v1/processes", timeout=5).json()["processes"]
            return next((p for p in listed if p["state"] == "blind"), None)

        found = poll(blind, within=10)
        if found is None:
            say("FAILED: the untraced process was not shown as blind.")
            return False
        say(f"    /v1/processes: pid {found['pid']} state=blind")
        say(f"      blind_reason: {found['blind_reason']}")
        for line in metric_lines(sidecar_url, "agents_watchdog_processes"):
            if 'state="blind"' in line:
                say(f"    /metrics: {line}")
    finally:
        untraced.kill()
        _, err = untraced.communicate(timeout=10)
    warning = next((line for line in err.splitlines() if "cannot watch" in line), None)
    say(f"    the app's stderr: {warning}")
    return warning is not None


def untraced(sidecar_url: str, standin_url: str) -> None:
    """The process of step 10: tracing off (by the environment), a model call that hangs."""
    from agents import Agent, OpenAIResponsesModel, Runner
    from openai import AsyncOpenAI

    from watchdog.processor import install

    async def run() -> None:
        install(url=sidecar_url, service="demo-untraced")
        client = AsyncOpenAI(base_url=f"{standin_url}/v1", api_key="demo", max_retries=0)
        agent = Agent(
            name="Unseen",
            instructions="Answer.",
            model=OpenAIResponsesModel(model="standin:hang", openai_client=client),
        )
        await Runner.run(agent, "Summarise the backlog.")

    asyncio.run(run())


def worker(sidecar_url: str, standin_url: str) -> None:
    """The process of part two's step 9: its only tool blocks the event loop."""
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool
    from openai import AsyncOpenAI

    from watchdog.processor import install

    @function_tool
    async def crunch_numbers(quarter: str) -> str:
        """Crunch the quarter's numbers."""
        time.sleep(600)  # noqa: ASYNC251 - sync code in an async tool: the bug shown here
        return "done"

    async def run() -> None:
        install(url=sidecar_url, service="demo-worker", replace_default=True)
        client = AsyncOpenAI(base_url=f"{standin_url}/v1", api_key="demo", max_retries=0)
        agent = Agent(
            name="Cruncher",
            instructions="Crunch.",
            model=OpenAIResponsesModel(
                model="standin:tool=crunch_numbers;reply=Done", openai_client=client
            ),
            tools=[crunch_numbers],
        )
        await Runner.run(agent, "Crunch Q3.")

    asyncio.run(run())


def _cause_of(sidecar_url: str, span_id: str) -> str | None:
    listing = httpx.get(f"{sidecar_url}/v1/spans", timeout=5).json()["spans"]
    found = next((s for s in listing if s["span_id"] == span_id), None)
    return None if found is None else found.get("cause")


def _status_lines(sidecar_url: str) -> tuple[int, list[str]]:
    """What ``agents-watchdog status`` prints for the sidecar, and its exit status."""
    from watchdog.cli import main as cli

    captured = io.StringIO()
    with redirect_stdout(captured):
        code = cli(["status", "--url", sidecar_url, "--limit", "3"])
    return code, [line.rstrip() for line in captured.getvalue().splitlines() if line.strip()]


def _learned_row(sidecar_url: str, name: str) -> dict[str, Any] | None:
    rows = httpx.get(f"{sidecar_url}/v1/thresholds", timeout=5).json()["thresholds"]
    return next((r for r in rows if r["name"] == name and r["source"] == "learned"), None)


def _table(incidents: list[dict[str, Any]]) -> list[str]:
    from watchdog.incidents_cli import print_table

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        print_table(incidents)
    return buffer.getvalue().splitlines()


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["untraced"]:
        untraced(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
