"""How the rest of the sidecar hears what happens in the registry.

:class:`RegistryListener` names every event (a span hung, resumed, ended, orphaned or
leaked; a process joined, left, went quiet, died, or went blind); :class:`Fanout` passes
each to several listeners (alerts, incidents, metrics, stacks, abort, logs), so that one
failing cannot stop the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from watchdog.sidecar.records import OpenSpan, ProcessRecord

__all__ = ["Fanout", "RegistryListener"]


class RegistryListener:
    """Receives what happens in the registry; every method is optional to override."""

    def process_joined(self, process: ProcessRecord, now: float) -> None:
        """A process sent its first batch."""

    def process_left(self, process: ProcessRecord, now: float) -> None:
        """A process shut down cleanly."""

    def span_hung(self, span: OpenSpan, now: float) -> None:
        """A span passed its deadline."""

    def span_resumed(self, span: OpenSpan, now: float) -> None:
        """A container flagged as idle saw activity below it again."""

    def span_ended(self, span: OpenSpan, duration: float | None, now: float) -> None:
        """A span left the registry; ``duration`` is None when its end time is unknown."""

    def process_unresponsive(self, process: ProcessRecord, now: float) -> None:
        """Heartbeats stopped arriving (the process may be wedged or paused)."""

    def process_responsive(self, process: ProcessRecord, now: float) -> None:
        """Heartbeats arrive again."""

    def process_died(self, process: ProcessRecord, orphans: list[OpenSpan], now: float) -> None:
        """The process is gone (pid gone or reused); ``orphans`` were open in it."""

    def span_orphaned(self, span: OpenSpan, now: float) -> None:
        """A span's process died with the span open: it can never end."""

    def span_leaked(self, span: OpenSpan, now: float) -> None:
        """The app found the span can never end (its owner finished); it leaves the open
        set (``span_ended`` with no duration follows)."""

    def process_blind(self, process: ProcessRecord, now: float) -> None:
        """The process reports that its agent runs cannot be watched (``blind``)."""

    def process_sighted(self, process: ProcessRecord, now: float) -> None:
        """A blind process's runs can be watched again."""


_LISTENER_EVENTS: Final = tuple(name for name in vars(RegistryListener) if not name.startswith("_"))


class Fanout(RegistryListener):
    """Passes each registry event to several listeners; one failing cannot stop the others
    nor leave the registry half-updated."""

    def __init__(
        self, listeners: Sequence[RegistryListener], on_error: Callable[[str], None]
    ) -> None:
        self.listeners = tuple(listeners)
        self.on_error = on_error
        # Per event, the listeners that handle it, as bound methods looked up once: the
        # base class's methods do nothing, and some events come once per span.
        self._handlers: dict[str, tuple[tuple[Callable[..., None], str], ...]] = {
            method: tuple(
                (handler, f"{type(listener).__name__}.{method}")
                for listener in self.listeners
                for handler in (getattr(listener, method),)
                if getattr(handler, "__func__", None) is not getattr(RegistryListener, method)
            )
            for method in _LISTENER_EVENTS
        }

    def _each(self, method: str, *args: object) -> None:
        for handler, where in self._handlers[method]:
            try:
                handler(*args)
            except Exception:
                self.on_error(where)

    def process_joined(self, process: ProcessRecord, now: float) -> None:
        """Fan out."""
        self._each("process_joined", process, now)

    def process_left(self, process: ProcessRecord, now: float) -> None:
        """Fan out."""
        self._each("process_left", process, now)

    def process_unresponsive(self, process: ProcessRecord, now: float) -> None:
        """Fan out."""
        self._each("process_unresponsive", process, now)

    def process_responsive(self, process: ProcessRecord, now: float) -> None:
        """Fan out."""
        self._each("process_responsive", process, now)

    def process_died(self, process: ProcessRecord, orphans: list[OpenSpan], now: float) -> None:
        """Fan out."""
        self._each("process_died", process, orphans, now)

    def span_orphaned(self, span: OpenSpan, now: float) -> None:
        """Fan out."""
        self._each("span_orphaned", span, now)

    def span_leaked(self, span: OpenSpan, now: float) -> None:
        """Fan out."""
        self._each("span_leaked", span, now)

    def process_blind(self, process: ProcessRecord, now: float) -> None:
        """Fan out."""
        self._each("process_blind", process, now)

    def process_sighted(self, process: ProcessRecord, now: float) -> None:
        """Fan out."""
        self._each("process_sighted", process, now)

    def span_hung(self, span: OpenSpan, now: float) -> None:
        """Fan out."""
        self._each("span_hung", span, now)

    def span_resumed(self, span: OpenSpan, now: float) -> None:
        """Fan out."""
        self._each("span_resumed", span, now)

    def span_ended(self, span: OpenSpan, duration: float | None, now: float) -> None:
        """Fan out."""
        self._each("span_ended", span, duration, now)
