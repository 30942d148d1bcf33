"""The live page at ``/`` and the process listing behind it.

The page is plain HTML, CSS and JavaScript under ``static/``, served by the sidecar
itself (no build step, nothing from other hosts): ``page.js`` is its entry module, and
it imports the views under ``static/js/`` as ES modules. It reads the same JSON API as any
script (``/v1/processes``, ``/v1/spans``, ``/v1/incidents``), so it needs no data of
its own: the HTML shell is public, every request for data carries the token when the
sidecar has one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from functools import cache
from pathlib import Path
from typing import Any, Final

from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from watchdog.sidecar.alerts import iso
from watchdog.sidecar.registry import OpenSpan, ProcessRecord, Registry

__all__ = ["STATIC", "find_spans", "page", "process_json", "processes_json", "static_files"]

STATIC: Final = Path(__file__).with_name("static")
# The page runs only its own files: no inline script, nothing from elsewhere
# (default-src 'self' is also the script-src its modules load under).
_PAGE_HEADERS: Final = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
}


@cache
def _shell() -> str:
    return (STATIC / "index.html").read_text(encoding="utf-8")


def page(version: str) -> HTMLResponse:
    """The page's HTML shell, stamped with the sidecar's version."""
    html = _shell().replace("{{version}}", version.replace("<", "&lt;"))
    return HTMLResponse(html, headers=_PAGE_HEADERS)


class _PageFiles(StaticFiles):
    """The files under ``static/``, scripts always labelled ``text/javascript``.

    A browser refuses to run an ES module served under a type that is not JavaScript,
    and StaticFiles takes the type from the host's MIME table (``/etc/mime.types``, the
    Windows registry), which may say ``text/plain`` for ``.js`` or nothing at all.
    """

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        # A 304 carries no content-type: nothing to correct.
        if Path(full_path).suffix == ".js" and "content-type" in response.headers:
            response.headers["content-type"] = "text/javascript; charset=utf-8"
        return response


def static_files() -> StaticFiles:
    """The page's scripts and styles, to mount at ``/static``; every ``.js`` file is
    served as ``text/javascript`` whatever the host's MIME table says."""
    return _PageFiles(directory=STATIC)


def process_json(
    process: ProcessRecord, now: float, wall_now: float, blocked: Collection[tuple[str, int]]
) -> dict[str, Any]:
    """The public JSON form of one process, as listed by ``GET /v1/processes``.

    ``blocked`` holds the (instance id, thread id) of every event loop the sidecar
    currently finds blocked; ``loop_lag_seconds`` is the largest lag reported.
    """
    info = process.info
    loops = [
        {
            "thread_id": loop.thread_id,
            "lag_seconds": round(loop.lag, 3),
            "blocked": (info.instance_id, loop.thread_id) in blocked,
            "stack": loop.stack,
        }
        for loop in process.loops
    ]
    return {
        "service": info.service,
        "host": info.host,
        "pid": info.pid,
        "instance_id": info.instance_id,
        "state": process.state,
        "blind_reason": process.blind,
        "sender_errors": process.sender_errors,
        "verified": process.verified,
        "verify_note": process.verify_note,
        "heartbeat_age_seconds": round(process.silent_for(now), 3),
        "heartbeat_interval_seconds": process.heartbeat_interval,
        "loop_lag_seconds": max((loop.lag for loop in process.loops), default=None),
        "loops": loops,
        "open_spans": len(process.spans),
        "hung_spans": sum(process.hung.values()),
        "orphaned_spans": len(process.orphans),
        "leaked_spans": process.leaked,
        "dropped_events": process.dropped_events,
        "died_at": None if process.died_at is None else iso(wall_now - (now - process.died_at)),
        "sdk_version": info.sdk_version,
        "watchdog_version": info.watchdog_version,
    }


def processes_json(
    registry: Registry, blocked: Collection[tuple[str, int]]
) -> list[dict[str, Any]]:
    """Every process the sidecar knows (dead ones until they age out), by service and pid."""
    now, wall_now = registry.clock(), time.time()
    ordered = sorted(registry.processes.values(), key=lambda p: (p.service, p.info.pid))
    return [process_json(process, now, wall_now, blocked) for process in ordered]


def find_spans(registry: Registry, span_id: str, instance_id: str | None) -> list[OpenSpan]:
    """The open or orphaned spans with this id (in this process instance, if given)."""
    found = []
    for process in registry.processes.values():
        if instance_id not in (None, process.info.instance_id):
            continue
        span = process.spans.get(span_id)
        if span is None:
            span = next((s for s in process.orphans if s.span_id == span_id), None)
        if span is not None:
            found.append(span)
    return found
