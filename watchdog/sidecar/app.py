"""The sidecar wired together: its parts built from a config, its routes, its lifespan
and background loops.

A span's way through the rooms: ``ingest`` (``POST /v1/events``) → ``registry`` (open
spans and their deadlines) → ``detector`` → ``alerts``/``sinks``, ``stacks``, ``abort``
→ ``incidents``; ``liveness`` judges the processes, ``api`` answers operators,
``metrics`` answers Prometheus, ``web`` serves the live page, and ``gate`` holds what
every request passes (token, body limits, the refusal's JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Final

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from watchdog.sidecar import learning
from watchdog.sidecar.abort import AbortLadder, steps_for
from watchdog.sidecar.alerts import AlertBook
from watchdog.sidecar.api import OperatorApi, incidents_unavailable
from watchdog.sidecar.commands import CommandQueue
from watchdog.sidecar.config import Config
from watchdog.sidecar.detector import Detector
from watchdog.sidecar.gate import Gate, MsgspecJSONResponse, RequestRejected, refused
from watchdog.sidecar.incidents import IncidentLog, IncidentStore, StoreUnavailable
from watchdog.sidecar.ingest import Ingest
from watchdog.sidecar.learning import DurationLearner
from watchdog.sidecar.limits import Admission
from watchdog.sidecar.liveness import Liveness
from watchdog.sidecar.logs import SpanLog, log_event
from watchdog.sidecar.loops import LoopWatch
from watchdog.sidecar.metrics import (
    BoundedLabels,
    IngestStats,
    SpanStats,
    WatchdogCollector,
    bucket_edges,
    register_process_collectors,
    render,
)
from watchdog.sidecar.registry import Fanout, OpenSpan, Registry
from watchdog.sidecar.sinks import Dispatcher, build_sink
from watchdog.sidecar.stacks import StackCollector
from watchdog.sidecar.web import page, static_files

__all__ = ["Sidecar", "version"]

LEARNED_SAVE_INTERVAL: Final = 30.0


def version() -> str:
    """The installed version of agents-watchdog."""
    try:
        return importlib.metadata.version("agents-watchdog")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Sidecar:
    """One sidecar: its registry, detector, metrics and HTTP app, built from a config."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
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
        self.stacks = StackCollector(self.commands, self._stack_captured)
        self.loop_watch = LoopWatch(config.processes.loop_blocked_after, self.alerts.loop_changed)
        self.learner = DurationLearner(config.learning)
        self.liveness = Liveness(config)
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
            liveness=self.liveness.alive,
            service_label=self.metric_labels.service,
        )
        self.ladder.registry = self.registry
        self.detector: Detector | None = None
        self.metrics = CollectorRegistry(auto_describe=False)
        # The sidecar's own CPU, memory, file descriptors and garbage collector.
        register_process_collectors(self.metrics)
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
        self.gate = Gate(config)
        self.ingest = Ingest(
            self.sidecar_id,
            self.gate,
            self.registry,
            Admission(config.limits, self.registry),
            self.commands,
            self.ingest_stats,
            self.loop_watch,
            self._poke_detector,
        )
        self.api = OperatorApi(
            config,
            self.gate,
            self.registry,
            self.incidents,
            self.incident_store,
            self.learner,
            self.ladder,
            self.loop_watch,
        )
        self.ready = False
        self._tasks: list[asyncio.Task[None]] = []

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

    def _poke_detector(self) -> None:
        # No detector before the lifespan starts: nothing is waiting to be woken.
        if self.detector is not None:
            self.detector.poke()

    @staticmethod
    def _listener_failed(where: str) -> None:
        logging.getLogger("watchdog.sidecar").exception("listener_failed: %s", where)

    # -- the ASGI app -------------------------------------------------------------------

    def app(self) -> Starlette:
        """The ASGI application."""
        api = self.api
        return Starlette(
            routes=[
                Route("/v1/events", self.ingest.receive, methods=["POST"]),
                Route("/v1/spans", api.list_spans, methods=["GET"]),
                Route("/v1/spans/{span_id}", api.get_span, methods=["GET"]),
                Route("/v1/processes", api.list_processes, methods=["GET"]),
                Route("/v1/spans/{span_id}/abort", api.abort_span, methods=["POST"]),
                Route("/v1/incidents", api.list_incidents, methods=["GET"]),
                Route("/v1/thresholds", api.list_thresholds, methods=["GET"]),
                Route("/v1/incidents/{ident}", api.get_incident, methods=["GET"]),
                Route("/metrics", self.metrics_endpoint, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/", self.index, methods=["GET"]),
                Mount("/static", app=static_files(), name="static"),
            ],
            exception_handlers={
                RequestRejected: refused,
                StoreUnavailable: incidents_unavailable,
            },
            lifespan=self.lifespan,
        )

    async def metrics_endpoint(self, request: Request) -> Response:
        """``GET /metrics``: OpenMetrics when the scraper asks for it, else the
        Prometheus text format."""
        body, content_type = render(self.metrics, request.headers.get("accept"))
        return Response(body, media_type=content_type)

    async def healthz(self, request: Request) -> Response:
        """Liveness: the event loop answers."""
        return MsgspecJSONResponse({"status": "ok", "sidecar_id": self.sidecar_id})

    async def readyz(self, request: Request) -> Response:
        """Readiness: the detector runs and the sidecar is not shutting down."""
        if not self.ready:
            return MsgspecJSONResponse({"status": "not ready"}, status_code=503)
        return MsgspecJSONResponse({"status": "ready", "open_spans": self.registry.open_count})

    async def index(self, request: Request) -> Response:
        """The live page (scripts and styles under ``/static``)."""
        return page(self.version)

    # -- lifecycle ----------------------------------------------------------------------

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
            asyncio.create_task(self.liveness.run(self.registry), name="agents-watchdog-liveness"),
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

    async def _housekeeping(self) -> None:
        """Close incidents that did not come back after a restart; prune hourly."""
        if self.incidents.reconciling:
            await asyncio.sleep(self.config.incidents.reconcile_seconds)
            self.incidents.finish_reconciling(self.registry)
        while True:
            await asyncio.sleep(3600)
            self.incident_store.prune()

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
