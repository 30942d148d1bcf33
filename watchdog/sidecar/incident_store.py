"""The incident database: SQLite in WAL mode, driven from one thread of its own.

All database work runs on that thread, so a slow or full disk never stalls the event
loop; writes are queued and forgotten, reads are awaited. If the database cannot be
opened (unwritable, corrupt) or a write fails, the sidecar says so once in its log and
keeps detecting and alerting without it; reads then raise :class:`StoreUnavailable`
(``/v1/incidents`` answers 503). What becomes an incident is ``incidents.py``.
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

from watchdog.sidecar.config import IncidentConfig
from watchdog.sidecar.logs import log_event

__all__ = [
    "COLUMNS",
    "IncidentStore",
    "StoreUnavailable",
    "add_event",
    "add_event_by_key",
    "close_incident",
    "insert_incident",
]

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


def insert_incident(db: sqlite3.Connection, row: dict[str, Any], detail: dict[str, Any]) -> None:
    """Insert ``row`` as a new incident with its ``detected`` timeline entry, in one
    transaction; sets ``row["id"]``."""
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


def add_event(
    db: sqlite3.Connection, ident: int, at: float, event: str, detail: dict[str, Any]
) -> None:
    """Append one entry to incident ``ident``'s timeline."""
    db.execute("INSERT INTO timeline VALUES (?, ?, ?, ?)", (ident, at, event, json.dumps(detail)))


def close_incident(
    db: sqlite3.Connection,
    ident: int,
    state: str,
    ended_at: float,
    duration: float | None,
    resolution: str,
) -> None:
    """Close incident ``ident`` as ``state`` and add the closing entry to its timeline,
    in one transaction; an incident already closed stays as it was."""
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


def add_event_by_key(
    db: sqlite3.Connection, key: str, at: float, event: str, detail: dict[str, Any]
) -> None:
    """Append one entry to the timeline of the latest incident of span ``key``, if any."""
    row = db.execute(
        "SELECT id FROM incidents WHERE key = ? ORDER BY id DESC LIMIT 1", (key,)
    ).fetchone()
    if row is not None:
        add_event(db, row[0], at, event, detail)
