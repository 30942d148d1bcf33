"""Incident history in SQLite (WAL): each flagged span becomes an incident with a timeline.

All database work runs on one thread of its own, so a slow or full disk never stalls
the event loop; writes are queued and forgotten, reads are awaited. If the database
cannot be opened (unwritable, corrupt) or a write fails, the sidecar says so once in its
log and keeps detecting and alerting without it; ``/v1/incidents`` then answers 503.

After a restart, incidents still open are *reconciled*: when the same span (same
process instance, same span id) comes back through the apps' resync and is flagged
again, the incident continues instead of a new one being opened. Those that do not
come back within ``reconcile_seconds`` are closed — ``resolved`` with an unknown end if
their process reported again, ``orphaned`` if it did not.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from watchdog.sidecar.alerts import Alert
from watchdog.sidecar.config import IncidentConfig
from watchdog.sidecar.logs import log_event
from watchdog.sidecar.registry import OpenSpan, Registry, RegistryListener, unknown_end

__all__ = ["IncidentLog", "IncidentStore", "StoreUnavailable"]

T = TypeVar("T")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    alertname TEXT NOT NULL,
    state TEXT NOT NULL,
    severity TEXT NOT NULL,
    service TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    instance_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    agent TEXT,
    reason TEXT,
    threshold REAL NOT NULL,
    started_at REAL NOT NULL,
    detected_at REAL NOT NULL,
    ended_at REAL,
    duration REAL,
    resolution TEXT
);
CREATE INDEX IF NOT EXISTS incidents_detected ON incidents (detected_at);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents (state, key);
CREATE TABLE IF NOT EXISTS timeline (
    incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timeline_incident ON timeline (incident_id, at);
"""
COLUMNS: Final = [
    "id",
    "key",
    "alertname",
    "state",
    "severity",
    "service",
    "host",
    "pid",
    "instance_id",
    "trace_id",
    "span_id",
    "kind",
    "name",
    "agent",
    "reason",
    "threshold",
    "started_at",
    "detected_at",
    "ended_at",
    "duration",
    "resolution",
]


class StoreUnavailable(Exception):
    """The incident database cannot be used; the message says why."""


class IncidentStore:
    """The SQLite database, driven from one worker thread."""

    def __init__(self, config: IncidentConfig) -> None:
        self.config = config
        self.path = config.path
        self.problem: str | None = None if config.enabled else "incident history is disabled"
        self._db: sqlite3.Connection | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="agents-watchdog-incidents"
        )
        self._write_failing = False

    # -- lifecycle (called from the event loop) ---------------------------------------

    async def open(self) -> None:
        """Open (creating if needed) and prune; on failure record why and carry on."""
        if not self.config.enabled:
            return
        try:
            await self._run(self._open)
        except Exception as exc:
            self.problem = f"cannot use {self.path}: {exc}"
            log_event(logging.ERROR, "incident_store_unavailable", path=self.path, error=str(exc))

    def _open(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            if os.path.exists(directory) and not os.path.isdir(directory):
                raise NotADirectoryError(f"{directory} exists and is not a directory")
            # Owner-only when created here: incidents hold stacks and names of the apps.
            os.makedirs(directory, mode=0o700, exist_ok=True)
            if os.statvfs(directory).f_flag & os.ST_RDONLY:
                # SQLite would only say "unable to open database file".
                raise OSError(errno.EROFS, f"{directory} is on a read-only file system")
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=2000")
            db.executescript(SCHEMA)
            # Catches a damaged file now, with a clear message, rather than later.
            result = db.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {result}")
        except BaseException:
            db.close()
            raise
        self._db = db
        self._prune()

    async def close(self) -> None:
        """Finish queued writes and close."""
        await self._run(self._close)
        self._pool.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def available(self) -> bool:
        """True when incidents are being recorded."""
        return self._db is not None and self.problem is None

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self._pool.submit(function, *args))

    def write(self, function: Callable[..., Any], *args: Any) -> None:
        """Queue a write; a failure is logged once per streak, never raised."""
        if self.problem is not None and self._db is None:
            return
        self._pool.submit(self._write, function, *args)

    def _write(self, function: Callable[..., Any], *args: Any) -> None:
        if self._db is None:
            return
        try:
            function(self._db, *args)
        except Exception as exc:  # sqlite3.Error mostly; nothing may kill this thread
            if not self._write_failing:
                self._write_failing = True
                log_event(logging.ERROR, "incident_write_failed", path=self.path, error=str(exc))
        else:
            if self._write_failing:
                self._write_failing = False
                log_event(logging.INFO, "incident_writes_recovered", path=self.path)

    async def read(self, function: Callable[..., T], *args: Any) -> T:
        """Run a query on the database thread; raises :class:`StoreUnavailable`."""
        if not self.available:
            raise StoreUnavailable(self.problem or "incident history is not open")

        def query() -> T:
            assert self._db is not None
            return function(self._db, *args)

        try:
            return await self._run(query)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"reading {self.path} failed: {exc}") from None

    def _prune(self) -> None:
        assert self._db is not None
        cutoff = time.time() - self.config.max_age_days * 86400
        self._db.execute(
            "DELETE FROM incidents WHERE state != 'open' AND detected_at < ?", (cutoff,)
        )
        self._db.execute(
            "DELETE FROM incidents WHERE state != 'open' AND id NOT IN "
            "(SELECT id FROM incidents ORDER BY id DESC LIMIT ?)",
            (self.config.max_count,),
        )

    def prune(self) -> None:
        """Apply retention (by age and by count) to closed incidents."""
        self.write(lambda db: self._prune())

    # -- queries (run on the database thread) -----------------------------------------

    @staticmethod
    def open_incidents(db: sqlite3.Connection) -> dict[str, int]:
        """Incidents left open by a previous run: key -> id."""
        rows = db.execute("SELECT key, id FROM incidents WHERE state = 'open'").fetchall()
        return {key: ident for key, ident in rows}

    @staticmethod
    def list(
        db: sqlite3.Connection, filters: dict[str, Any], limit: int, before_id: int | None
    ) -> list[dict[str, Any]]:
        """Incidents, newest first, matching ``filters`` (service, kind, state, since)."""
        where, args = [], []
        for column in ("service", "kind", "state"):
            if filters.get(column) is not None:
                where.append(f"{column} = ?")
                args.append(filters[column])
        if filters.get("since") is not None:
            where.append("detected_at >= ?")
            args.append(filters["since"])
        if before_id is not None:
            where.append("id < ?")
            args.append(before_id)
        sql = f"SELECT {', '.join(COLUMNS)} FROM incidents"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = db.execute(sql, (*args, limit)).fetchall()
        return [dict(zip(COLUMNS, row, strict=True)) for row in rows]

    @staticmethod
    def get(db: sqlite3.Connection, ident: int) -> dict[str, Any] | None:
        """One incident with its timeline, or None."""
        row = db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM incidents WHERE id = ?", (ident,)
        ).fetchone()
        if row is None:
            return None
        incident = dict(zip(COLUMNS, row, strict=True))
        incident["timeline"] = [
            {"at": at, "event": event, "detail": json.loads(detail)}
            for at, event, detail in db.execute(
                "SELECT at, event, detail FROM timeline WHERE incident_id = ? ORDER BY rowid",
                (ident,),
            )
        ]
        return incident


