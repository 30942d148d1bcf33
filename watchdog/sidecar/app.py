"""The sidecar's HTTP surface (Starlette): ingest, span listing, metrics, probes."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.metadata
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from watchdog.protocol import PROTOCOL_VERSION, Reply, UnsupportedVersion, decode_batch, encode
from watchdog.sidecar.config import KINDS, Config
from watchdog.sidecar.detector import Detector
from watchdog.sidecar.logs import SpanLog, log_event
from watchdog.sidecar.metrics import IngestStats, SpanStats, WatchdogCollector, bucket_edges
from watchdog.sidecar.registry import Fanout, OpenSpan, Registry

__all__ = ["Sidecar", "version"]

_SPAN_FILTERS: Final = frozenset({"state", "kind", "service", "limit"})
_STATES: Final = ("open", "hung")
_REJECTION_LOG_INTERVAL: Final = 60.0


def version() -> str:
    """The installed version of agents-watchdog."""
    try:
        return importlib.metadata.version("agents-watchdog")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class RequestRejected(Exception):
    """A request refused with a 4xx; ``reason`` is the metric label, ``detail`` the why."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


def _error(status: int, reason: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": reason, "detail": detail}, status_code=status)


def _iso(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class Sidecar:
    """One sidecar: its registry, detector, metrics and HTTP app, built from a config."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.sidecar_id = uuid.uuid4().hex
        self.version = version()
        self.ingest_stats = IngestStats()
        self.span_stats = SpanStats(bucket_edges(config.thresholds.edges()))
        self.registry = Registry(
            config.thresholds,
            listener=Fanout([self.span_stats, SpanLog()], self._listener_failed),
            clock=clock,
        )
        self.detector: Detector | None = None
        self.metrics = CollectorRegistry(auto_describe=False)
        self.metrics.register(
            WatchdogCollector(
                self.registry, self.span_stats, self.ingest_stats, self.version, clock
            )
        )
        self.ready = False
        self._rejections_logged: dict[str, float] = {}
        token = config.server.token
        self._token = token.encode() if token else None

    @staticmethod
    def _listener_failed(where: str) -> None:
        logging.getLogger("watchdog.sidecar").exception("listener_failed: %s", where)

    # -- lifecycle --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Start the detector with the server; stop it, and go unready, on shutdown."""
        self.detector = Detector(self.registry)
        task = asyncio.create_task(self.detector.run(), name="agents-watchdog-detector")
        self.ready = True
        try:
            yield
        finally:
            self.ready = False
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log_event(logging.INFO, "stopped", open_spans=self.registry.open_count)

    def app(self) -> Starlette:
        """The ASGI application."""
        return Starlette(
            routes=[
                Route("/v1/events", self.ingest, methods=["POST"]),
                Route("/v1/spans", self.list_spans, methods=["GET"]),
                Route("/metrics", self.metrics_endpoint, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/", self.index, methods=["GET"]),
            ],
            lifespan=self.lifespan,
        )

    # -- requests ---------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        if self._token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() != "bearer" or not supplied:
            raise RequestRejected(
                401, "unauthorized", "missing bearer token (Authorization: Bearer ...)"
            )
        if not hmac.compare_digest(supplied.strip().encode(), self._token):
            raise RequestRejected(401, "unauthorized", "wrong bearer token")

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestRejected(400, "bad_request", f"invalid Content-Length {declared!r}")
            if int(declared) > limit:
                raise RequestRejected(
                    413, "too_large", f"body of {declared} bytes exceeds the limit of {limit}"
                )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestRejected(413, "too_large", f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _rejected(self, exc: RequestRejected, request: Request) -> JSONResponse:
        self.ingest_stats.rejected[exc.reason] += 1
        now = time.monotonic()
        # One line per reason per minute: a misconfigured app must not flood the log.
        if now - self._rejections_logged.get(exc.reason, -_REJECTION_LOG_INTERVAL) >= (
            _REJECTION_LOG_INTERVAL
        ):
            self._rejections_logged[exc.reason] = now
            log_event(
                logging.WARNING,
                "request_rejected",
                reason=exc.reason,
                detail=exc.detail,
                path=request.url.path,
                client=request.client.host if request.client else None,
            )
        return _error(exc.status, exc.reason, exc.detail)

    async def ingest(self, request: Request) -> Response:
        """``POST /v1/events``: apply a batch from an app's processor."""
        try:
            self._authorize(request)
            content_type = request.headers.get("content-type", "application/json")
            if content_type.split(";")[0].strip().lower() != "application/json":
                raise RequestRejected(
                    415,
                    "unsupported_media_type",
                    f"expected application/json, got {content_type!r}",
                )
            body = await self._read_body(request)
            try:
                batch = decode_batch(body)
            except UnsupportedVersion as exc:
                raise RequestRejected(400, "unsupported_version", str(exc)) from None
            except ValueError as exc:
                reason = "malformed_json" if str(exc).startswith("malformed") else "invalid_batch"
                raise RequestRejected(
                    400 if reason == "malformed_json" else 422, reason, str(exc)
                ) from None
        except RequestRejected as exc:
            return self._rejected(exc, request)
        try:
            wants_resync = self.registry.apply(batch)
        except Exception:
            # A bug must cost one batch, not the sidecar: what was recorded stays, the
            # app gets a 500 and will resync.
            logging.getLogger("watchdog.sidecar").exception("ingest_failed")
            self.ingest_stats.rejected["internal_error"] += 1
            return _error(500, "internal_error", "the sidecar failed to apply this batch")
        received = len(batch.events) + len(batch.resync or ())
        if received:
            self.ingest_stats.received[batch.process.service] += received
        if self.detector is not None:
            self.detector.poke()
        reply = Reply(v=PROTOCOL_VERSION, sidecar_id=self.sidecar_id, resync=wants_resync)
        return Response(encode(reply), media_type="application/json")

    def span_json(self, span: OpenSpan, now: float, wall_now: float) -> dict[str, Any]:
        """The public JSON form of a span, as listed by ``GET /v1/spans``."""
        process = span.process
        info = process.info
        return {
            "span_id": span.span_id,
            "trace_id": span.trace_id,
            "parent_id": span.parent_key if span.parent_key != span.trace_id else None,
            "kind": span.kind,
            "name": span.name,
            "agent": span.agent(),
            "service": info.service,
            "host": info.host,
            "pid": info.pid,
            "instance_id": info.instance_id,
            "started_at": _iso(process.wall_time(span.started)),
            "age_seconds": round(now - span.started, 3),
            "threshold_seconds": span.threshold,
            "state": span.state,
            "reason": span.reason,
            "action": span.action,
            "flagged_at": None
            if span.flagged_at is None
            else _iso(wall_now - (now - span.flagged_at)),
            "thread_id": span.thread_id,
            "task_id": span.task_id,
        }

    async def list_spans(self, request: Request) -> Response:
        """``GET /v1/spans``: open and hung spans, oldest first; filters ``state``, ``kind``,
        ``service``, ``limit``."""
        try:
            self._authorize(request)
            params = request.query_params
            unknown = sorted(set(params) - _SPAN_FILTERS)
            if unknown:
                raise RequestRejected(
                    400,
                    "bad_request",
                    f"unknown query parameter(s) {', '.join(unknown)}; "
                    f"expected {', '.join(sorted(_SPAN_FILTERS))}",
                )
            state = params.get("state")
            if state is not None and state not in _STATES:
                raise RequestRejected(
                    400, "bad_request", f"state must be one of {', '.join(_STATES)}"
                )
            kind = params.get("kind")
            if kind is not None and kind not in KINDS:
                raise RequestRejected(
                    400, "bad_request", f"kind must be one of {', '.join(sorted(KINDS))}"
                )
            limit_text = params.get("limit")
            if limit_text is not None and not (limit_text.isdigit() and int(limit_text) > 0):
                raise RequestRejected(400, "bad_request", "limit must be a positive integer")
        except RequestRejected as exc:
            return _error(exc.status, exc.reason, exc.detail)
        service = params.get("service")
        now, wall_now = self.registry.clock(), time.time()
        spans = [
            span
            for span in self.registry.spans()
            if (state is None or span.state == state)
            and (kind is None or span.kind == kind)
            and (service is None or span.process.service == service)
        ]
        spans.sort(key=lambda span: span.started)
        if limit_text is not None:
            spans = spans[: int(limit_text)]
        body = {"spans": [self.span_json(span, now, wall_now) for span in spans]}
        return Response(msgspec.json.encode(body), media_type="application/json")

    async def metrics_endpoint(self, request: Request) -> Response:
        """``GET /metrics`` in the Prometheus text format."""
        return Response(generate_latest(self.metrics), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        """Liveness: the event loop answers."""
        return JSONResponse({"status": "ok", "sidecar_id": self.sidecar_id})

    async def readyz(self, request: Request) -> Response:
        """Readiness: the detector runs and the sidecar is not shutting down."""
        if not self.ready:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready", "open_spans": self.registry.open_count})

    async def index(self, request: Request) -> Response:
        """A plain page pointing at the endpoints."""
        return HTMLResponse(
            "<!doctype html><title>agents-watchdog</title><h1>agents-watchdog</h1>"
            f"<p>version {self.version}, {self.registry.open_count} open spans.</p>"
            '<ul><li><a href="/v1/spans">/v1/spans</a></li>'
            '<li><a href="/metrics">/metrics</a></li></ul>'
        )
