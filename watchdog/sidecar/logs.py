"""JSON-lines logging for the sidecar, and the log lines a hung span produces."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from watchdog.sidecar.registry import OpenSpan, ProcessRecord, RegistryListener, unknown_end

__all__ = ["JsonFormatter", "SpanLog", "configure_logging", "log_event", "span_fields"]

logger = logging.getLogger("watchdog.sidecar")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``event``, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record``; fields passed as ``extra={"fields": {...}}`` are merged in."""
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """Send the sidecar's logs (and uvicorn's) to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request with its full URL at INFO; for Slack and many webhooks
    # the URL is the secret.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def log_event(level: int, event: str, **fields: Any) -> None:
    """Log ``event`` with structured ``fields`` on the sidecar's logger."""
    logger.log(level, event, extra={"fields": fields})


def span_fields(span: OpenSpan, now: float) -> dict[str, Any]:
    """What an operator needs to find a span: where it runs and how long it has been open."""
    process = span.process
    return {
        "service": process.service,
        "host": process.info.host,
        "pid": process.info.pid,
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "kind": span.kind,
        "name": span.name,
        "agent": span.agent(),
        "age_seconds": round(now - span.started, 3),
        "threshold_seconds": span.threshold,
    }


def _process_fields(process: ProcessRecord) -> dict[str, Any]:
    info = process.info
    return {"service": info.service, "host": info.host, "pid": info.pid}


class SpanLog(RegistryListener):
    """Logs a line when a span is flagged, resumes, or recovers, and when processes come and go."""

    def process_joined(self, process: ProcessRecord, now: float) -> None:
        """Log a new process."""
        log_event(
            logging.INFO,
            "process_joined",
            **_process_fields(process),
            instance_id=process.info.instance_id,
            sdk_version=process.info.sdk_version,
        )

    def process_left(self, process: ProcessRecord, now: float) -> None:
        """Log a clean shutdown."""
        log_event(logging.INFO, "process_left", **_process_fields(process))

    def process_unresponsive(self, process: ProcessRecord, now: float) -> None:
        """Log a process that stopped reporting."""
        log_event(
            logging.WARNING,
            "process_unresponsive",
            **_process_fields(process),
            silent_seconds=round(process.silent_for(now), 3),
            open_spans=len(process.spans),
        )

    def process_responsive(self, process: ProcessRecord, now: float) -> None:
        """Log a process that reports again."""
        log_event(logging.INFO, "process_responsive", **_process_fields(process))

    def process_died(self, process: ProcessRecord, orphans: list[OpenSpan], now: float) -> None:
        """Log a process that is gone."""
        log_event(
            logging.ERROR,
            "process_died",
            **_process_fields(process),
            orphaned_spans=len(orphans),
        )

    def span_orphaned(self, span: OpenSpan, now: float) -> None:
        """Log a span its process left open."""
        log_event(logging.WARNING, "span_orphaned", **span_fields(span, now))

    def span_leaked(self, span: OpenSpan, now: float) -> None:
        """Note a span that can never end: a finding, not a page."""
        log_event(logging.INFO, "span_leaked", note=unknown_end(span), **span_fields(span, now))

    def process_blind(self, process: ProcessRecord, now: float) -> None:
        """Log a process whose runs cannot be watched."""
        log_event(
            logging.WARNING, "process_blind", reason=process.blind, **_process_fields(process)
        )

    def process_sighted(self, process: ProcessRecord, now: float) -> None:
        """Log a blind process whose runs are traced again."""
        log_event(logging.INFO, "process_sighted", **_process_fields(process))

    def span_hung(self, span: OpenSpan, now: float) -> None:
        """Log the flagged span."""
        log_event(logging.WARNING, "span_hung", reason=span.reason, **span_fields(span, now))

    def span_resumed(self, span: OpenSpan, now: float) -> None:
        """Log a container that is active again."""
        log_event(logging.INFO, "span_resumed", **span_fields(span, now))

    def span_ended(self, span: OpenSpan, duration: float | None, now: float) -> None:
        """Log the recovery of a span that had been flagged."""
        if span.state != "hung":
            return
        fields = span_fields(span, now)
        if duration is None and span.process.leaving == "exited":
            # It did not recover: its process shut down with it still open.
            log_event(logging.WARNING, "span_left_open", note=unknown_end(span), **fields)
            return
        fields["duration_seconds"] = None if duration is None else round(duration, 3)
        if duration is None:
            fields["note"] = f"{unknown_end(span)}; end time unknown"
        log_event(logging.WARNING, "span_recovered", **fields)
