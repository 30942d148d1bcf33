"""``make demo`` runs the demo module: it must show detection and recovery and exit 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_shows_detection_and_recovery() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTS_WATCHDOG_", "OPENAI_"))}
    result = subprocess.run(
        [sys.executable, "-m", "watchdog.demo"], capture_output=True, text=True, timeout=90, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "a 'response' span of agent 'Researcher' has been open" in out
    assert 'agents_watchdog_hung_spans{kind="response",service="demo-app"} 1.0' in out
    assert "sidecar log: event=span_hung, kind=response, agent=Researcher" in out
    assert "Recovered: the span ended after" in out
    assert "hung spans now: none" in out
    assert "[webhook] FIRING AgentSpanHung: demo-app: response span of agent 'Researcher'" in out
    assert "[webhook] RESOLVED AgentSpanHung" in out
    assert out.count("[webhook]") == 2
    assert "resolved  demo-app  response  Researcher" in out
    assert "the app caught RunAborted: agents-watchdog: response span" in out
    assert "ladder: terminate    sent       SIGTERM sent to pid" in out
    assert "ladder: terminate    succeeded" in out
    assert "the worker exited with status -15" in out
    assert "where it is stuck (the span's task, captured in the app):" in out
    assert "finding: AgentEventLoopBlocked" in out and "in crunch_numbers" in out
    assert "learned threshold for tool check_facts: 0.5 s (6 calls" in out
    assert "hung response span of agent 'Researcher' in demo-app" in out  # status command
    assert "(exit status 1)" in out and "live page: http://127.0.0.1:" in out
    assert "/v1/processes: pid" in out and "state=blind" in out
    assert "blind_reason: tracing is off: OPENAI_AGENTS_DISABLE_TRACING=1" in out
    assert 'agents_watchdog_processes{state="blind"} 1.0' in out
    assert "the app's stderr: agents-watchdog cannot watch" in out
    assert "probable cause: waiting on the model's HTTP response" in out
    assert "set a read timeout, e.g. httpx.Timeout(20, connect=5)" in out
    assert "ladder: timeout      succeeded  the span ended" in out
    assert "the run answered 'Done.' after" in out
    assert "Traceback" not in result.stderr
