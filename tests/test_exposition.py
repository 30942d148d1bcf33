"""What /metrics serves, as a Prometheus engineer would check it.

OpenMetrics when the scraper asks (and it must parse strictly: a counter's family drops
``_total``, so a gauge ``x`` beside a counter ``x_total`` is one family twice), the
Prometheus text format otherwise, clean under ``promtool check metrics``; the sidecar's
own ``process_*`` and ``python_gc_*`` metrics; one unit per metric, with each replaced
name still served as a deprecated alias of the same value; bucket bounds formatted by
prometheus_client.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.samples import Sample
from starlette.testclient import TestClient

from tests.conftest import metric, need_tool, wait_until
from tests.launcher import SidecarProcess
from tests.test_metrics import JSON_HEADERS, app_batch, heartbeat, in_process_sidecar
from watchdog.sidecar.app import Sidecar
from watchdog.sidecar.metrics import ALIASES, HEADER_TIMEOUT, register_process_collectors, render

# prometheus_client's strict OpenMetrics parser (it ships no type hints for it).
parse_openmetrics: Callable[[str], Iterable[Metric]] = text_string_to_metric_families
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# Prometheus's own Accept header (2.x): OpenMetrics first, the text format as fallback.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PREFIX = "agents_watchdog_"
# The sidecar's process: what its own collectors must put on /metrics.
OWN_PROCESS = ("process_cpu_seconds_total", "python_gc_objects_collected_total", "python_info")
LIMITS = "[thresholds]\ndefault = 0.01\n\n[limits]\nrequest_timeout = 1\nmax_open_spans = 1\n"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Values of the series ``name`` by label set, from the text format."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in parse_text(text)
        for s in family.samples
        if s.name == name
    }


def declared(text: str) -> dict[str, tuple[str, str]]:
    """(type, help) by the name the text format's ``# TYPE`` and ``# HELP`` lines give,
    which is what Prometheus reads (prometheus_client's text parser instead files a
    counter ``x_total`` under ``x``, beside any gauge ``x``)."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            _, keyword, name, rest = line.split(" ", 3)
            (helps if keyword == "HELP" else types)[name] = rest
    return {name: (kind, helps[name]) for name, kind in types.items()}


def openmetrics_families(text: str) -> dict[str, tuple[str, list[Sample]]]:
    """(type, samples) by family name; prometheus_client's strict parser raises on a
    family declared twice, on metadata after samples and on a missing ``# EOF``."""
    return {f.name: (f.type, f.samples) for f in parse_openmetrics(text)}


def two_open_spans() -> dict[str, Any]:
    """App 0's batch with its open span started a second ago (past its threshold when
    the next heartbeat proves the app alive) and a second one, whose start is refused
    under ``max_open_spans = 1``."""
    batch = app_batch(0)
    opened = batch["events"][-1]
    opened[6] -= 1.0
    batch["events"].append(["s", "refused-0", *opened[2:]])
    return batch


def with_hung_span_and_refusals(test_client: TestClient) -> None:
    """An app whose second open span is refused and whose first hangs, plus one
    malformed request."""
    assert test_client.post("/v1/events", json=two_open_spans(), headers=JSON_HEADERS).is_success
    assert test_client.post("/v1/events", json=heartbeat(0), headers=JSON_HEADERS).is_success
    bad = test_client.post("/v1/events", content=b"{", headers=JSON_HEADERS)
    assert bad.status_code == 400


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[tuple[TestClient, Sidecar]]:
    """An in-process sidecar with its process collectors, one hung span and refusals."""
    sidecar = in_process_sidecar(tmp_path, LIMITS)
    with TestClient(sidecar.app(), client=("127.0.0.1", 50000)) as test_client:
        with_hung_span_and_refusals(test_client)
        wait_until(lambda: sidecar.span_stats.hung_total)
        yield test_client, sidecar


# -- formats ------------------------------------------------------------------------------


