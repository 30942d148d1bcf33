"""The sidecar's HTTP surface (Starlette): ingest, span listing, metrics, probes."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.metadata
import logging
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from watchdog.protocol import PROTOCOL_VERSION, Reply, UnsupportedVersion, decode_batch, encode
from watchdog.sidecar import learning
from watchdog.sidecar.abort import AbortLadder, steps_for
from watchdog.sidecar.alerts import AlertBook, iso
from watchdog.sidecar.commands import CommandQueue
from watchdog.sidecar.config import KINDS, Config
from watchdog.sidecar.detector import Detector
from watchdog.sidecar.identity import SocketTable, is_alive, verify_credentials
from watchdog.sidecar.incidents import IncidentLog, IncidentStore, StoreUnavailable
from watchdog.sidecar.learning import DurationLearner, threshold_rows
from watchdog.sidecar.limits import Admission
from watchdog.sidecar.logs import SpanLog, log_event
from watchdog.sidecar.loops import LoopWatch
from watchdog.sidecar.metrics import (
    BoundedLabels,
    IngestStats,
    SpanStats,
    WatchdogCollector,
    bucket_edges,
)
from watchdog.sidecar.registry import (
    CLIENT_TIMEOUT_FIX,
    Fanout,
    OpenSpan,
    ProcessRecord,
    Registry,
)
from watchdog.sidecar.sinks import Dispatcher, build_sink
from watchdog.sidecar.stacks import StackCollector
from watchdog.sidecar.web import find_spans, page, processes_json, static_files

__all__ = ["Sidecar", "version"]

_SPAN_FILTERS: Final = frozenset({"state", "kind", "service", "limit"})
_STATES: Final = ("open", "hung", "orphaned")
_INCIDENT_FILTERS: Final = frozenset({"service", "kind", "state", "since", "limit", "before"})
_INCIDENT_STATES: Final = ("open", "resolved", "orphaned")
_AGE_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class AbortOrder(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/spans/{span_id}/abort``."""

    action: str = "cancel"
    instance_id: str | None = None


