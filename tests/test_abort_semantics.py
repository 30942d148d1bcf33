"""One abort semantics, every row of the table in docs/abort.md: a real app process
(``tests.abort_app``) whose span of one kind hangs, a real sidecar whose rule cancels
it, and the one outcome its caller may see — ``RunAborted``, an ``Exception``, from
``Runner.run``, ``Runner.run_sync`` or ``stream_events()``; never a bare
``CancelledError``, never a run that looks as if it had succeeded."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import metric, spans, thresholds, wait_until
from tests.launcher import SidecarProcess
from watchdog.standin import StandInServer

Factory = Callable[..., SidecarProcess]
Apps = Callable[..., subprocess.Popen[str]]
TOKEN = "semantics-token"

# Every leaf kind flagged after 1.5 s and cancelled; containers never flagged by time.
# The grace is longer than any wait here: the first step is taken as the span is
# flagged, and only the steps after it wait for the grace.
CANCEL_ANY = (
    thresholds(response=1.5, function=1.5, guardrail=1.5, handoff=1.5)
    + """
[abort]
grace_seconds = 60
[[rules]]
action = "cancel"
"""
)


def outcome_of(app: subprocess.Popen[str], within: float = 20.0) -> dict[str, Any]:
    """The JSON line the app prints once its run is over."""
    lines: list[str] = []
    assert app.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(app.stdout or ()), daemon=True)
    reader.start()
    reader.join(within)
    assert not reader.is_alive(), "the app's run did not end"
    assert app.wait(5) == 0, lines
    found: dict[str, Any] = json.loads(next(line for line in lines if line.startswith("{")))
    return found


def ladder(sidecar: SidecarProcess) -> list[tuple[str, str]]:
    return [(e["step"], e["outcome"]) for e in sidecar.logs if e.get("event") == "abort_step"]


@pytest.mark.parametrize(
    ("row", "kind", "model_request_hangs"),
    [
        ("response", "response", True),
        ("sub-agent", "response", True),
        ("function", "function", False),
        ("mcp", "function", False),
        ("guardrail", "guardrail", False),
        ("handoff", "handoff", False),
    ],
)
def test_a_cancelled_span_ends_its_run_with_run_aborted(
    row: str,
    kind: str,
    model_request_hangs: bool,
    standin: StandInServer,
    sidecar_factory: Factory,
    apps: Apps,
) -> None:
    check_row(row, kind, model_request_hangs, standin, sidecar_factory, apps)


def check_row(
    row: str,
    kind: str,
    model_request_hangs: bool,
    standin: StandInServer,
    sidecar_factory: Factory,
    apps: Apps,
) -> None:
    """Run one row of the table and check its caller saw RunAborted."""
    sidecar = sidecar_factory(CANCEL_ANY)
    app = apps(row, sidecar.url, standin.url, module="tests.abort_app")
    wait_until(lambda: [s for s in spans(sidecar) if s["kind"] == kind], within=10)
    seen = outcome_of(app)
    assert seen["outcome"] == "RunAborted", seen
    assert f"{kind} span" in seen["detail"] and "cancel requested by rule" in seen["detail"]
    if row.startswith("streamed"):
        assert seen["on_result"] == seen["detail"]  # the result says so too
    if model_request_hangs:
        # The stuck HTTP read was dropped with the cancelled task, not left behind.
        wait_until(lambda: standin.hanging == 0)
    wait_until(lambda: ("cancel", "succeeded") in ladder(sidecar))
    assert ladder(sidecar) == [("cancel", "requested"), ("cancel", "succeeded")]
    assert metric(sidecar, "agents_watchdog_aborts_total", action="cancel", outcome="succeeded")
