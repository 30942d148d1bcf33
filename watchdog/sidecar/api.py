"""The operators' JSON API: what is open, hung or orphaned, which processes report,
the thresholds in force, the incidents, and the one control, aborting a span.

The live page, ``agents-watchdog status``, ``incidents`` and ``abort`` all read it.
Every endpoint needs the token when one is configured; aborting needs one configured.
Refusals are raised as :class:`~watchdog.sidecar.gate.RequestRejected` (the app turns
them into JSON); an unreadable incident store answers 503 (:func:`incidents_unavailable`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from watchdog.sidecar.abort import AbortLadder, steps_for
from watchdog.sidecar.alerts import iso
from watchdog.sidecar.config import KINDS, Config
from watchdog.sidecar.gate import Gate, MsgspecJSONResponse, RequestRejected, error_response
from watchdog.sidecar.incidents import IncidentLog, IncidentStore
from watchdog.sidecar.learning import DurationLearner, threshold_rows
from watchdog.sidecar.logs import log_event
from watchdog.sidecar.loops import LoopWatch
from watchdog.sidecar.registry import OpenSpan, Registry
from watchdog.sidecar.web import find_spans, processes_json

__all__ = ["AbortOrder", "OperatorApi", "incidents_unavailable", "parse_since", "span_json"]

_SPAN_FILTERS: Final = frozenset({"state", "kind", "service", "limit"})
_STATES: Final = ("open", "hung", "orphaned")
_INCIDENT_FILTERS: Final = frozenset({"service", "kind", "state", "since", "limit", "before"})
_INCIDENT_STATES: Final = ("open", "resolved", "orphaned")
_AGE_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class AbortOrder(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/spans/{span_id}/abort``."""

    action: str = "cancel"
    instance_id: str | None = None


# -- query parsing ----------------------------------------------------------------------


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


# -- views ------------------------------------------------------------------------------


def span_json(span: OpenSpan, now: float, wall_now: float) -> dict[str, Any]:
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
        "flagged_at": None if span.flagged_at is None else iso(wall_now - (now - span.flagged_at)),
        "thread_id": span.thread_id,
        "task_id": span.task_id,
        "cause": span.cause,
        "stack": span.stack,
        "stack_source": span.stack_source,
    }


def _incident_json(row: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in row.items() if k not in {"key", "timeline"}}
    for column in ("started_at", "detected_at", "ended_at"):
        if body.get(column) is not None:
            body[column] = iso(body[column])
    return body


async def incidents_unavailable(request: Request, exc: Exception) -> Response:
    """Starlette's handler for ``incidents.StoreUnavailable``: a 503 that says why."""
    return error_response(503, "incidents_unavailable", str(exc))


# -- endpoints --------------------------------------------------------------------------


class OperatorApi:
    """The ``/v1`` endpoints other than ingest, over the sidecar's parts."""

    def __init__(
        self,
        config: Config,
        gate: Gate,
        registry: Registry,
        incidents: IncidentLog,
        incident_store: IncidentStore,
        learner: DurationLearner,
        ladder: AbortLadder,
        loop_watch: LoopWatch,
    ) -> None:
        self.config = config
        self.gate = gate
        self.registry = registry
        self.incidents = incidents
        self.incident_store = incident_store
        self.learner = learner
        self.ladder = ladder
        self.loop_watch = loop_watch

    async def list_spans(self, request: Request) -> Response:
        """``GET /v1/spans``: open and hung spans, oldest first; filters ``state``, ``kind``,
        ``service``, ``limit``."""
        self.gate.authorize(request)
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
        return MsgspecJSONResponse({"spans": [span_json(span, now, wall_now) for span in spans]})

    async def get_span(self, request: Request) -> Response:
        """``GET /v1/spans/{span_id}`` (``instance_id`` when the id is not unique): one
        open or orphaned span as ``/v1/spans`` lists it, plus ``incident_id``, the
        incident open for it (None when it has none)."""
        self.gate.authorize(request)
        span = self._one_span(
            request.path_params["span_id"], request.query_params.get("instance_id")
        )
        body = span_json(span, self.registry.clock(), time.time())
        body["incident_id"] = self.incidents.current.get(span.key, {}).get("id")
        return MsgspecJSONResponse(body)

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
        if not self.gate.has_token:
            raise RequestRejected(
                403,
                "forbidden",
                "aborting needs a token: set server.token or AGENTS_WATCHDOG_TOKEN",
            )
        self.gate.authorize(request)
        body = await self.gate.read_body(request)
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
        steps = self.ladder.start(span, order.action, by="operator")
        log_event(
            logging.WARNING,
            "abort_requested",
            span_id=span.span_id,
            action=order.action,
            client=request.client.host if request.client else None,
        )
        return MsgspecJSONResponse(
            {
                "span_id": span.span_id,
                "action": order.action,
                "steps": list(steps),
                "dry_run": self.config.abort.dry_run,
            },
            status_code=202,
        )

    async def list_processes(self, request: Request) -> Response:
        """``GET /v1/processes``: every app process with its liveness, event loops and
        span counts (see ``web.process_json``), its default OpenAI client's timeouts
        (``client_timeouts``) and ``timeout_warning`` when they outlast the response
        threshold."""
        self.gate.authorize(request)
        listed = processes_json(self.registry, self.loop_watch.blocked)
        for row in listed:
            # The default client's timeouts as the app reported them (None: not
            # reported), and, when they let a model call outlast its threshold, why.
            process = self.registry.processes[row["instance_id"]]
            row["client_timeouts"] = process.info.client_timeouts
            row["timeout_warning"] = process.timeout_warning
        return MsgspecJSONResponse({"processes": listed})

    async def list_thresholds(self, request: Request) -> Response:
        """``GET /v1/thresholds``: the threshold in force for each kind and each kind/name
        seen, and where it came from (configured, learned, or still learning)."""
        self.gate.authorize(request)
        rows = threshold_rows(self.config.thresholds, self.learner, self.registry.seen_names())
        return MsgspecJSONResponse({"thresholds": rows})

    async def list_incidents(self, request: Request) -> Response:
        """``GET /v1/incidents``: newest first; filters ``service``, ``kind``, ``state``,
        ``since`` (ISO 8601 or an age such as ``90m``, ``12h``, ``7d``); paging with
        ``limit`` and ``before`` (the ``next_before`` of the previous page)."""
        self.gate.authorize(request)
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
        return MsgspecJSONResponse(
            {
                "incidents": [_incident_json(row) for row in rows],
                "next_before": rows[-1]["id"] if len(rows) == limit else None,
            }
        )

    async def get_incident(self, request: Request) -> Response:
        """``GET /v1/incidents/{id}``: one incident with its timeline."""
        self.gate.authorize(request)
        ident = _positive(request.path_params["ident"], "incident id", 2**62)
        row = await self.incident_store.read(IncidentStore.get, ident)
        if row is None:
            raise RequestRejected(404, "not_found", f"no incident {ident}")
        body = _incident_json(row)
        body["timeline"] = [
            {"at": iso(entry["at"]), "event": entry["event"], "detail": entry["detail"]}
            for entry in row["timeline"]
        ]
        return MsgspecJSONResponse(body)
