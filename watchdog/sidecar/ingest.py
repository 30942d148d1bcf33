"""Ingest: ``POST /v1/events``, where every span event from the apps comes in.

A batch passes the gate (token, content type, body size and time), is decoded and
validated (``protocol.decode_batch``), checked against what was already applied from
its process and against the limits (``limits.Admission``), then applied to the
registry. The reply carries the commands queued for that process (cancel, dump
stacks) and whether it should resync. The first batches of a process also start
proving that its claimed pid owns the connection (``identity``), off the event loop.

Every refusal is counted in ``events_rejected_total{reason}`` and logged, at most once
a minute per reason, so a misconfigured app cannot flood the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from watchdog.protocol import PROTOCOL_VERSION, Batch, Reply, UnsupportedVersion, decode_batch
from watchdog.sidecar.commands import CommandQueue
from watchdog.sidecar.gate import Gate, MsgspecJSONResponse, RequestRejected, error_response
from watchdog.sidecar.identity import SocketTable, verify_credentials
from watchdog.sidecar.limits import Admission
from watchdog.sidecar.logs import log_event
from watchdog.sidecar.loops import LoopWatch
from watchdog.sidecar.metrics import IngestStats
from watchdog.sidecar.registry import CLIENT_TIMEOUT_FIX, ProcessRecord, Registry

__all__ = ["Ingest"]

_REJECTION_LOG_INTERVAL: Final = 60.0
# A process whose identity could not be proven after this many tries stays unverified.
_VERIFY_ATTEMPTS: Final = 3


class Ingest:
    """The ingest endpoint and what it needs; :meth:`receive` is the route."""

    def __init__(
        self,
        sidecar_id: str,
        gate: Gate,
        registry: Registry,
        admission: Admission,
        commands: CommandQueue,
        stats: IngestStats,
        loop_watch: LoopWatch,
        poke_detector: Callable[[], None],
    ) -> None:
        self.sidecar_id = sidecar_id
        self.gate = gate
        self.registry = registry
        self.admission = admission
        self.commands = commands
        self.stats = stats
        self.loop_watch = loop_watch
        self.poke_detector = poke_detector
        self.socket_table = SocketTable()
        self._background: set[asyncio.Task[None]] = set()
        self._rejections_logged: dict[str, float] = {}

    async def receive(self, request: Request) -> Response:
        """``POST /v1/events``: apply a batch from an app's processor."""
        try:
            batch = await self._admit(request)
        except RequestRejected as exc:
            self.stats.rejected[exc.reason] += 1
            self._log_rejection(exc.reason, exc.detail, request)
            raise
        refused = self.stats.rejected["open_span_limit"]
        if batch.results:
            # Before the events: a cancel's result precedes the span end it caused.
            self.commands.deliver(batch.results)
        try:
            wants_resync = self.registry.apply(batch)
        except Exception:
            # A bug must cost one batch, not the sidecar: what was recorded stays, the
            # app gets a 500 and will resync.
            logging.getLogger("watchdog.sidecar").exception("ingest_failed")
            self.stats.rejected["internal_error"] += 1
            return error_response(500, "internal_error", "the sidecar failed to apply this batch")
        if self.stats.rejected["open_span_limit"] != refused:
            self._log_rejection(
                "open_span_limit",
                f"span starts refused: {batch.process.service} (pid {batch.process.pid}) "
                f"has {self.registry.max_open_spans} spans open (limits.max_open_spans)",
                request,
            )
        received = len(batch.events) + len(batch.resync or ())
        if received:
            self.stats.count_received(batch.process.service, received)
        self.poke_detector()
        instance = batch.process.instance_id
        process = self.registry.processes.get(instance)
        if process is not None:
            self._follow(process, request)
        reply = Reply(
            v=PROTOCOL_VERSION,
            sidecar_id=self.sidecar_id,
            resync=wants_resync,
            commands=self.commands.take(instance),
        )
        return MsgspecJSONResponse(reply)

    async def _admit(self, request: Request) -> Batch:
        """The request's batch, decoded and admitted; otherwise the refusal."""
        self.gate.authorize(request)
        content_type = request.headers.get("content-type", "application/json")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise RequestRejected(
                415,
                "unsupported_media_type",
                f"expected application/json, got {content_type!r}",
            )
        body = await self.gate.read_body(request)
        try:
            batch = decode_batch(body)
        except UnsupportedVersion as exc:
            raise RequestRejected(400, "unsupported_version", str(exc)) from None
        except ValueError as exc:
            reason = "malformed_json" if str(exc).startswith("malformed") else "invalid_batch"
            raise RequestRejected(
                400 if reason == "malformed_json" else 422, reason, str(exc)
            ) from None
        if self.registry.is_stale(batch):
            raise RequestRejected(
                409,
                "stale_batch",
                "sent before a batch already applied from this process (a late request); "
                "its content has been sent again since",
            )
        refusal = self.admission.check(batch, self.registry.clock())
        if refusal is not None:
            raise RequestRejected(429, refusal.reason, refusal.detail)
        return batch

    def _follow(self, process: ProcessRecord, request: Request) -> None:
        """What a batch tells about its process beyond its spans: a blocked event loop,
        client timeouts too long to catch a hang, and who it is."""
        self.loop_watch.check(process)
        if process.timeout_warning and not process.timeout_warned:
            self._warn_client_timeouts(process)
        if not process.verified and process.verify_attempts < _VERIFY_ATTEMPTS:
            process.verify_attempts += 1
            self._spawn(self._verify(process, request))

    def _log_rejection(self, reason: str, detail: str, request: Request) -> None:
        now = time.monotonic()
        # One line per reason per minute: a misconfigured app must not flood the log.
        if now - self._rejections_logged.get(reason, -_REJECTION_LOG_INTERVAL) >= (
            _REJECTION_LOG_INTERVAL
        ):
            self._rejections_logged[reason] = now
            log_event(
                logging.WARNING,
                "request_rejected",
                reason=reason,
                detail=detail,
                path=request.url.path,
                client=request.client.host if request.client else None,
            )

    def _warn_client_timeouts(self, process: ProcessRecord) -> None:
        """Log, once per process, that its default OpenAI client lets a model call hang
        past the response threshold (see ``registry.client_timeout_warning``)."""
        process.timeout_warned = True
        timeouts = process.info.client_timeouts
        log_event(
            logging.WARNING,
            "client_timeout_too_long",
            service=process.service,
            host=process.info.host,
            pid=process.info.pid,
            instance_id=process.info.instance_id,
            read=None if timeouts is None else timeouts.read,
            connect=None if timeouts is None else timeouts.connect,
            source=None if timeouts is None else timeouts.source,
            threshold=self.registry.response_threshold(),
            detail=process.timeout_warning,
            fix=CLIENT_TIMEOUT_FIX,
        )

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        # Held until done: the loop keeps only a weak reference to a task.
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _verify(self, process: ProcessRecord, request: Request) -> None:
        """Prove (or not) that the claimed pid owns this connection; off the loop."""
        opened_before = time.monotonic()  # the request came in on it
        credentials = request.scope.get("extensions", {}).get("peer_credentials")
        if credentials is not None:
            # A Unix socket: the kernel itself says who is on the other end.
            verified, why = await asyncio.to_thread(verify_credentials, process.info, credentials)
        else:
            # The connection's own ends, read from its socket (see server.py), never
            # request.client: a proxy header could name another process's connection.
            ends = request.scope.get("extensions", {}).get("peer_address")
            client, server = ends if ends is not None else (None, None)
            verified, why = await self.socket_table.verify(
                process.info, client, server, opened_before
            )
        process.verified, process.verify_note = verified, why
        log_event(
            logging.INFO if verified else logging.WARNING,
            "process_identity",
            verified=verified,
            detail=why,
            service=process.service,
            pid=process.info.pid,
            instance_id=process.info.instance_id,
        )
