"""Prometheus metrics, computed from live state when scraped.

Gauges (open, hung, oldest age, processes) are read from the registry at scrape time
instead of being updated on every event; counters and the duration histogram are
plain integers bumped by the registry's listener. Labels are ``service`` and
``kind`` (plus ``reason`` and ``state`` where named) — never span or trace ids.
"""

from __future__ import annotations

import bisect
import platform
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from watchdog.sidecar.registry import OpenSpan, Registry, RegistryListener

__all__ = ["PREFIX", "IngestStats", "SpanStats", "WatchdogCollector", "bucket_edges"]

PREFIX: Final = "agents_watchdog_"
_BASE_EDGES: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def bucket_edges(thresholds: Iterable[float]) -> tuple[float, ...]:
    """Histogram upper bounds: a fixed ladder plus every configured threshold, so a
    query can tell exactly how many spans finished within their threshold."""
    return tuple(sorted(set(_BASE_EDGES) | {float(t) for t in thresholds}))


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.total = 0.0


class IngestStats:
    """What ingest accepted and rejected."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()


class SpanStats(RegistryListener):
    """Counters fed by the registry: hung spans so far and durations of ended spans."""

    def __init__(self, edges: tuple[float, ...]) -> None:
        self.edges = edges
        self.hung_total: Counter[tuple[str, str]] = Counter()
        self.orphaned_total: Counter[tuple[str, str]] = Counter()
        self.durations: dict[tuple[str, str], _Histogram] = {}

    def span_hung(self, span: OpenSpan, now: float) -> None:
        """Count a newly hung span."""
        self.hung_total[(span.process.service, span.kind)] += 1

    def span_orphaned(self, span: OpenSpan, now: float) -> None:
        """Count a span left open by a process that died."""
        self.orphaned_total[(span.process.service, span.kind)] += 1

    def span_ended(self, span: OpenSpan, duration: float | None, now: float) -> None:
        """Observe the duration of an ended span (unknown durations are not observed)."""
        if duration is None:
            return
        key = (span.process.service, span.kind)
        histogram = self.durations.get(key)
        if histogram is None:
            histogram = self.durations[key] = _Histogram(len(self.edges) + 1)
        histogram.counts[bisect.bisect_left(self.edges, duration)] += 1
        histogram.total += duration


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
            processes[process.status] += 1
            for report in process.loops:
                lag[process.service] = max(lag.get(process.service, 0.0), report.lag)
            service = process.service
            for kind, spans in process.spans_by_kind.items():
                key = (service, kind)
                open_count[key] += len(spans)
                first = next(iter(spans.values()))
                if first.started < oldest_start.get(key, now):
                    oldest_start[key] = first.started
            for kind, hung in process.hung.items():
                if hung:
                    hung_count[(service, kind)] += hung
        for key, value in sorted(open_count.items()):
            open_spans.add_metric(list(key), value)
            oldest.add_metric(list(key), max(0.0, now - oldest_start.get(key, now)))
            hung_spans.add_metric(list(key), hung_count.get(key, 0))
        yield open_spans
        yield hung_spans
        yield oldest

        yield _counter(
            PREFIX + "hung_spans",
            "Spans flagged as hung since the sidecar started.",
            labels,
            self.span_stats.hung_total,
        )

        yield _counter(
            PREFIX + "orphaned_spans",
            "Spans left open by a process that died (they can never end).",
            labels,
            self.span_stats.orphaned_total,
        )

        duration = HistogramMetricFamily(
            PREFIX + "span_duration_seconds",
            "Duration of spans that ended (bucket edges include every configured threshold).",
            labels=labels,
        )
        edges = [*(_format(edge) for edge in self.span_stats.edges), "+Inf"]
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
            PREFIX + "events_rejected",
            "Requests to the ingest endpoint refused, by reason (for open_span_limit: span "
            "starts refused past limits.max_open_spans).",
            ["reason"],
            self.ingest.rejected,
        )

        states = GaugeMetricFamily(
            PREFIX + "processes", "App processes known to the sidecar, by state.", labels=["state"]
        )
        for state in ("live", "unresponsive", "dead"):
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


def _counter(
    name: str, documentation: str, labels: list[str], counts: Mapping[Any, int]
) -> CounterMetricFamily:
    """A counter family from a mapping of label value(s) to count."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


def _format(edge: float) -> str:
    return str(int(edge)) + ".0" if edge == int(edge) else repr(edge)
