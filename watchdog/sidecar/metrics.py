"""Prometheus metrics, computed from live state when scraped.

Gauges (open, hung, oldest age, processes) are read from the registry at scrape time
instead of being updated on every event; counters and the duration histogram are
plain integers bumped by the registry's listener. Labels are ``service`` and
``kind`` (plus ``reason`` and ``state`` where named) — never span or trace ids.

``service`` and ``kind`` are chosen by apps, and every new value would add series that
are never freed, here and in every Prometheus that scrapes us. :class:`BoundedLabels`
folds them: a kind the SDK does not define becomes ``other``, a service past
``limits.max_label_services`` becomes ``_overflow``, and each fold is counted.
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

from watchdog.sidecar.config import KINDS, LimitsConfig
from watchdog.sidecar.registry import OpenSpan, Registry, RegistryListener

__all__ = [
    "OTHER_KIND",
    "OVERFLOW_SERVICE",
    "PREFIX",
    "BoundedLabels",
    "IngestStats",
    "SpanStats",
    "WatchdogCollector",
    "bucket_edges",
]

PREFIX: Final = "agents_watchdog_"
# The label values folded ones become. "other" reads naturally beside the SDK's kinds,
# which are a closed set; a service is any name an app picks (install(service=...)),
# "other" included, so its overflow value is one no real service is likely to use.
OTHER_KIND: Final = "other"
OVERFLOW_SERVICE: Final = "_overflow"
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


class BoundedLabels:
    """The ``service`` and ``kind`` label values metrics may carry, in bounded number.

    Known kinds keep their name and any other kind is :data:`OTHER_KIND`. The first
    ``max_services`` services seen keep theirs for the life of the sidecar (their
    counters live as long); later ones share :data:`OVERFLOW_SERVICE`. Metric state is
    keyed by these values, so memory is bounded too. ``overflow`` counts, by label,
    the updates whose value was folded. Only metrics fold: logs, alerts and the JSON
    API keep the strings the app sent.
    """

    def __init__(self, max_services: int = LimitsConfig.max_label_services) -> None:
        self.max_services = max_services
        self._services: set[str] = set()
        # Both labels are always exported, zero until something is folded.
        self.overflow: Counter[str] = Counter({"service": 0, "kind": 0})

    def service(self, service: str, counted: bool = True) -> str:
        """The label value for ``service``; ``counted=False`` at scrape time, where the
        same spans are seen again on every scrape."""
        if service in self._services:
            return service
        if len(self._services) < self.max_services and service != OVERFLOW_SERVICE:
            self._services.add(service)
            return service
        if counted:
            self.overflow["service"] += 1
        return OVERFLOW_SERVICE

    def kind(self, kind: str, counted: bool = True) -> str:
        """The label value for ``kind``."""
        if kind in KINDS:
            return kind
        if counted:
            self.overflow["kind"] += 1
        return OTHER_KIND

    def span(self, span: OpenSpan) -> tuple[str, str]:
        """The ``(service, kind)`` label values of one span, counted."""
        return self.service(span.process.service), self.kind(span.kind)


class IngestStats:
    """What ingest accepted and rejected."""

    def __init__(self, labels: BoundedLabels | None = None) -> None:
        self.labels = labels or BoundedLabels()
        self.received: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()

    def count_received(self, service: str, events: int) -> None:
        """Count ``events`` span events accepted from ``service``."""
        self.received[self.labels.service(service)] += events


class SpanStats(RegistryListener):
    """Counters fed by the registry: hung spans so far and durations of ended spans."""

    def __init__(self, edges: tuple[float, ...], labels: BoundedLabels | None = None) -> None:
        self.edges = edges
        self.labels = labels or BoundedLabels()
        self.hung_total: Counter[tuple[str, str]] = Counter()
        self.orphaned_total: Counter[tuple[str, str]] = Counter()
        self.leaked_total: Counter[tuple[str, str]] = Counter()
        self.durations: dict[tuple[str, str], _Histogram] = {}

    def span_hung(self, span: OpenSpan, now: float) -> None:
        """Count a newly hung span."""
        self.hung_total[self.labels.span(span)] += 1

    def span_orphaned(self, span: OpenSpan, now: float) -> None:
        """Count a span left open by a process that died."""
        self.orphaned_total[self.labels.span(span)] += 1

    def span_leaked(self, span: OpenSpan, now: float) -> None:
        """Count a span whose owner finished without ending it."""
        self.leaked_total[self.labels.span(span)] += 1

    def span_ended(self, span: OpenSpan, duration: float | None, now: float) -> None:
        """Observe the duration of an ended span (unknown durations are not observed)."""
        if duration is None:
            return
        key = self.labels.span(span)
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
            PREFIX + "sender_errors",
            "Failures raised on an app's sender thread that it recovered from (it resyncs).",
            ["service"],
            self.registry.sender_errors,
        )
        yield _counter(
            PREFIX + "events_rejected",
            "Requests to the ingest endpoint refused, by reason (for open_span_limit: span "
            "starts refused past limits.max_open_spans).",
            ["reason"],
            self.ingest.rejected,
        )
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