def _insert(db: sqlite3.Connection, row: dict[str, Any], detail: dict[str, Any]) -> None:
    columns = [c for c in COLUMNS if c != "id"]
    with db:
        db.execute("BEGIN")
        cursor = db.execute(
            f"INSERT INTO incidents ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [row.get(c) for c in columns],
        )
        row["id"] = cursor.lastrowid
        db.execute(
            "INSERT INTO timeline VALUES (?, ?, 'detected', ?)",
            (cursor.lastrowid, row["detected_at"], json.dumps(detail)),
        )


def _event(
    db: sqlite3.Connection, ident: int, at: float, event: str, detail: dict[str, Any]
) -> None:
    db.execute("INSERT INTO timeline VALUES (?, ?, ?, ?)", (ident, at, event, json.dumps(detail)))


def _close_incident(
    db: sqlite3.Connection,
    ident: int,
    state: str,
    ended_at: float,
    duration: float | None,
    resolution: str,
) -> None:
    with db:
        db.execute("BEGIN")
        db.execute(
            "UPDATE incidents SET state = ?, ended_at = ?, duration = ?, resolution = ? "
            "WHERE id = ? AND state = 'open'",
            (state, ended_at, duration, resolution, ident),
        )
        db.execute(
            "INSERT INTO timeline VALUES (?, ?, ?, ?)",
            (ident, ended_at, state, json.dumps({"resolution": resolution, "duration": duration})),
        )


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
            self.store.write(_close_incident, ident, state, now, None, note)
        self.reconciling = {}

    def span_hung(self, span: OpenSpan, now: float) -> None:
        """Open an incident (or continue one from before a restart)."""
        key = span.key
        wall = self.wall()
        ident = self.reconciling.pop(key, None)
        if ident is not None:
            self.current[key] = {"id": ident, "continued": True}
            self.store.write(_event, ident, wall, "redetected", {"note": "after sidecar restart"})
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
        self.store.write(_insert, row, detail)

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
                _close_incident(db, row["id"], state, ended, duration, note)

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
                _event(db, row["id"], at, "abort", entry)

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
                _event(db, row["id"], at, "stacks", entry)

        self.store.write(record)

    def alert_delivered(self, sink: str, alert: Alert, outcome: str, detail: str) -> None:
        """Record one alert delivery (or failure) in the incident's timeline."""
        row = self.current.get(alert.key)
        at = self.wall()
        entry = {"sink": sink, "status": alert.status, "outcome": outcome, "detail": detail}
        if row is not None:

            def record(db: sqlite3.Connection) -> None:
                if row.get("id") is not None:
                    _event(db, row["id"], at, "alert", entry)

            self.store.write(record)
        elif alert.status == "resolved":
            # The incident closed first; find it by key among the latest.
            self.store.write(lambda db: _event_by_key(db, alert.key, at, "alert", entry))


def _event_by_key(
    db: sqlite3.Connection, key: str, at: float, event: str, detail: dict[str, Any]
) -> None:
    row = db.execute(
        "SELECT id FROM incidents WHERE key = ? ORDER BY id DESC LIMIT 1", (key,)
    ).fetchone()
    if row is not None:
        _event(db, row[0], at, event, detail)
