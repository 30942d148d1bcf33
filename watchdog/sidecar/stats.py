"""What the sidecar counts as it goes, read by the metrics collector at scrape time.

:class:`IngestStats` is bumped by ingest (events accepted, refusals by reason);
:class:`SpanStats` listens to the registry (hung, orphaned and leaked spans, and the
duration histogram of ended spans). Both are plain integers keyed by bounded label
values (``labels.py``): nothing here builds a metric family, that is ``metrics.py``.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from typing import Final

from watchdog.sidecar.labels import BoundedLabels
from watchdog.sidecar.listener import RegistryListener
from watchdog.sidecar.records import OpenSpan

__all__ = ["IngestStats", "SpanStats", "bucket_edges"]

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
    """What ingest accepted and rejected. ``rejected`` tallies refusals by reason,
    whatever was refused (a request, a span start, a connection): each reason is
    served under the metric of its unit (:data:`REJECTION_UNITS`)."""

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
