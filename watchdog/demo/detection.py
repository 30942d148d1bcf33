"""Part one of the demo: a Researcher's model call hangs; the sidecar flags it within
seconds, shows where it is stuck and alerts; the call is released, the span recovers,
the alert resolves, a learned threshold shows, and the incident is recorded."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx

from watchdog.demo.apps import build_app
from watchdog.demo.narration import (
    WebhookReceiver,
    cause_of,
    incident_table,
    learned_row,
    metric_lines,
    poll,
    say,
    status_lines,
)

__all__ = ["DEMO_CONFIG", "WEBHOOK_SINK", "detection"]

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


def detection(standin: Any) -> bool:
    """Part one, against the Responses API stand-in ``standin``: True when detection and
    recovery were both shown."""
    from agents import Runner
    from openai import AsyncOpenAI

    from watchdog._sidecar_process import SidecarProcess
    from watchdog.processor import install

    with (
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
            return False
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
        cause = poll(lambda: cause_of(sidecar.url, span["span_id"]), within=5)
        if cause:
            say(f"   probable cause: {cause}")
        if stack:
            say("   where it is stuck (the span's task, captured in the app):")
            task_part = stack.split("\nThread ")[0].splitlines()
            for line in task_part[:1] + ["     ..."] + task_part[-6:]:
                say(f"     {line}")
        say(f"   live page: {sidecar.url}/ (the hung span is red there, with its stack)")
        say("   agents-watchdog status (exit 1: something needs attention):")
        code, lines = status_lines(sidecar.url)
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
            return False
        say(
            f"6. Recovered: the span ended after {recovered['duration_seconds']:.1f} s; "
            f"the app answered: {outcome['output']!r}"
        )
        processor.force_flush()
        learned = poll(lambda: learned_row(sidecar.url, "check_facts"), within=5)
        if not learned:
            say("FAILED: the fact checker's threshold was not learned.")
            return False
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
        for line in incident_table(listing):
            say(f"     {line}")
        processor.shutdown()
        if not (still_hung and resolved and listing and listing[0]["state"] == "resolved"):
            say("FAILED: the alert did not resolve or the incident was not recorded.")
            return False
    return True
