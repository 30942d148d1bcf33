"""The detector: sleeps until the registry's next deadline, then flags what is due."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from watchdog.sidecar.registry import Registry

__all__ = ["Detector"]

logger = logging.getLogger("watchdog.sidecar")


class Detector:
    """Wakes exactly when the earliest open span may turn hung, or when told a nearer
    deadline arrived (:meth:`poke`). It never scans spans on a timer."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.wake_at: float | None = None
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Call after the registry changed: wakes the detector if a deadline moved closer."""
        due = self.registry.next_deadline()
        if due is not None and (self.wake_at is None or due < self.wake_at):
            self._wake.set()

    async def run(self) -> None:
        """Run until cancelled."""
        registry = self.registry
        while True:
            try:
                registry.expire()
            except Exception:
                # A bug here must not end detection for every other span.
                logger.exception("detector_failed")
            due = registry.next_deadline()
            self.wake_at = due
            self._wake.clear()
            if due is None:
                await self._wake.wait()
                continue
            delay = due - registry.clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
