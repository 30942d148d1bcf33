"""Metric series stay bounded whatever kinds and services apps send.

``kind`` and ``service`` come from apps (64 and 256 characters on the wire) and become
labels; every new value would add series that are never freed, in the sidecar's memory
and in every Prometheus that scrapes it. Unknown kinds fold into ``kind="other"``;
services past ``limits.max_label_services`` fold into ``service="_overflow"``, counted
in ``label_overflow_total{label}``. The JSON API keeps the raw strings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.conftest import wait_until
from tests.launcher import SidecarProcess
from watchdog.protocol import PROTOCOL_VERSION
from watchdog.sidecar.app import Sidecar
from watchdog.sidecar.config import KINDS, load_config

APPS = 1000  # distinct services, each with a kind of its own
DEFAULT_CAP = 100  # limits.max_label_services by default
JSON_HEADERS = {"content-type": "application/json"}


def in_process_sidecar(tmp: Path, config: str = "") -> Sidecar:
    """A sidecar object (no subprocess) with its incident history in ``tmp``."""
    path = tmp / "sidecar.toml"
    path.write_text(f'[incidents]\npath = "{tmp}/incidents.db"\n' + config, encoding="utf-8")
    return Sidecar(load_config(path, environ={}))


def app_batch(i: int, kind: str | None = None, summarised: int = 3) -> dict[str, Any]:
    """App ``i`` (service ``svc-i``): one span of its own kind that ended, one left open."""
    kind = kind or f"kind-{i}"
    now = time.monotonic()
    return {
        "v": PROTOCOL_VERSION,
        "process": {
            "instance_id": f"app-{i}",
            "pid": 900_000 + i,
            "host": "elsewhere",
            "create_time": 1.0,
            "service": f"svc-{i}",
        },
        "seq": 1,
        "sent_at": now,
        "heartbeat": {
            "interval": 1.0,
            "open_spans": 1,
            "dropped_events": 0,
            "wall_minus_mono": 1.7e9,
            "summarised": summarised,
        },
        "events": [
            ["s", f"ended-{i}", f"t-{i}", None, kind, "x", now - 1.0, 1, None],
            ["e", f"ended-{i}", now - 0.5, False],
            ["s", f"open-{i}", f"t-{i}", None, kind, "y", now, 1, None],
        ],
        "resync": None,
    }


def heartbeat(i: int) -> dict[str, Any]:
    """App ``i`` speaks again, sending nothing new: it is alive, so its late spans hang."""
    body = app_batch(i)
    body.update(seq=2, events=[])
    return body


def series(text: str) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """Distinct label sets per family, for the families labelled by service or kind."""
    found: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k in ("service", "kind")}
            if labels:
                found.setdefault(family.name, set()).add(tuple(sorted(labels.items())))
    return found


def values(text: str, name: str, label: str) -> dict[str, float]:
    """One sample family's values by one label."""
    return {
        sample.labels[label]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def assert_bounded(text: str, services: int) -> None:
    """At most ``services`` own service values plus the overflow, and known kinds plus
    ``other``, in every family labelled by them."""
    for name, label_sets in series(text).items():
        labels = [dict(s) for s in label_sets]
        service_values = {s["service"] for s in labels if "service" in s}
        kind_values = {s["kind"] for s in labels if "kind" in s}
        assert len(service_values) <= services + 1, (name, len(service_values))
        assert kind_values <= KINDS | {"other"}, (name, sorted(kind_values)[:5])


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, Sidecar]]:
    """The sidecar's ASGI app in this process, lifespan and all; unknown kinds hang at
    once (``thresholds.default``) so that hung counters see every app."""
    sidecar = in_process_sidecar(tmp_path, "[thresholds]\ndefault = 0.01\n")
    with TestClient(sidecar.app(), client=("127.0.0.1", 50000)) as test_client:
        yield test_client, sidecar