def test_openmetrics_is_served_when_asked_and_parses_strictly(
    sidecar: tuple[TestClient, Sidecar],
) -> None:
    _, app = sidecar
    for accept in (OPENMETRICS, PROMETHEUS_ACCEPT, "application/openmetrics-text"):
        body, content_type = render(app.metrics, accept)
        assert content_type.startswith("application/openmetrics-text; version=1.0.0")
        families = openmetrics_families(body.decode())
        assert families[PREFIX + "hung_spans"][0] == "gauge"
        assert families[PREFIX + "hung_spans_detected"][0] == "counter"
        # The alias cannot be a counter here (its family would be the gauge's name):
        # the same series, typed unknown.
        kind, alias = families[PREFIX + "hung_spans_total"]
        assert kind == "unknown"
        assert [(s.name, s.value) for s in alias] == [(PREFIX + "hung_spans_total", 1.0)]
        assert families[PREFIX + "span_duration_seconds"][0] == "histogram"
        for name in ("process_cpu_seconds", "python_gc_objects_collected"):
            assert families[name][0] == "counter"


def test_the_text_format_is_the_default_and_keeps_every_alias_a_counter(
    sidecar: tuple[TestClient, Sidecar],
) -> None:
    _, app = sidecar
    for accept in (None, "", "*/*", "text/plain", "text/plain;version=0.0.4"):
        body, content_type = render(app.metrics, accept)
        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        types = {name: kind for name, (kind, _) in declared(body.decode()).items()}
        assert types[PREFIX + "hung_spans"] == "gauge"
        assert types[PREFIX + "hung_spans_total"] == "counter"
        assert types[PREFIX + "hung_spans_detected_total"] == "counter"
        assert types[PREFIX + "events_rejected_total"] == "counter"


def samples_names(text: str) -> set[str]:
    """Every sampled series name in a text-format exposition."""
    return {s.name for family in parse_text(text) for s in family.samples}


def test_both_formats_pass_promtool_check_metrics(sidecar: tuple[TestClient, Sidecar]) -> None:
    """promtool lints the text format: no problem at all may be reported. It reads no
    OpenMetrics (it takes that body for the text format and misreads every counter), so
    there the strict parser is the check; and OpenMetrics carries the same series."""
    promtool = need_tool("promtool", "lints the exposition (Debian's prometheus)")
    _, app = sidecar
    text, _ = render(app.metrics, None)
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr
    openmetrics, _ = render(app.metrics, OPENMETRICS)
    families = openmetrics_families(openmetrics.decode()).values()
    assert {s.name for _, series in families for s in series} == samples_names(text.decode())


def test_process_collectors_are_registered_once() -> None:
    # Like the sidecar's: without auto_describe the registry itself checks no names.
    registry = CollectorRegistry(auto_describe=False)
    assert not samples_names(render(registry, None)[0].decode())
    register_process_collectors(registry)
    assert set(OWN_PROCESS) <= samples_names(render(registry, None)[0].decode())
    with pytest.raises(ValueError, match="already registered"):
        register_process_collectors(registry)
    assert len(render(registry, None)[0].decode().split("\n# TYPE process_cpu_seconds")) == 2


# -- names and units ----------------------------------------------------------------------


def test_each_refusal_is_counted_in_its_own_unit_and_in_the_alias(
    sidecar: tuple[TestClient, Sidecar],
) -> None:
    _, app = sidecar
    # A connection the guard timed out (server.py wires it to the same tally).
    app.ingest_stats.rejected[HEADER_TIMEOUT] += 2
    app.ingest_stats.rejected["request_timeout"] += 1
    text = render(app.metrics, None)[0].decode()
    assert samples(text, PREFIX + "ingest_requests_rejected_total") == {
        (("reason", "malformed_json"),): 1.0,
        (("reason", "request_timeout"),): 1.0,
    }
    assert samples(text, PREFIX + "spans_rejected_total") == {(("reason", "open_span_limit"),): 1.0}
    assert samples(text, PREFIX + "connections_rejected_total") == {
        (("reason", "header_timeout"),): 2.0
    }
    # The old name, as it read before: every reason, connection timeouts as requests'.
    assert samples(text, PREFIX + "events_rejected_total") == {
        (("reason", "malformed_json"),): 1.0,
        (("reason", "open_span_limit"),): 1.0,
        (("reason", "request_timeout"),): 3.0,
    }


def test_new_counters_of_spans_and_connections_start_at_zero(tmp_path: Path) -> None:
    """A first refusal shows as an increase: the series exist before it."""
    text = render(in_process_sidecar(tmp_path).metrics, None)[0].decode()
    assert samples(text, PREFIX + "spans_rejected_total") == {(("reason", "open_span_limit"),): 0.0}
    assert samples(text, PREFIX + "connections_rejected_total") == {
        (("reason", "header_timeout"),): 0.0
    }
    assert not samples(text, PREFIX + "events_rejected_total")  # as before: no zeros


