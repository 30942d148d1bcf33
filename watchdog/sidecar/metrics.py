"""Prometheus metrics, computed from live state when scraped.

Gauges (open, hung, oldest age, processes) are read from the registry at scrape time
instead of being updated on every event; counters and the duration histogram are
plain integers bumped by ingest and the registry's listener (``stats.py``, re-exported
here). Labels are ``service`` and
``kind`` (plus ``reason`` and ``state`` where named) — never span or trace ids.

``service`` and ``kind`` come from apps; :class:`~watchdog.sidecar.labels.BoundedLabels`
keeps their values, and so the series, bounded (``labels.py``).

Each metric counts one unit: refused ingest requests, refused span starts and connections
closed for slowness are three counters, routed by ``reason`` from the one tally that
ingest, the registry and the connection guard bump (:data:`REJECTION_UNITS`). Names
that were wrong stay served for one release as deprecated aliases (:data:`ALIASES`).
:func:`render` negotiates the exposition format (OpenMetrics when the scraper asks).
"""

from __future__ import annotations

import math
import platform
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from watchdog.sidecar.labels import OTHER_KIND, OVERFLOW_SERVICE, BoundedLabels
from watchdog.sidecar.registry import Registry
from watchdog.sidecar.stats import IngestStats, SpanStats, bucket_edges

__all__ = [
    "ALIASES",
    "HEADER_TIMEOUT",
    "OTHER_KIND",
    "OVERFLOW_SERVICE",
    "PREFIX",
    "REJECTION_UNITS",
    "BoundedLabels",
    "IngestStats",
    "SpanStats",
    "WatchdogCollector",
    "bucket_edges",
    "register_process_collectors",
    "render",
]

PREFIX: Final = "agents_watchdog_"
# The connection guard's reason: the request line and headers did not arrive within
# limits.request_timeout. Distinct from "request_timeout" (a body that did not arrive),
# which is counted per request.
HEADER_TIMEOUT: Final = "header_timeout"
# The unit of each rejection reason that is not a refused ingest request.
REJECTION_UNITS: Final[Mapping[str, str]] = {
    "open_span_limit": "spans",
    HEADER_TIMEOUT: "connections",
}
# Deprecated name -> the name(s) it stands for; served for one release, removed in 0.3.
ALIASES: Final[Mapping[str, str]] = {
    PREFIX + "hung_spans_total": PREFIX + "hung_spans_detected_total",
    PREFIX + "events_rejected_total": (
        f"{PREFIX}ingest_requests_rejected_total, {PREFIX}spans_rejected_total and "
        f"{PREFIX}connections_rejected_total"
    ),
}
# Under OpenMetrics a counter's family name drops "_total"; for these aliases that name
# is a gauge's, so there they are served as "unknown" under their full sample name
# (which is what the text format and every query call them).
_CLASHING_ALIASES: Final = frozenset({PREFIX + "hung_spans"})
# Registries given the process collectors: see register_process_collectors().
_WITH_PROCESS: Final[weakref.WeakSet[CollectorRegistry]] = weakref.WeakSet()
# prometheus_client's own formatting of bucket bounds (it ships no type hints).
_go_float: Final[Callable[[float], str]] = floatToGoString


