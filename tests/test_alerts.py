"""Alerts against real receivers on loopback: webhook (Alertmanager v4 payload), a real
Alertmanager, Slack with 429s, and receivers that are down, slow or failing."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agents_app import AppRun, coordinator_with_researcher
from tests.conftest import metric, need_tool, spans, thresholds, wait_until
from tests.launcher import SidecarProcess
from tests.receivers import Receiver
from watchdog.processor import WatchdogProcessor
from watchdog.sidecar.alerts import Alert, slack_message
from watchdog.standin import StandInServer

Factory = Callable[..., SidecarProcess]
Watch = Callable[..., WatchdogProcessor]

THRESHOLDS = thresholds(response=1.5, function=30)


def parse(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def check_webhook_v4(payload: dict[str, Any]) -> None:
    """The Alertmanager webhook payload, version 4, as its documentation defines it."""
    assert payload["version"] == "4"
    assert isinstance(payload["groupKey"], str) and payload["groupKey"]
    assert payload["truncatedAlerts"] == 0
    assert payload["status"] in ("firing", "resolved")
    assert isinstance(payload["receiver"], str)
    for field in ("groupLabels", "commonLabels", "commonAnnotations"):
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in payload[field].items())
    assert payload["externalURL"].startswith("http://")
    assert len(payload["alerts"]) == 1
    alert = payload["alerts"][0]
    assert alert["status"] == payload["status"]
    parse(alert["startsAt"])
    if alert["status"] == "firing":
        assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    else:
        assert parse(alert["endsAt"]) >= parse(alert["startsAt"])
    assert alert["generatorURL"].startswith(payload["externalURL"])
    assert isinstance(alert["fingerprint"], str) and len(alert["fingerprint"]) == 16
    labels = alert["labels"]
    for label in ("alertname", "service", "host", "kind", "name", "agent", "severity"):
        assert isinstance(labels[label], str)


def webhook_sink(name: str, url: str, extra: str = "") -> str:
    return f'\n[[alerts]]\ntype = "webhook"\nname = "{name}"\nurl = "{url}"\n{extra}\n'


def test_webhook_gets_exactly_one_firing_and_one_resolved_per_hung_span(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    with Receiver() as receiver:
        sidecar = sidecar_factory(THRESHOLDS + webhook_sink("ops", receiver.url))
        watch(sidecar.url, service="briefings")
        runs = [AppRun(standin, coordinator_with_researcher(("hang",))).start() for _ in range(2)]
        firing = receiver.wait_for(lambda b: len(b) == 2)
        received_at = time.time()
        hung = {s["span_id"]: s for s in spans(sidecar, state="hung")}
        standin.release()
        for run in runs:
            assert run.wait() == "Briefing"
        bodies = receiver.wait_for(lambda b: len(b) == 4)
        wait_until(
            lambda: (
                metric(sidecar, "agents_watchdog_alerts_sent_total", sink="ops", outcome="sent")
                == 4
            )
        )
    for payload in bodies:
        check_webhook_v4(payload)
    assert [p["status"] for p in bodies].count("firing") == 2
    assert [p["status"] for p in bodies].count("resolved") == 2
    by_fingerprint: dict[str, list[str]] = {}
    for payload in bodies:
        alert = payload["alerts"][0]
        by_fingerprint.setdefault(alert["fingerprint"], []).append(alert["status"])
    assert sorted(by_fingerprint.values()) == [["firing", "resolved"], ["firing", "resolved"]]
    first = firing[0]["alerts"][0]
    labels, notes = first["labels"], first["annotations"]
    assert labels["alertname"] == "AgentSpanHung"
    assert (labels["service"], labels["kind"], labels["agent"]) == (
        "briefings",
        "response",
        "Researcher",
    )
    assert labels["severity"] == "warning"
    assert labels["span_id"] in hung
    assert "threshold of 1.5 s" in notes["description"]
    assert notes["trace_id"] in notes["description"]
    assert first["generatorURL"] == f"{sidecar.url}/?span={labels['span_id']}"
    resolved = next(p for p in bodies if p["status"] == "resolved")["alerts"][0]
    assert resolved["annotations"]["resolution"].startswith("ended after")
    # Delay from the span's deadline to the receiver holding the alert (for the record).
    span = hung[labels["span_id"]]
    deadline = parse(span["started_at"]) + span["threshold_seconds"]
    print(f"deadline -> webhook: {received_at - deadline:.3f} s (upper bound, poll included)")
    assert received_at - deadline < 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = need_tool("prometheus-alertmanager", "the alert tests push to a real Alertmanager")
    if not Path("/usr/share/prometheus/alertmanager/default.tmpl").exists():
        message = "Alertmanager's default template is not installed (`make tools` as root)"
        if __import__("os").environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    config = tmp_path / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, within=20)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.slow
def test_real_alertmanager_shows_the_alert_and_resolves_it(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch, alertmanager: str
) -> None:
    sidecar = sidecar_factory(
        THRESHOLDS + "[alerting]\nresend_interval = 1\n"
        f'[[alerts]]\ntype = "alertmanager"\nurl = "{alertmanager}"\n'
    )
    watch(sidecar.url, service="briefings")
    run = AppRun(standin, coordinator_with_researcher(("hang",))).start()
    span = wait_until(lambda: next(iter(spans(sidecar, state="hung")), None))

    def in_alertmanager() -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = httpx.get(f"{alertmanager}/api/v2/alerts").json()
        return [a for a in alerts if a["labels"].get("span_id") == span["span_id"]]

    shown = wait_until(in_alertmanager, within=10)[0]
    assert shown["labels"]["alertname"] == "AgentSpanHung"
    assert shown["labels"]["agent"] == "Researcher"
    assert shown["status"]["state"] == "active"
    assert shown["generatorURL"].endswith(span["span_id"])
    # Still there after several re-sends (it would expire if they stopped).
    sent = metric(sidecar, "agents_watchdog_alerts_sent_total", sink="alertmanager", outcome="sent")
    wait_until(
        lambda: (
            (
                metric(
                    sidecar,
                    "agents_watchdog_alerts_sent_total",
                    sink="alertmanager",
                    outcome="sent",
                )
                or 0
            )
            >= (sent or 0) + 2
        )
    )
    assert in_alertmanager()
    standin.release()
    assert run.wait() == "Briefing"
    wait_until(lambda: not in_alertmanager(), within=10)


@pytest.mark.slow
def test_faulty_receivers_delay_neither_detection_nor_other_sinks(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    down_url = f"http://127.0.0.1:{free_port()}"
    with (
        Receiver() as good,
        Receiver(delay=30) as slow,
        Receiver(script=[(500, {})] * 3) as flaky,
    ):
        sidecar = sidecar_factory(
            THRESHOLDS
            + "[alerting]\ngive_up_after = 5\n"
            + webhook_sink("good", good.url)
            + webhook_sink("slow", slow.url, "timeout = 1")
            + webhook_sink("flaky", flaky.url)
            + webhook_sink("down", down_url)
        )
        watch(sidecar.url)
        first = AppRun(standin, coordinator_with_researcher(("hang",))).start()
        good.wait_for(lambda b: len(b) == 1)
        # A second span hangs while three sinks are failing or stuck on the first alert.
        second = AppRun(standin, coordinator_with_researcher(("hang",))).start()
        good.wait_for(lambda b: len(b) == 2)
        flaky.wait_for(lambda b: len(b) == 2)  # delivered after retries
        hung_lines = [e for e in sidecar.logs if e.get("event") == "span_hung"]
        assert len(hung_lines) == 2
        # Detection stays on time: each flagged within threshold + 1 s, as always.
        assert all(line["age_seconds"] - 1.5 < 1.0 for line in hung_lines)

        def outcome(sink: str, what: str) -> float:
            return (
                metric(sidecar, "agents_watchdog_alerts_sent_total", sink=sink, outcome=what) or 0
            )

        wait_until(lambda: outcome("down", "failed") == 2, within=20)
        wait_until(lambda: outcome("slow", "failed") >= 1, within=20)
        assert outcome("good", "sent") == 2
        assert outcome("good", "retried") == 0
        assert outcome("flaky", "sent") == 2 and outcome("flaky", "retried") == 3
        assert outcome("down", "retried") >= 2
        assert outcome("slow", "retried") >= 1
        failing = [e for e in sidecar.logs if e.get("event") == "alert_sink_failing"]
        # One line per streak, not per try; never the receiver's URL.
        assert sorted(e["sink"] for e in failing).count("down") == 1
        assert all(down_url not in str(e) for e in sidecar.logs)
        standin.release()
        assert first.wait() == second.wait() == "Briefing"


def test_slack_sink_honours_retry_after(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    with Receiver(script=[(429, {"Retry-After": "2"})]) as slack:
        sidecar = sidecar_factory(
            THRESHOLDS + f'[[alerts]]\ntype = "slack"\nurl = "{slack.url}/services/T/B/secret"\n'
        )
        watch(sidecar.url)
        run = AppRun(standin, coordinator_with_researcher(("hang",))).start()
        message = slack.wait_for(lambda b: len(b) == 1)[0]
        standin.release()
        assert run.wait() == "Briefing"
        slack.wait_for(lambda b: len(b) == 2)
        (first_try, _), (second_try, _) = slack.received[:2]
        assert slack.answered[:2] == [429, 200]
        assert second_try - first_try >= 2.0  # waited as long as Retry-After asked
        assert message["text"].startswith(":rotating_light: FIRING:")
        types = [block["type"] for block in message["blocks"]]
        assert types == ["header", "section", "section", "context"]
        assert "Researcher" in message["blocks"][1]["text"]["text"]
        # The first message already says where: the stack came before it was sent.
        assert "Where it is stuck" in message["blocks"][2]["text"]["text"]
        assert "await" in message["blocks"][2]["text"]["text"]
        assert (
            metric(sidecar, "agents_watchdog_alerts_sent_total", sink="slack", outcome="retried")
            == 1
        )
        assert "secret" not in str(sidecar.logs)


def test_slack_message_shows_where_the_span_waits_within_slacks_limit() -> None:
    frames = "".join(
        f'  File "app.py", line {n}, in step_{n}\n    await step_{n + 1}()\n' for n in range(400)
    )
    stack = (
        "Task 'Task-1' (awaiting, outermost first):\n"
        + frames
        + '  File "httpx/_client.py", line 1, in send\n    await read()\n'
        + "Thread 'MainThread' (now, most recent call last):\n  File \"x.py\", line 2, in run_forever\n"
    )
    alert = Alert(
        key="k",
        labels={"alertname": "AgentSpanHung", "severity": "warning", "service": "s"},
        annotations={"summary": "s: hung", "description": "d", "stack": stack},
        starts_at=0.0,
        generator_url="http://sidecar/?span=x",
    )
    blocks = slack_message(alert)["blocks"]
    where = next(b["text"]["text"] for b in blocks if "Where it is stuck" in str(b))
    assert len(where) <= 3000 and where.startswith("*Where it is stuck:*\n```...\n")
    assert where.endswith("await read()```")  # the innermost frame of the span's task
    assert "run_forever" not in where  # the thread's frames are not the span's
    resolved = replace(alert, status="resolved", ends_at=1.0)
    assert "Where it is stuck" not in str(slack_message(resolved)["blocks"])
