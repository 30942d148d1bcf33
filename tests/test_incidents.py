"""Incident history: survives restarts (kill -9 included), reconciles, reads back whole,
and a broken database never stops detection."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agents_app import AppRun, coordinator_with_researcher
from tests.conftest import spans, thresholds, wait_until
from tests.launcher import SidecarProcess
from tests.receivers import Receiver
from watchdog.processor import WatchdogProcessor
from watchdog.sidecar.config import IncidentConfig
from watchdog.sidecar.incidents import IncidentStore
from watchdog.standin import StandInServer

Factory = Callable[..., SidecarProcess]
Watch = Callable[..., WatchdogProcessor]

CONFIG = (
    thresholds(response=1.5)
    + """
[incidents]
reconcile_seconds = 2
"""
)


def incidents(sidecar: SidecarProcess, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{sidecar.url}/v1/incidents", params=params, timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["incidents"]
    return result


def incident(sidecar: SidecarProcess, ident: int) -> dict[str, Any]:
    response = httpx.get(f"{sidecar.url}/v1/incidents/{ident}", timeout=5)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def cli(sidecar: SidecarProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchdog.cli", "incidents", "--url", sidecar.url, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.slow
def test_incident_survives_kill_and_continues_after_resync(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    with Receiver() as webhook:
        sidecar = sidecar_factory(
            CONFIG + f'[[alerts]]\ntype = "webhook"\nname = "ops"\nurl = "{webhook.url}"\n'
        )
        watch(sidecar.url, service="briefings")
        # One incident that is over before the restart ...
        done = AppRun(standin, coordinator_with_researcher(("slow=2.5", "reply=Found"))).start()
        assert done.wait() == "Briefing"
        # ... and one still open when the sidecar is killed.
        run = AppRun(standin, coordinator_with_researcher(("hang",))).start()
        webhook.wait_for(lambda b: [p["status"] for p in b] == ["firing", "resolved", "firing"])
        wait_until(lambda: len(incidents(sidecar, state="open")) == 1)
        before = {i["id"]: i for i in incidents(sidecar)}
        assert len(before) == 2

        sidecar.kill()
        sidecar.start()
        # The span comes back by resync, is flagged again, and continues its incident.
        wait_until(lambda: spans(sidecar, state="hung"))
        wait_until(
            lambda: any(
                e["event"] == "redetected" for e in incident(sidecar, max(before))["timeline"]
            )
        )
        standin.release()
        assert run.wait() == "Briefing"
        wait_until(lambda: not incidents(sidecar, state="open"))
        after = incidents(sidecar)
        assert sorted(i["id"] for i in after) == sorted(before)  # no new incident
        webhook.wait_for(lambda b: len(b) == 4)

    statuses = [p["status"] for p in webhook.bodies()]
    assert statuses == ["firing", "resolved", "firing", "resolved"]  # no re-fire after restart
    closed = incident(sidecar, max(before))
    assert closed["state"] == "resolved"
    assert closed["duration"] >= 1.5
    assert (closed["service"], closed["kind"], closed["agent"]) == (
        "briefings",
        "response",
        "Researcher",
    )
    events = [e["event"] for e in closed["timeline"]]
    assert (
        events[0] == "detected" and "redetected" in events and events[-1] in ("resolved", "alert")
    )
    deliveries = [e["detail"] for e in closed["timeline"] if e["event"] == "alert"]
    assert {(d["sink"], d["status"], d["outcome"]) for d in deliveries} == {
        ("ops", "firing", "sent"),
        ("ops", "resolved", "sent"),
    }
    earlier = incident(sidecar, min(before))
    assert earlier["state"] == "resolved" and earlier["duration"] >= 2.0
    assert [e["event"] for e in earlier["timeline"]][0] == "detected"

    table = cli(sidecar)
    assert table.returncode == 0, table.stderr
    assert "briefings" in table.stdout and "Researcher" in table.stdout
    shown = cli(sidecar, "show", str(max(before)))
    assert shown.returncode == 0 and "redetected" in shown.stdout
    listed = json.loads(cli(sidecar, "--json", "--since", "1h", "--service", "briefings").stdout)
    assert len(listed["incidents"]) == 2
    assert cli(sidecar, "show", "999").returncode == 1


@pytest.mark.slow
def test_incident_of_a_span_that_ended_while_the_sidecar_was_down(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(CONFIG)
    watch(sidecar.url)
    run = AppRun(standin, coordinator_with_researcher(("hang",))).start()
    wait_until(lambda: incidents(sidecar, state="open"))
    sidecar.kill()
    standin.release()
    assert run.wait() == "Briefing"
    sidecar.start()
    closed = wait_until(lambda: incidents(sidecar, state="resolved"), within=10)[0]
    assert closed["resolution"] == "ended while the sidecar was down; end time unknown"


def test_corrupt_database_is_reported_and_detection_goes_on(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch, tmp_path: Path
) -> None:
    database = tmp_path / "incidents.db"
    database.write_bytes(b"this is not a database" * 100)
    sidecar = sidecar_factory(CONFIG + f'path = "{database}"\n')
    problem = sidecar.wait_for("incident_store_unavailable", timeout=5)
    assert problem is not None and "not a database" in problem["error"]
    watch(sidecar.url)
    run = AppRun(standin, coordinator_with_researcher(("hang",))).start()
    assert wait_until(lambda: spans(sidecar, state="hung"))
    response = httpx.get(f"{sidecar.url}/v1/incidents")
    assert response.status_code == 503
    assert response.json()["error"] == "incidents_unavailable"
    assert str(database) in response.json()["detail"]
    standin.release()
    assert run.wait() == "Briefing"
    assert database.read_bytes().startswith(b"this is not a database")  # left as found


def test_unwritable_location_is_reported(sidecar_factory: Factory, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    sidecar = sidecar_factory(CONFIG + f'path = "{blocker}/incidents.db"\n')
    problem = sidecar.wait_for("incident_store_unavailable", timeout=5)
    assert problem is not None and "exists and is not a directory" in problem["error"]
    assert httpx.get(f"{sidecar.url}/healthz").status_code == 200


def test_retention_by_count_and_age(tmp_path: Path) -> None:
    path = str(tmp_path / "incidents.db")

    async def scenario() -> list[int]:
        store = IncidentStore(IncidentConfig(path=path, max_count=3, max_age_days=1))
        await store.open()

        def fill(db: Any) -> None:
            for index in range(6):
                detected = 0.0 if index == 0 else 2e9 + index  # the first is ancient
                db.execute(
                    "INSERT INTO incidents (key, alertname, state, severity, service, host, pid,"
                    " instance_id, trace_id, span_id, kind, name, threshold, started_at,"
                    " detected_at) VALUES (?, 'AgentSpanHung', ?, 'warning', 's', 'h', 1, 'i',"
                    " 't', ?, 'response', '', 1, 0, ?)",
                    (f"i/{index}", "open" if index == 1 else "resolved", f"s{index}", detected),
                )

        store.write(fill)
        store.prune()
        ids = await store.read(lambda db: [r[0] for r in db.execute("SELECT id FROM incidents")])
        await store.close()
        return ids

    # Closed ones beyond the newest three go, the ancient one goes, the open one stays.
    assert sorted(asyncio.run(scenario())) == [2, 4, 5, 6]


def test_incident_queries_are_validated(sidecar_factory: Factory) -> None:
    sidecar = sidecar_factory(CONFIG)
    for query, words in [
        ("state=stuck", "state must be one of"),
        ("limit=0", "limit must be"),
        ("since=yesterday", "since must be ISO 8601"),
        ("x=1", "unknown query"),
    ]:
        response = httpx.get(f"{sidecar.url}/v1/incidents?{query}")
        assert response.status_code == 400
        assert words in response.json()["detail"]
    assert httpx.get(f"{sidecar.url}/v1/incidents/abc").status_code == 400
    assert httpx.get(f"{sidecar.url}/v1/incidents/42").status_code == 404
    assert incidents(sidecar, since="2026-01-01T00:00:00Z") == []


def test_a_process_exiting_with_a_hung_span_says_so(sidecar_factory: Factory) -> None:
    """A clean exit with a hung span still open: nothing recovered, nothing 'ended while
    not reporting'; the log, the alert and the incident say the process exited."""
    from tests.wire_process import WireProcess, start

    with Receiver() as webhook:
        sidecar = sidecar_factory(
            thresholds(response=1) + f'[[alerts]]\ntype = "webhook"\nurl = "{webhook.url}"\n'
        )
        app = WireProcess(sidecar.url, service="leaver")
        app.send([start("span_left", "trace_left", "response", "model", 5.0)])
        wait_until(lambda: spans(sidecar, state="hung"))
        webhook.wait_for(lambda bodies: len(bodies) == 1)
        app.goodbye()
        resolved = webhook.wait_for(lambda bodies: len(bodies) == 2)[1]
        left = sidecar.wait_for("span_left_open", timeout=5)
    note = resolved["alerts"][0]["annotations"]["resolution"]
    assert note == "its process exited with the span still open", note
    assert left is not None and left["span_id"] == "span_left"
    assert not [e for e in sidecar.logs if e.get("event") == "span_recovered"]
    row = wait_until(lambda: [i for i in incidents(sidecar) if i["state"] != "open"])[0]
    assert row["resolution"] == "its process exited with the span still open"