class WatchdogCollector(Collector):
    """Yields every ``agents_watchdog_*`` metric family from current state."""

    def __init__(
        self,
        registry: Registry,
        spans: SpanStats,
        ingest: IngestStats,
        version: str,
        clock: Callable[[], float],
        alert_outcomes: Counter[tuple[str, str]] | None = None,
        abort_outcomes: Counter[tuple[str, str]] | None = None,
    ) -> None:
        self.registry = registry
        self.span_stats = spans
        self.ingest = ingest
        self.version = version
        self.clock = clock
        self.alert_outcomes = alert_outcomes if alert_outcomes is not None else Counter()
        self.abort_outcomes = abort_outcomes if abort_outcomes is not None else Counter()

    def collect(self) -> Iterable[Metric]:
        """Build the metric families (called by prometheus_client on each scrape)."""
        now = self.clock()
        labels = ["service", "kind"]
        folded = self.span_stats.labels
        open_spans = GaugeMetricFamily(
            PREFIX + "open_spans", "Spans open right now, hung ones included.", labels=labels
        )
        hung_spans = GaugeMetricFamily(
            PREFIX + "hung_spans", "Spans open past their threshold right now.", labels=labels
        )
        oldest = GaugeMetricFamily(
            PREFIX + "oldest_open_span_age_seconds",
            "Age of the oldest open span.",
            labels=labels,
        )
        open_count: Counter[tuple[str, str]] = Counter()
        hung_count: Counter[tuple[str, str]] = Counter()
        oldest_start: dict[tuple[str, str], float] = {}
        processes: Counter[str] = Counter()
        lag: dict[str, float] = {}
        for process in self.registry.processes.values():
            processes[process.state] += 1
            service = folded.service(process.service, counted=False)
            for report in process.loops:
                lag[service] = max(lag.get(service, 0.0), report.lag)
            for kind, spans in process.spans_by_kind.items():
                key = (service, folded.kind(kind, counted=False))
                open_count[key] += len(spans)
                first = next(iter(spans.values()))
                if first.started < oldest_start.get(key, now):
                    oldest_start[key] = first.started
            for kind, hung in process.hung.items():
                if hung:
                    hung_count[(service, folded.kind(kind, counted=False))] += hung
        for key, value in sorted(open_count.items()):
            open_spans.add_metric(list(key), value)
            oldest.add_metric(list(key), max(0.0, now - oldest_start.get(key, now)))
            hung_spans.add_metric(list(key), hung_count.get(key, 0))
        yield open_spans
        yield hung_spans
        yield oldest

        yield _counter(
            PREFIX + "hung_spans_detected",
            "Spans flagged as hung since the sidecar started.",
            labels,
            self.span_stats.hung_total,
        )
        yield _alias(PREFIX + "hung_spans_total", labels, self.span_stats.hung_total)

        yield _counter(
            PREFIX + "orphaned_spans",
            "Spans left open by a process that died (they can never end).",
            labels,
            self.span_stats.orphaned_total,
        )

        yield _counter(
            PREFIX + "leaked_spans",
            "Spans an app reported leaked: the task or thread that opened them finished "
            "without ending them, so they never will (dropped from the open set, never hung).",
            labels,
            self.span_stats.leaked_total,
        )

        duration = HistogramMetricFamily(
            PREFIX + "span_duration_seconds",
            "Duration of spans that ended (bucket edges include every configured threshold).",
            labels=labels,
        )
        edges = [_go_float(edge) for edge in (*self.span_stats.edges, math.inf)]
        for key, histogram in sorted(self.span_stats.durations.items()):
            running, buckets = 0, []
            for edge, count in zip(edges, histogram.counts, strict=True):
                running += count
                buckets.append((edge, running))
            duration.add_metric(list(key), buckets, histogram.total)
        yield duration

        yield _counter(
            PREFIX + "events_received",
            "Span events accepted from apps (starts, ends and resync entries).",
            ["service"],
            self.ingest.received,
        )
        yield _counter(
            PREFIX + "spans_summarised",
            "Short spans (begun and ended between two sends) an app counted instead of sending.",
            ["service"],
            self.registry.summarised,
        )
        yield _counter(
            PREFIX + "sender_errors",
            "Failures raised on an app's sender thread that it recovered from (it resyncs).",
            ["service"],
            self.registry.sender_errors,
        )
        yield from self._rejections()
        yield _counter(
            PREFIX + "label_overflow",
            "Metric updates whose label value was folded: a service past "
            'limits.max_label_services (into service="_overflow"), a kind the SDK does not '
            'define (into kind="other").',
            ["label"],
            folded.overflow,
        )

        states = GaugeMetricFamily(
            PREFIX + "processes", "App processes known to the sidecar, by state.", labels=["state"]
        )
        for state in ("live", "unresponsive", "dead", "blind"):
            states.add_metric([state], processes.get(state, 0))
        yield states

        yield _counter(
            PREFIX + "alerts_sent",
            "Alert deliveries by sink and outcome: sent, retried, failed (gave up), dropped.",
            ["sink", "outcome"],
            self.alert_outcomes,
        )

        yield _counter(
            PREFIX + "aborts",
            "Abort ladder steps by action (cancel, cancel_trace, terminate, kill) and outcome.",
            ["action", "outcome"],
            self.abort_outcomes,
        )

        loop_lag = GaugeMetricFamily(
            PREFIX + "loop_lag_seconds",
            "How late the most delayed event loop that ran spans runs a callback.",
            labels=["service"],
        )
        for service, worst in sorted(lag.items()):
            loop_lag.add_metric([service], worst)
        yield loop_lag

        info = GaugeMetricFamily(
            PREFIX + "build_info", "Version of the sidecar; always 1.", labels=["version", "python"]
        )
        info.add_metric([self.version, platform.python_version()], 1)
        yield info

    def _rejections(self) -> Iterable[Metric]:
        """One counter per unit, from the one tally of rejections by reason."""
        by_unit: dict[str, Counter[str]] = {
            "requests": Counter(),
            # Every reason of these two has a series from the start, so that a first
            # refusal shows as an increase.
            "spans": Counter({r: 0 for r, u in REJECTION_UNITS.items() if u == "spans"}),
            "connections": Counter(
                {r: 0 for r, u in REJECTION_UNITS.items() if u == "connections"}
            ),
        }
        legacy: Counter[str] = Counter()
        for reason, count in self.ingest.rejected.items():
            by_unit[REJECTION_UNITS.get(reason, "requests")][reason] += count
            # The old name knew connection timeouts as request timeouts.
            legacy["request_timeout" if reason == HEADER_TIMEOUT else reason] += count
        yield _counter(
            PREFIX + "ingest_requests_rejected",
            "Requests to the ingest endpoint (POST /v1/events) refused, by reason.",
            ["reason"],
            by_unit["requests"],
        )
        yield _counter(
            PREFIX + "spans_rejected",
            "Span starts refused, by reason (open_span_limit: past limits.max_open_spans); "
            "a refused span is not watched.",
            ["reason"],
            by_unit["spans"],
        )
        yield _counter(
            PREFIX + "connections_rejected",
            "Connections closed with a 408, by reason (header_timeout: the request line and "
            "headers did not arrive within limits.request_timeout).",
            ["reason"],
            by_unit["connections"],
        )
        yield _alias(PREFIX + "events_rejected_total", ["reason"], legacy)