def parse_since(text: str) -> float:
    """Epoch seconds from ISO 8601 (``2026-11-25T10:00:00Z``) or an age (``90m``, ``7d``)."""
    text = text.strip()
    unit = _AGE_UNITS.get(text[-1:])
    if unit is not None and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * unit
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RequestRejected(
            400, "bad_request", f"since must be ISO 8601 or an age like 90m, 12h, 7d; got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _checked_query(
    params: Mapping[str, str], allowed: frozenset[str], states: tuple[str, ...]
) -> str | None:
    """Refuse unknown query parameters and a bad ``state``; returns the state filter."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise RequestRejected(
            400,
            "bad_request",
            f"unknown query parameter(s) {', '.join(unknown)}; "
            f"expected {', '.join(sorted(allowed))}",
        )
    state = params.get("state")
    if state is not None and state not in states:
        raise RequestRejected(400, "bad_request", f"state must be one of {', '.join(states)}")
    return state


def _positive(text: str, what: str, high: int) -> int:
    if not text.isdigit() or not 0 < int(text) <= high:
        raise RequestRejected(400, "bad_request", f"{what} must be an integer from 1 to {high}")
    return int(text)


def _incident_json(row: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in row.items() if k not in {"key", "timeline"}}
    for column in ("started_at", "detected_at", "ended_at"):
        if body.get(column) is not None:
            body[column] = iso(body[column])
    return body


_REJECTION_LOG_INTERVAL: Final = 60.0
LEARNED_SAVE_INTERVAL: Final = 30.0


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


class Sidecar:
    """One sidecar: its registry, detector, metrics and HTTP app, built from a config."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._hostname = socket.gethostname()
        self.sidecar_id = uuid.uuid4().hex
        self.version = version()
        self.metric_labels = BoundedLabels(config.limits.max_label_services)
        self.ingest_stats = IngestStats(self.metric_labels)
        self.span_stats = SpanStats(bucket_edges(config.thresholds.edges()), self.metric_labels)
        # Where links in alerts point; `serve` sets it once the port is bound.
        self.base_url = config.alerting.external_url or (
            f"http://{config.server.host}:{config.server.port}"
        )
        self.incident_store = IncidentStore(config.incidents)
        self.incidents = IncidentLog(self.incident_store)
        self.alert_outcomes: Counter[tuple[str, str]] = Counter()
        self.dispatcher = Dispatcher(
            [
                build_sink(
                    sink,
                    config.alerting,
                    self.alert_outcomes,
                    self._external_url,
                    self.incidents.alert_delivered,
                )
                for sink in config.sinks
            ]
        )
        self.alerts = AlertBook(
            send=self.dispatcher.send,
            external_url=self._external_url,
            continued=self.incidents.continued,
            stack_wait=config.alerting.stack_wait,
        )
        self.abort_outcomes: Counter[tuple[str, str]] = Counter()
        self.commands = CommandQueue()
        self.ladder = AbortLadder(
            config.abort, self.abort_outcomes, self._abort_step, commands=self.commands
        )
        self._background: set[asyncio.Task[None]] = set()
        self.stacks = StackCollector(self.commands, self._stack_captured)
        self.loop_watch = LoopWatch(config.processes.loop_blocked_after, self.alerts.loop_changed)
        self.learner = DurationLearner(config.learning)
        self.registry = Registry(
            config.thresholds,
            listener=Fanout(
                [
                    self.span_stats,
                    SpanLog(),
                    self.incidents,
                    self.alerts,
                    self.stacks,
                    self.ladder,
                    self.loop_watch,
                    self.commands,
                ],
                self._listener_failed,
            ),
            clock=clock,
            learner=self.learner,
            max_open_spans=config.limits.max_open_spans,
            refused=self.ingest_stats.rejected,
            liveness=self._alive,
            service_label=self.metric_labels.service,
        )
        self.admission = Admission(config.limits, self.registry)
        self.socket_table = SocketTable()
        self.ladder.registry = self.registry
        self.detector: Detector | None = None
        self.metrics = CollectorRegistry(auto_describe=False)
        self.metrics.register(
            WatchdogCollector(
                self.registry,
                self.span_stats,
                self.ingest_stats,
                self.version,
                clock,
                self.alert_outcomes,
                self.abort_outcomes,
            )
        )
        self.ready = False
        self._tasks: list[asyncio.Task[None]] = []
        self._rejections_logged: dict[str, float] = {}
        token = config.server.token
        self._token = token.encode() if token else None

    def _alive(self, process: ProcessRecord) -> bool | None:
        """Whether the process is alive, where that can be known: its pid was proven
        to be the connection's own and it runs on this host (see identity.py)."""
        if process.verified and process.info.host == self._hostname:
            return is_alive(process.info)
        return None

    def _stack_captured(
        self, span: OpenSpan, source: str, stack: str | None, note: str, cause: str | None
    ) -> None:
        self.incidents.stack_captured(span, source, stack, note, cause)
        if cause is not None:
            # Before the stack: the stack's arrival is what announces a held alert.
            self.alerts.annotate(span.key, "cause", cause)
            by_cause = self.config.thresholds.action_for_cause(span.kind, span.name, cause)
            if by_cause is not None and not steps_for(span.action) and span.state == "hung":
                self.ladder.start(span, by_cause[0], by=f"rule {by_cause[1]} (cause)")
        self.alerts.annotate(span.key, "stack", stack or f"none: {note}")

    def _abort_step(self, span: OpenSpan, step: str, outcome: str, detail: str) -> None:
        self.incidents.abort_step(span, step, outcome, detail)
        self.alerts.annotate(span.key, "abort", f"{step}: {outcome} ({detail})")

    def _external_url(self) -> str:
        return self.config.alerting.external_url or self.base_url

    @staticmethod
    def _listener_failed(where: str) -> None:
        logging.getLogger("watchdog.sidecar").exception("listener_failed: %s", where)

    # -- lifecycle --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Start the detector with the server; stop it, and go unready, on shutdown."""
        await self.incident_store.open()
        await self.incidents.load_open()
        await self._restore_learned()
        await self.dispatcher.start()
        self.detector = Detector(self.registry)
        tasks = [
            asyncio.create_task(self.detector.run(), name="agents-watchdog-detector"),
            asyncio.create_task(self._housekeeping(), name="agents-watchdog-housekeeping"),
            asyncio.create_task(self._liveness(), name="agents-watchdog-liveness"),
            asyncio.create_task(self._save_learned_often(), name="agents-watchdog-learning"),
        ]
        self._tasks = tasks
        self.ready = True
        try:
            yield
        finally:
            self.ready = False
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.ladder.stop()
            await self.stacks.stop()
            await self.dispatcher.stop()
            await self._save_learned()
            await self.incident_store.close()
            log_event(logging.INFO, "stopped", open_spans=self.registry.open_count)

    def problem(self) -> str | None:
        """What keeps the sidecar from watching, or None: a background task that ended
        (they run until shutdown), or not started yet."""
        if not self._tasks:
            return "not started"
        for task in self._tasks:
            if task.done():
                return f"{task.get_name()} ended"
        return None

    async def _liveness(self) -> None:
        """Once a second, over processes (not spans): who stopped reporting, who died,
        whose orphans have been listed long enough."""
        settings = self.config.processes
        host = socket.gethostname()
        registry = self.registry
        while True:
            await asyncio.sleep(1.0)
            for process in list(registry.processes.values()):
                now = registry.clock()
                silent = process.silent_for(now)
                interval = process.heartbeat_interval
                if process.status == "dead":
                    if process.died_at is not None and now - process.died_at > (
                        settings.orphan_retention
                    ):
                        registry.forget(process.info.instance_id, now)
                    continue
                # Whether the pid is gone can only be known for a process on this host
                # whose pid was proven to be ours to see (same pid namespace).
                if silent > 2 * interval and process.verified and process.info.host == host:
                    alive = await asyncio.to_thread(is_alive, process.info)
                    # Still silent after the check (mark_dead ignores the already dead).
                    if not alive and process.silent_for(registry.clock()) > 2 * interval:
                        registry.mark_dead(process, registry.clock())
                        continue
                if process.status == "live" and silent > settings.unresponsive_after * interval:
                    registry.mark_unresponsive(process, now)
                elif (
                    process.status == "unresponsive"
                    and not process.spans
                    and silent > settings.orphan_retention
                ):
                    # Gone without a goodbye, and nothing of it to watch: whether it died
                    # cannot be known (another host, or an unproven pid), so it is
                    # forgotten like the dead. If it speaks again, it simply rejoins.
                    registry.forget(process.info.instance_id, now)

    async def _restore_learned(self) -> None:
        path = self.config.learning.path
        try:
            data = await asyncio.to_thread(learning.load, path)
            count = 0 if data is None else self.learner.restore(data)
        except ValueError as exc:
            # Learning starts afresh; the file stays for inspection until the next save.
            log_event(logging.ERROR, "learned_thresholds_unreadable", path=path, error=str(exc))
            return
        if count:
            log_event(logging.INFO, "learned_thresholds_restored", path=path, names=count)

    async def _save_learned(self) -> None:
        if not self.learner.changed:
            return
        path = self.config.learning.path
        try:
            await asyncio.to_thread(learning.save, path, self.learner.snapshot())
        except OSError as exc:
            self.learner.changed = True
            log_event(logging.ERROR, "learned_thresholds_not_saved", path=path, error=str(exc))

    async def _save_learned_often(self) -> None:
        """What was learned survives a crash, give or take the last half minute."""
        while True:
            await asyncio.sleep(LEARNED_SAVE_INTERVAL)
            await self._save_learned()

    async def _housekeeping(self) -> None:
        """Close incidents that did not come back after a restart; prune hourly."""
        if self.incidents.reconciling:
            await asyncio.sleep(self.config.incidents.reconcile_seconds)
            self.incidents.finish_reconciling(self.registry)
        while True:
            await asyncio.sleep(3600)
            self.incident_store.prune()

    def app(self) -> Starlette:
        """The ASGI application."""
        return Starlette(
            routes=[
                Route("/v1/events", self.ingest, methods=["POST"]),
                Route("/v1/spans", self.list_spans, methods=["GET"]),
                Route("/v1/spans/{span_id}", self.get_span, methods=["GET"]),
                Route("/v1/processes", self.list_processes, methods=["GET"]),
                Route("/v1/spans/{span_id}/abort", self.abort_span, methods=["POST"]),
                Route("/v1/incidents", self.list_incidents, methods=["GET"]),
                Route("/v1/thresholds", self.list_thresholds, methods=["GET"]),
                Route("/v1/incidents/{ident}", self.get_incident, methods=["GET"]),
                Route("/metrics", self.metrics_endpoint, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/", self.index, methods=["GET"]),
                Mount("/static", app=static_files(), name="static"),
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
        timeout = self.config.limits.request_timeout
        try:
            # A body trickled in slowly must not hold a connection (and a task) forever.
            async with asyncio.timeout(timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise RequestRejected(
                            413, "too_large", f"body exceeds the limit of {limit} bytes"
                        )
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestRejected(
                408, "request_timeout", f"the body did not arrive within {timeout:g} s"
            ) from None
        except ClientDisconnect:
            # Nobody is left to answer; counted all the same, and no traceback in the log.
            raise RequestRejected(
                400, "client_disconnected", f"the client left after {size} bytes of the body"
            ) from None
        return b"".join(chunks)

    def _rejected(self, exc: RequestRejected, request: Request) -> JSONResponse:
        self.ingest_stats.rejected[exc.reason] += 1
        self._log_rejection(exc.reason, exc.detail, request)
        return _error(exc.status, exc.reason, exc.detail)

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
        except RequestRejected as exc:
            return self._rejected(exc, request)
        refused = self.ingest_stats.rejected["open_span_limit"]
        if batch.results:
            # Before the events: a cancel's result precedes the span end it caused.
            self.commands.deliver(batch.results)
        try:
            wants_resync = self.registry.apply(batch)
        except Exception:
            # A bug must cost one batch, not the sidecar: what was recorded stays, the
            # app gets a 500 and will resync.
            logging.getLogger("watchdog.sidecar").exception("ingest_failed")
            self.ingest_stats.rejected["internal_error"] += 1
            return _error(500, "internal_error", "the sidecar failed to apply this batch")
        if self.ingest_stats.rejected["open_span_limit"] != refused:
            limit = self.config.limits.max_open_spans
            self._log_rejection(
                "open_span_limit",
                f"span starts refused: {batch.process.service} (pid {batch.process.pid}) "
                f"has {limit} spans open (limits.max_open_spans)",
                request,
            )
        received = len(batch.events) + len(batch.resync or ())
        if received:
            self.ingest_stats.count_received(batch.process.service, received)
        if self.detector is not None:
            self.detector.poke()
        instance = batch.process.instance_id
        process = self.registry.processes.get(instance)
        if process is not None:
            self.loop_watch.check(process)
        if process is not None and process.timeout_warning and not process.timeout_warned:
            self._warn_client_timeouts(process)
        if process is not None and not process.verified and process.verify_attempts < 3:
            process.verify_attempts += 1
            self._spawn(self._verify(process, request))
        reply = Reply(
            v=PROTOCOL_VERSION,
            sidecar_id=self.sidecar_id,
            resync=wants_resync,
            commands=self.commands.take(instance),
        )
        return Response(encode(reply), media_type="application/json")

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

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _verify(self, process: Any, request: Request) -> None:
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
            "started_at": iso(process.wall_time(span.started)),
            "age_seconds": round(now - span.started, 3),
            "threshold_seconds": span.threshold,
            "state": span.state,
            "reason": span.reason,
            "action": span.action,
            "flagged_at": None
            if span.flagged_at is None
            else iso(wall_now - (now - span.flagged_at)),
            "thread_id": span.thread_id,
            "task_id": span.task_id,
            "cause": span.cause,
            "stack": span.stack,
            "stack_source": span.stack_source,
        }

    async def list_spans(self, request: Request) -> Response:
        """``GET /v1/spans``: open and hung spans, oldest first; filters ``state``, ``kind``,
        ``service``, ``limit``."""
        try:
            self._authorize(request)
            params = request.query_params
            state = _checked_query(params, _SPAN_FILTERS, _STATES)
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

    def _one_span(self, span_id: str, instance_id: str | None, open_only: bool = False) -> OpenSpan:
        """The span with this id (open, or orphaned unless ``open_only``); a 404 when
        there is none, a 409 when several processes have one and no instance was given."""
        found = [
            span
            for span in find_spans(self.registry, span_id, instance_id)
            if not (open_only and span.state == "orphaned")
        ]
        if not found:
            raise RequestRejected(404, "not_found", f"no open span {span_id}")
        if len(found) > 1:
            raise RequestRejected(
                409,
                "ambiguous",
                f"span {span_id} is open in {len(found)} processes; give instance_id",
            )
        return found[0]

    async def abort_span(self, request: Request) -> Response:
        """``POST /v1/spans/{span_id}/abort`` with ``{"action": "cancel"}`` (and, when the
        span id is not unique, ``"instance_id"``): start the abort ladder. Always needs
        the token."""
        try:
            if self._token is None:
                raise RequestRejected(
                    403,
                    "forbidden",
                    "aborting needs a token: set server.token or AGENTS_WATCHDOG_TOKEN",
                )
            self._authorize(request)
            body = await self._read_body(request)
            try:
                order = msgspec.json.decode(body or b"{}", type=AbortOrder)
            except msgspec.MsgspecError as exc:
                raise RequestRejected(400, "bad_request", f"invalid abort request: {exc}") from None
            if not steps_for(order.action):
                raise RequestRejected(
                    400, "bad_request", "action must be one of timeout, cancel, terminate, kill"
                )
            # An orphan's process is gone: there is nothing left to stop.
            span = self._one_span(request.path_params["span_id"], order.instance_id, True)
        except RequestRejected as exc:
            return _error(exc.status, exc.reason, exc.detail)
        steps = self.ladder.start(span, order.action, by="operator")
        log_event(
            logging.WARNING,
            "abort_requested",
            span_id=span.span_id,
            action=order.action,
            client=request.client.host if request.client else None,
        )
        return JSONResponse(
            {
                "span_id": span.span_id,
                "action": order.action,
                "steps": list(steps),
                "dry_run": self.config.abort.dry_run,
            },
            status_code=202,
        )

    async def list_thresholds(self, request: Request) -> Response:
        """``GET /v1/thresholds``: the threshold in force for each kind and each kind/name
        seen, and where it came from (configured, learned, or still learning)."""
        try:
            self._authorize(request)
        except RequestRejected as exc:
            return _error(exc.status, exc.reason, exc.detail)
        rows = threshold_rows(self.config.thresholds, self.learner, self.registry.seen_names())
        body = {"thresholds": rows}
        return Response(msgspec.json.encode(body), media_type="application/json")

    async def list_incidents(self, request: Request) -> Response:
        """``GET /v1/incidents``: newest first; filters ``service``, ``kind``, ``state``,
        ``since`` (ISO 8601 or an age such as ``90m``, ``12h``, ``7d``); paging with
        ``limit`` and ``before`` (the ``next_before`` of the previous page)."""
        try:
            self._authorize(request)
            params = request.query_params
            state = _checked_query(params, _INCIDENT_FILTERS, _INCIDENT_STATES)
            limit = _positive(params.get("limit", "50"), "limit", 1000)
            before = params.get("before")
            before_id = None if before is None else _positive(before, "before", 2**62)
            since = None if params.get("since") is None else parse_since(params["since"])
            filters = {
                "service": params.get("service"),
                "kind": params.get("kind"),
                "state": state,
                "since": since,
            }
            rows = await self.incident_store.read(IncidentStore.list, filters, limit, before_id)
        except RequestRejected as exc:
            return _error(exc.status, exc.reason, exc.detail)
        except StoreUnavailable as exc:
            return _error(503, "incidents_unavailable", str(exc))
        body = {
            "incidents": [_incident_json(row) for row in rows],
            "next_before": rows[-1]["id"] if len(rows) == limit else None,
        }
        return Response(msgspec.json.encode(body), media_type="application/json")

    async def get_incident(self, request: Request) -> Response:
        """``GET /v1/incidents/{id}``: one incident with its timeline."""
        try:
            self._authorize(request)
            ident = _positive(request.path_params["ident"], "incident id", 2**62)
            row = await self.incident_store.read(IncidentStore.get, ident)
        except RequestRejected as exc:
            return _error(exc.status, exc.reason, exc.detail)
        except StoreUnavailable as exc:
            return _error(503, "incidents_unavailable", str(exc))
        if row is None:
            return _error(404, "not_found", f"no incident {ident}")
        body = _incident_json(row)
        body["timeline"] = [
            {"at": iso(entry["at"]), "event": entry["event"], "detail": entry["detail"]}
            for entry in row["timeline"]
        ]
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

    async def list_processes(self, request: Request) -> Response:
        """``GET /v1/processes``: every app process with its liveness, event loops and
        span counts (see ``web.process_json``), its default OpenAI client's timeouts
        (``client_timeouts``) and ``timeout_warning`` when they outlast the response
        threshold."""
        try:
            self._authorize(request)
        except RequestRejected as exc:
            return _error(exc.status, exc.reason, exc.detail)
        listed = processes_json(self.registry, self.loop_watch.blocked)
        for row in listed:
            # The default client's timeouts as the app reported them (None: not
            # reported), and, when they let a model call outlast its threshold, why.
            process = self.registry.processes[row["instance_id"]]
            row["client_timeouts"] = process.info.client_timeouts
            row["timeout_warning"] = process.timeout_warning
        body = {"processes": listed}
        return Response(msgspec.json.encode(body), media_type="application/json")

    async def get_span(self, request: Request) -> Response:
        """``GET /v1/spans/{span_id}`` (``instance_id`` when the id is not unique): one
        open or orphaned span as ``/v1/spans`` lists it, plus ``incident_id``, the
        incident open for it (None when it has none)."""
        try:
            self._authorize(request)
            span = self._one_span(
                request.path_params["span_id"], request.query_params.get("instance_id")
            )
        except RequestRejected as exc:
            return _error(exc.status, exc.reason, exc.detail)
        body = self.span_json(span, self.registry.clock(), time.time())
        body["incident_id"] = self.incidents.current.get(span.key, {}).get("id")
        return Response(msgspec.json.encode(body), media_type="application/json")

    async def index(self, request: Request) -> Response:
        """The live page (scripts and styles under ``/static``)."""
        return page(self.version)
