"""Incident history: each flagged span becomes an incident with a timeline.

:class:`IncidentLog` listens to the registry, the abort ladder, stack capture and alert
delivery, and queues what they tell as rows and timeline entries; the SQLite store that
writes them on its own thread is ``incident_store.py`` (re-exported here).

After a restart, incidents still open are *reconciled*: when the same span (same
process instance, same span id) comes back through the apps' resync and is flagged
again, the incident continues instead of a new one being opened. Those that do not
come back within ``reconcile_seconds`` are closed — ``resolved`` with an unknown end if
their process reported again, ``orphaned`` if it did not.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from watchdog.sidecar.alerts import Alert
from watchdog.sidecar.incident_store import (
    IncidentStore,
    StoreUnavailable,
    add_event,
    add_event_by_key,
    close_incident,
    insert_incident,
)
from watchdog.sidecar.registry import OpenSpan, Registry, RegistryListener, unknown_end

# The store is re-exported: the sidecar's wiring imports it from here.
__all__ = ["IncidentLog", "IncidentStore", "StoreUnavailable"]


class IncidentLog(RegistryListener):
    """Turns registry events and alert deliveries into incidents and timeline entries."""

    def __init__(self, store: IncidentStore, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.wall = wall
        # key -> row dict (with "id" once the database thread has inserted it).
        self.current: dict[str, dict[str, Any]] = {}
        # Incidents left open by the previous run, waiting for their span to come back.
        self.reconciling: dict[str, int] = {}

    async def load_open(self) -> None:
        """Read incidents the previous run left open, to be reconciled."""
        if self.store.available:
            self.reconciling = await self.store.read(IncidentStore.open_incidents)

    def continued(self, key: str) -> bool:
        """True when ``key``'s incident was already open (and alerted) before a restart."""
        return key in self.reconciling or bool(self.current.get(key, {}).get("continued"))

    def finish_reconciling(self, registry: Registry) -> None:
        """Close incidents whose span did not come back after the restart."""
        instances = set(registry.processes)
        now = self.wall()
        for key, ident in self.reconciling.items():
            instance = key.split("/", 1)[0]
            if instance in instances:
                state, note = "resolved", "ended while the sidecar was down; end time unknown"
            else:
                state, note = "orphaned", "its process did not report after the sidecar restarted"
            self.store.write(close_incident, ident, state, now, None, note)
        self.reconciling = {}

    def span_hung(self, span: OpenSpan, now: float) -> None:
        """Open an incident (or continue one from before a restart)."""
        key = span.key
        wall = self.wall()
        ident = self.reconciling.pop(key, None)
        if ident is not None:
            self.current[key] = {"id": ident, "continued": True}
            self.store.write(
                add_event, ident, wall, "redetected", {"note": "after sidecar restart"}
            )
            return
        info = span.process.info
        row: dict[str, Any] = {
            "key": key,
            "alertname": "AgentSpanHung",
            "state": "open",
            "severity": span.severity,
            "service": info.service,
            "host": info.host,
            "pid": info.pid,
            "instance_id": info.instance_id,
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "kind": span.kind,
            "name": span.name,
            "agent": span.agent(),
            "reason": span.reason,
            "threshold": span.threshold,
            "started_at": wall - (now - span.started),
            "detected_at": wall,
        }
        self.current[key] = row
        detail = {"age_seconds": round(now - span.started, 3), "reason": span.reason}
        self.store.write(insert_incident, row, detail)

    def _ident(self, key: str) -> int | None:
        row = self.current.get(key)
        return None if row is None else row.get("id")

    def span_resumed(self, span: OpenSpan, now: float) -> None:
        """A container became active again: its incident resolves."""
        self._close(span, None, "activity resumed below it")

    def span_ended(self, span: OpenSpan, duration: float | None, now: float) -> None:
        """The span ended: its incident resolves with the total duration."""
        note = "span ended" if duration is not None else unknown_end(span)
        self._close(span, duration, note)

    def span_orphaned(self, span: OpenSpan, now: float) -> None:
        """The span's process died: its incident closes as orphaned."""
        self._close(span, None, "its process died with the span open", state="orphaned")

    def _close(
        self, span: OpenSpan, duration: float | None, note: str, state: str = "resolved"
    ) -> None:
        key = span.key
        if key not in self.current:
            return
        row = self.current.pop(key)
        # The insert is queued before this update on the same thread: the id is set
        # by the time the update runs, so it is read there, not here.
        ended = self.wall()

        def close(db: sqlite3.Connection) -> None:
            if row.get("id") is not None:
                close_incident(db, row["id"], state, ended, duration, note)

        self.store.write(close)

    def abort_step(self, span: OpenSpan, step: str, outcome: str, detail: str) -> None:
        """Record one step of the abort ladder in the span's incident."""
        row = self.current.get(span.key)
        if row is None:
            return
        at = self.wall()
        entry = {"step": step, "outcome": outcome, "detail": detail}

        def record(db: sqlite3.Connection) -> None:
            if row.get("id") is not None:
                add_event(db, row["id"], at, "abort", entry)

        self.store.write(record)

    def stack_captured(
        self, span: OpenSpan, source: str, stack: str | None, note: str, cause: str | None = None
    ) -> None:
        """Record the stacks (or why there are none) and the probable cause in the span's
        incident."""
        row = self.current.get(span.key)
        if row is None:
            return
        at = self.wall()
        entry = {"source": source, "note": note, "cause": cause, "stack": stack}

        def record(db: sqlite3.Connection) -> None:
            if row.get("id") is not None:
                add_event(db, row["id"], at, "stacks", entry)

        self.store.write(record)

    def alert_delivered(self, sink: str, alert: Alert, outcome: str, detail: str) -> None:
        """Record one alert delivery (or failure) in the incident's timeline."""
        row = self.current.get(alert.key)
        at = self.wall()
        entry = {"sink": sink, "status": alert.status, "outcome": outcome, "detail": detail}
        if row is not None:

            def record(db: sqlite3.Connection) -> None:
                if row.get("id") is not None:
                    add_event(db, row["id"], at, "alert", entry)

            self.store.write(record)
        elif alert.status == "resolved":
            # The incident closed first; find it by key among the latest.
            self.store.write(lambda db: add_event_by_key(db, alert.key, at, "alert", entry))