def register_process_collectors(registry: CollectorRegistry) -> None:
    """Add the sidecar's own ``process_*``, ``python_gc_*`` and ``python_info`` metrics
    (prometheus_client's collectors) to ``registry``. A second call for the same
    registry raises ``ValueError`` (one without ``auto_describe`` would not notice)."""
    if registry in _WITH_PROCESS:
        raise ValueError("the process collectors are already registered on this registry")
    _WITH_PROCESS.add(registry)
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)


def render(registry: Collector, accept: str | None) -> tuple[bytes, str]:
    """``registry``'s metrics in the format the ``Accept`` header asks for, and its
    content type: OpenMetrics for ``application/openmetrics-text``, the Prometheus text
    format otherwise (prometheus_client's own negotiation)."""
    encoder, content_type = choose_encoder(accept or "")
    if content_type.startswith("application/openmetrics-text"):
        return encoder(_OpenMetricsView(registry)), content_type
    return encoder(registry), content_type


class _OpenMetricsView(Collector):
    """``source`` as OpenMetrics may serve it: see :data:`_CLASHING_ALIASES`."""

    def __init__(self, source: Collector) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        """The source's families, clashing aliases retyped."""
        for family in self.source.collect():
            if family.type == "counter" and family.name in _CLASHING_ALIASES:
                retyped = Metric(family.name + "_total", family.documentation, "unknown")
                retyped.samples = [s for s in family.samples if s.name == retyped.name]
                yield retyped
            else:
                yield family


def _alias(name: str, labels: list[str], counts: Mapping[Any, int]) -> CounterMetricFamily:
    """A deprecated counter name, served with the same values as what replaced it."""
    return _counter(name, f"Deprecated alias of {ALIASES[name]}, removed in 0.3.", labels, counts)


def _counter(
    name: str, documentation: str, labels: list[str], counts: Mapping[Any, int]
) -> CounterMetricFamily:
    """A counter family from a mapping of label value(s) to count."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family
