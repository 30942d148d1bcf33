"""Part three of the demo: rules that stop stuck runs. A hung model call is cancelled;
a tool that blocks its event loop is escalated to SIGTERM; a process whose tracing is
off is shown as blind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import httpx

from watchdog.demo.apps import ask_solo, watched
from watchdog.demo.narration import metric_lines, poll, say

__all__ = ["ABORT_CONFIG", "abort_ladder", "blind_process"]

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
    from watchdog.processor import RunAborted

    say("Part three: rules that stop stuck runs (cancel first, then SIGTERM, then SIGKILL).")
    with watched(ABORT_CONFIG) as (sidecar, processor):

        async def solo() -> str:
            try:
                await ask_solo(standin.url, "Solo", "standin:hang")  # no wrapper needed
                return "finished (unexpected)"
            except RunAborted as exc:
                return f"RunAborted: {exc}"

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
