"""Process liveness with real app processes: a process that stops reporting is
unresponsive; one that dies leaves orphaned spans, which alert and then age out."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import metric, spans, thresholds, wait_until
from tests.launcher import SidecarProcess
from tests.receivers import Receiver
from watchdog.standin import StandInServer

Factory = Callable[..., SidecarProcess]
CONFIG = (
    thresholds(function=1.5)
    + """
[processes]
unresponsive_after = 2
orphan_retention = 3
"""
)

pytestmark = pytest.mark.slow


def alerts(receiver: Receiver) -> list[tuple[str, str]]:
    return [(p["alerts"][0]["labels"]["alertname"], p["status"]) for p in receiver.bodies()]


def test_a_killed_process_leaves_orphans_that_alert_then_age_out(
    standin: StandInServer, sidecar_factory: Factory, apps: Callable[..., subprocess.Popen[str]]
) -> None:
    with Receiver() as webhook:
        sidecar = sidecar_factory(CONFIG + f'[[alerts]]\ntype = "webhook"\nurl = "{webhook.url}"\n')
        process = apps("blocking", sidecar.url, standin.url)
        hung = wait_until(lambda: spans(sidecar, state="hung"))
        open_before = {s["span_id"] for s in spans(sidecar)}
        process.send_signal(signal.SIGKILL)
        process.wait(10)

        died = sidecar.wait_for("process_died", timeout=15)
        assert died is not None and died["pid"] == process.pid
        assert died["orphaned_spans"] == len(open_before)
        orphans = spans(sidecar, state="orphaned")
        assert {s["span_id"] for s in orphans} == open_before
        assert spans(sidecar, state="hung") == []
        assert metric(sidecar, "agents_watchdog_processes", state="dead") == 1
        assert (
            metric(
                sidecar, "agents_watchdog_orphaned_spans_total", kind="function", service="worker"
            )
            == 1
        )
        assert (
            metric(sidecar, "agents_watchdog_open_spans", kind="function", service="worker") is None
        )
        incident = httpx.get(f"{sidecar.url}/v1/incidents").json()["incidents"][0]
        assert incident["span_id"] == hung[0]["span_id"]
        wait_until(
            lambda: (
                httpx.get(f"{sidecar.url}/v1/incidents").json()["incidents"][0]["state"]
                == "orphaned"
            )
        )
        # After the retention the dead process is forgotten and its orphan alert resolves.
        wait_until(lambda: ("AgentSpansOrphaned", "resolved") in alerts(webhook), within=10)
        assert spans(sidecar) == []
        assert metric(sidecar, "agents_watchdog_processes", state="dead") == 0
    sequence = alerts(webhook)
    assert sequence.index(("AgentSpanHung", "firing")) < sequence.index(
        ("AgentSpanHung", "resolved")
    )
    assert ("AgentSpansOrphaned", "firing") in sequence
    resolved = next(
        p
        for p in webhook.bodies()
        if p["status"] == "resolved" and p["alerts"][0]["labels"]["alertname"] == "AgentSpanHung"
    )
    assert resolved["alerts"][0]["annotations"]["resolution"] == "its process died"


def test_a_stopped_process_is_unresponsive_until_it_continues(
    standin: StandInServer, sidecar_factory: Factory, apps: Callable[..., subprocess.Popen[str]]
) -> None:
    with Receiver() as webhook:
        sidecar = sidecar_factory(CONFIG + f'[[alerts]]\ntype = "webhook"\nurl = "{webhook.url}"\n')
        process = apps("blocking", sidecar.url, standin.url)
        wait_until(lambda: spans(sidecar, state="hung"))
        before = {s["span_id"] for s in spans(sidecar)}
        process.send_signal(signal.SIGSTOP)
        try:
            assert sidecar.wait_for("process_unresponsive", timeout=15) is not None
            assert metric(sidecar, "agents_watchdog_processes", state="unresponsive") == 1
            wait_until(lambda: ("AgentProcessUnresponsive", "firing") in alerts(webhook))
            assert spans(sidecar, state="hung")  # a stopped process is not a dead one
        finally:
            process.send_signal(signal.SIGCONT)
        assert sidecar.wait_for("process_responsive", timeout=15) is not None
        wait_until(lambda: ("AgentProcessUnresponsive", "resolved") in alerts(webhook))
        assert not [e for e in sidecar.logs if e.get("event") == "process_died"]
        assert {s["span_id"] for s in spans(sidecar)} == before  # nothing lost meanwhile


def test_a_clean_exit_is_not_a_death(
    standin: StandInServer, sidecar_factory: Factory, apps: Callable[..., subprocess.Popen[str]]
) -> None:
    with Receiver() as webhook:
        sidecar = sidecar_factory(CONFIG + f'[[alerts]]\ntype = "webhook"\nurl = "{webhook.url}"\n')
        process = apps("quick", sidecar.url, standin.url)
        assert process.wait(20) == 0
        left = sidecar.wait_for("process_left", timeout=10)
        assert left is not None and left["pid"] == process.pid
        assert metric(sidecar, "agents_watchdog_processes", state="live") == 0
        assert metric(sidecar, "agents_watchdog_processes", state="dead") == 0
    assert not [e for e in sidecar.logs if e.get("event") in ("process_died", "span_orphaned")]
    assert webhook.bodies() == []


def test_a_process_killed_before_its_threshold_pages_nobody_for_a_hang(
    standin: StandInServer, sidecar_factory: Factory, apps: Callable[..., subprocess.Popen[str]]
) -> None:
    """kill -9 (or the OOM killer) a second into a model call whose threshold is two:
    the span is orphaned, and no sink ever sees AgentSpanHung for it."""
    with Receiver() as webhook:
        sidecar = sidecar_factory(
            thresholds(response=2)
            + "[processes]\norphan_retention = 30\n"
            + f'[[alerts]]\ntype = "webhook"\nurl = "{webhook.url}"\n'
        )
        process = apps("hang", sidecar.url, standin.url)
        identity = sidecar.wait_for("process_identity", timeout=10)
        assert identity is not None and identity["verified"] is True
        stuck = wait_until(
            lambda: [s for s in spans(sidecar, kind="response") if s["agent"] == "Researcher"]
        )[0]
        assert stuck["age_seconds"] < 2 and stuck["state"] == "open"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        orphaned = wait_until(lambda: spans(sidecar, state="orphaned"), within=15)
        assert stuck["span_id"] in {s["span_id"] for s in orphaned}
        wait_until(lambda: ("AgentSpansOrphaned", "firing") in alerts(webhook))
        assert not [e for e in sidecar.logs if e.get("event") == "span_hung"]
    assert [a for a in alerts(webhook) if a[0] == "AgentSpanHung"] == []
    assert metric(
        sidecar, "agents_watchdog_hung_spans_total", kind="response", service="worker"
    ) in (None, 0)
