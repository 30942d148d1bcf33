"""The ``service`` and ``kind`` label values metrics may carry, in bounded number.

``service`` and ``kind`` are chosen by apps, and every new value would add series that
are never freed, here and in every Prometheus that scrapes us. :class:`BoundedLabels`
folds them: a kind the SDK does not define becomes ``other``, a service past
``limits.max_label_services`` becomes ``_overflow``, and each fold is counted (served
as ``agents_watchdog_label_overflow_total{label}`` by ``metrics.py``).
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from watchdog.sidecar.config import KINDS, LimitsConfig
from watchdog.sidecar.registry import OpenSpan

__all__ = ["OTHER_KIND", "OVERFLOW_SERVICE", "BoundedLabels"]

# The label values folded ones become. "other" reads naturally beside the SDK's kinds,
# which are a closed set; a service is any name an app picks (install(service=...)),
# "other" included, so its overflow value is one no real service is likely to use.
OTHER_KIND: Final = "other"
OVERFLOW_SERVICE: Final = "_overflow"


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