@pytest.mark.slow
def test_a_thousand_kinds_and_services_make_a_bounded_number_of_series(
    client: tuple[TestClient, Sidecar],
) -> None:
    test_client, sidecar = client
    for i in range(APPS):
        response = test_client.post("/v1/events", json=app_batch(i), headers=JSON_HEADERS)
        assert response.status_code == 200, response.text
    for i in range(APPS):
        assert test_client.post("/v1/events", json=heartbeat(i)).status_code == 200

    def all_hung() -> str | None:
        text = test_client.get("/metrics").text
        hung = values(text, "agents_watchdog_hung_spans_detected_total", "service")
        return text if sum(hung.values()) == APPS else None

    text = wait_until(all_hung)
    assert_bounded(text, DEFAULT_CAP)
    # The first services keep their own label; the rest share the overflow one.
    received = values(text, "agents_watchdog_events_received_total", "service")
    assert received["svc-0"] == 3 and received[f"svc-{DEFAULT_CAP - 1}"] == 3
    assert f"svc-{DEFAULT_CAP}" not in received
    assert received["_overflow"] == 3 * (APPS - DEFAULT_CAP)
    assert sum(received.values()) == 3 * APPS  # nothing lost, only folded
    summarised = values(text, "agents_watchdog_spans_summarised_total", "service")
    assert summarised["_overflow"] == 3 * (APPS - DEFAULT_CAP)
    kinds = values(text, "agents_watchdog_span_duration_seconds_count", "kind")
    assert set(kinds) == {"other"}
    durations = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "agents_watchdog_span_duration_seconds_count"
    ]
    assert sum(s.value for s in durations) == APPS
    assert len(durations) == DEFAULT_CAP + 1  # (svc-0..99, other) and (_overflow, other)
    # Every fold is counted: kinds on each update of a kind-labelled series, services
    # past the cap on each update of any series.
    overflow = values(text, "agents_watchdog_label_overflow_total", "label")
    assert overflow["kind"] >= 2 * APPS  # a duration and a hung span per app
    assert overflow["service"] >= 4 * (APPS - DEFAULT_CAP)  # received, summarised, both spans

    # Memory is bounded the same way: counters are keyed by the folded values.
    assert len(sidecar.ingest_stats.received) <= DEFAULT_CAP + 1
    assert len(sidecar.registry.summarised) <= DEFAULT_CAP + 1
    assert len(sidecar.span_stats.durations) <= DEFAULT_CAP + 1
    assert len(sidecar.span_stats.hung_total) <= DEFAULT_CAP + 1

    # The JSON API keeps what the app said.
    spans = test_client.get("/v1/spans", params={"service": f"svc-{APPS - 1}"}).json()["spans"]
    assert [(s["kind"], s["service"]) for s in spans] == [(f"kind-{APPS - 1}", f"svc-{APPS - 1}")]


def test_known_kinds_keep_their_label_and_the_cap_comes_from_config(tmp_path: Path) -> None:
    sidecar = in_process_sidecar(tmp_path, "[limits]\nmax_label_services = 3\n")
    with TestClient(sidecar.app(), client=("127.0.0.1", 50000)) as test_client:
        for i, kind in enumerate(sorted(KINDS)):
            response = test_client.post(
                "/v1/events", json=app_batch(i, kind=kind), headers=JSON_HEADERS
            )
            assert response.status_code == 200, response.text
        text = test_client.get("/metrics").text
    assert_bounded(text, 3)
    open_spans = series(text)["agents_watchdog_open_spans"]
    assert {dict(s)["kind"] for s in open_spans} == set(KINDS)
    assert {dict(s)["service"] for s in open_spans} == {"svc-0", "svc-1", "svc-2", "_overflow"}
    overflow = values(text, "agents_watchdog_label_overflow_total", "label")
    assert overflow["kind"] == 0
    assert overflow["service"] > 0


@pytest.mark.slow
def test_real_sidecar_stays_bounded_and_up_under_a_thousand_kinds_and_services() -> None:
    with SidecarProcess() as sidecar, httpx.Client(base_url=sidecar.url, timeout=10) as http:
        for i in range(APPS):
            response = http.post("/v1/events", json=app_batch(i))
            assert response.status_code == 200, response.text
        text = http.get("/metrics").text
        assert_bounded(text, DEFAULT_CAP)
        # Bounded in size too: about 2 KB per (service, kind) pair, 101 of them (each
        # app its own pair would make 2 MB), and more apps add no more.
        assert len(text) < 300 * 1024, len(text)
        for i in range(APPS, APPS + 200):
            assert http.post("/v1/events", json=app_batch(i)).status_code == 200
        assert len(http.get("/metrics").text) - len(text) < 1024
        overflow = values(
            http.get("/metrics").text, "agents_watchdog_label_overflow_total", "label"
        )
        assert overflow["service"] >= APPS + 200 - DEFAULT_CAP
        assert overflow["kind"] >= APPS + 200
        assert http.get("/healthz").status_code == 200
        spans = http.get("/v1/spans", params={"service": "svc-999"}).json()["spans"]
        assert {s["kind"] for s in spans} == {"kind-999"}
