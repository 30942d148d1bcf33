"""The abort table's rows for streamed runs, ``run_sync`` from a thread pool and
containers (split from ``test_abort_semantics.py`` so both halves run side by side)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import thresholds, wait_until
from tests.test_abort_semantics import Apps, Factory, check_row, outcome_of
from watchdog.standin import StandInServer

TOKEN = "semantics-token"


@pytest.mark.parametrize(
    ("row", "kind", "model_request_hangs"),
    [
        ("streamed-response", "response", True),
        ("streamed-function", "function", False),
        ("run-sync-pool", "response", True),
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


@pytest.mark.parametrize("target", ["agent", "trace"])
def test_an_operator_cancelling_a_container_ends_the_run_with_run_aborted(
    target: str, standin: StandInServer, sidecar_factory: Factory, apps: Apps
) -> None:
    sidecar = sidecar_factory(thresholds(), env={"AGENTS_WATCHDOG_TOKEN": TOKEN})
    app = apps(
        "container",
        sidecar.url,
        standin.url,
        module="tests.abort_app",
        env={"AGENTS_WATCHDOG_TOKEN": TOKEN},
    )
    auth = {"authorization": f"Bearer {TOKEN}"}

    def open_spans(kind: str) -> list[dict[str, Any]]:
        listing = httpx.get(f"{sidecar.url}/v1/spans", headers=auth, timeout=5)
        return [s for s in listing.json()["spans"] if s["kind"] == kind]

    span = wait_until(lambda: open_spans(target))[0]
    wait_until(lambda: open_spans("function"))  # the run is stuck in its tool
    reply = httpx.post(
        f"{sidecar.url}/v1/spans/{span['span_id']}/abort",
        json={"action": "cancel"},
        headers=auth,
        timeout=5,
    )
    assert reply.status_code == 202, reply.text
    seen = outcome_of(app)
    assert seen["outcome"] == "RunAborted", seen
    assert f"{target} span" in seen["detail"] and "requested by operator" in seen["detail"]