def test_aliases_carry_their_replacements_values_and_say_so(
    sidecar: tuple[TestClient, Sidecar],
) -> None:
    _, app = sidecar
    text = render(app.metrics, None)[0].decode()
    hung = samples(text, PREFIX + "hung_spans_detected_total")
    assert hung and samples(text, PREFIX + "hung_spans_total") == hung
    families = declared(text)
    for alias, replacement in ALIASES.items():
        assert families[alias] == (
            "counter",
            f"Deprecated alias of {replacement}, removed in 0.3.",
        )
        for name in replacement.replace(" and ", ", ").split(", "):
            assert families[name][0] == "counter", name


def test_bucket_bounds_are_formatted_by_prometheus_client(tmp_path: Path) -> None:
    """Bounds read as Go formats them (what Prometheus itself writes): a large threshold
    in exponent form, the ladder's integers with ".0"."""
    app = in_process_sidecar(tmp_path, "[thresholds]\ndefault = 1234567\n")
    with TestClient(app.app(), client=("127.0.0.1", 50000)) as test_client:
        assert test_client.post("/v1/events", json=app_batch(0), headers=JSON_HEADERS).is_success
    text = render(app.metrics, None)[0].decode()
    bounds = [
        dict(labels)["le"] for labels in samples(text, PREFIX + "span_duration_seconds_bucket")
    ]
    assert {"1.234567e+06", "1.0", "0.05", "3600.0", "+Inf"} <= set(bounds)
    assert "1234567.0" not in bounds


# -- a real sidecar -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> Iterator[SidecarProcess]:
    """A real ``agents-watchdog serve`` with one hung span and one refusal of each unit."""
    with SidecarProcess(LIMITS) as process, httpx.Client(base_url=process.url) as http:
        assert http.post("/v1/events", json=two_open_spans()).is_success
        assert http.post("/v1/events", json=heartbeat(0)).is_success
        assert http.post("/v1/events", content=b"{", headers=JSON_HEADERS).status_code == 400
        silent = socket.create_connection(("127.0.0.1", process.port), timeout=10)
        with silent:
            assert silent.recv(4096).startswith(b"HTTP/1.1 408")  # once the guard gives up
        wait_until(lambda: metric(process, PREFIX + "hung_spans_detected_total") == 1)
        yield process


def test_a_real_sidecar_counts_each_unit_apart(real: SidecarProcess) -> None:
    wait_until(
        lambda: metric(real, PREFIX + "connections_rejected_total", reason=HEADER_TIMEOUT) == 1
    )
    assert metric(real, PREFIX + "ingest_requests_rejected_total", reason="malformed_json") == 1
    assert metric(real, PREFIX + "ingest_requests_rejected_total", reason="request_timeout") is None
    assert metric(real, PREFIX + "spans_rejected_total", reason="open_span_limit") == 1
    assert metric(real, PREFIX + "events_rejected_total", reason="request_timeout") == 1


def test_a_real_sidecar_serves_openmetrics_that_parse(real: SidecarProcess) -> None:
    response = httpx.get(f"{real.url}/metrics", headers={"accept": PROMETHEUS_ACCEPT}, timeout=5)
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = openmetrics_families(response.text)
    assert families[PREFIX + "hung_spans"][0] == "gauge"
    assert families[PREFIX + "hung_spans_detected"][0] == "counter"
    assert families[PREFIX + "hung_spans_total"][0] == "unknown"


def test_a_real_sidecar_serves_its_own_process_metrics(real: SidecarProcess) -> None:
    names = samples_names(httpx.get(f"{real.url}/metrics", timeout=5).text)
    assert set(OWN_PROCESS) <= names
    assert (metric(real, "process_cpu_seconds_total") or 0) > 0


def test_a_real_sidecars_text_format_passes_promtool(real: SidecarProcess) -> None:
    promtool = need_tool("promtool", "lints the exposition (Debian's prometheus)")
    text = httpx.get(f"{real.url}/metrics", timeout=5).content
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not (checked.stdout + checked.stderr).strip()
