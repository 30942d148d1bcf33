"""``agents-watchdog incidents`` and ``abort``: talk to a running sidecar's HTTP API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

__all__ = ["print_table", "run_abort", "run_incidents"]

DEFAULT_URL = "http://127.0.0.1:9750"


def _get(url: str, path: str, params: dict[str, Any]) -> tuple[int, Any]:
    return _call("GET", url, path, params=params)


def _call(
    method: str, url: str, path: str, params: dict[str, Any] | None = None, body: Any = None
) -> tuple[int, Any]:
    headers = {}
    token = os.environ.get("AGENTS_WATCHDOG_TOKEN")
    if token:
        headers["authorization"] = f"Bearer {token}"
    response = httpx.request(
        method,
        f"{url.rstrip('/')}{path}",
        params={k: v for k, v in (params or {}).items() if v is not None},
        json=body,
        headers=headers,
        timeout=10,
        trust_env=False,
    )
    try:
        body = response.json()
    except ValueError:
        body = {"error": "bad_response", "detail": response.text[:200]}
    return response.status_code, body


def _short(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def run_incidents(args: argparse.Namespace) -> int:
    """List incidents, or show one; 0 on success, 1 when the sidecar refused or failed."""
    url = args.url or os.environ.get("AGENTS_WATCHDOG_URL") or DEFAULT_URL
    try:
        if args.show:
            if args.id is None:
                print("agents-watchdog: incidents show needs an incident id", file=sys.stderr)
                return 2
            status, body = _get(url, f"/v1/incidents/{args.id}", {})
        else:
            status, body = _get(
                url,
                "/v1/incidents",
                {
                    "since": args.since,
                    "service": args.service,
                    "state": args.state,
                    "limit": args.limit,
                },
            )
    except httpx.HTTPError as exc:
        print(f"agents-watchdog: cannot reach the sidecar at {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"agents-watchdog: {body.get('error')}: {body.get('detail')}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    if args.show:
        _print_one(body)
    else:
        print_table(body["incidents"])
    return 0


def print_table(incidents: list[dict[str, Any]]) -> None:
    """Print incidents as an aligned table."""
    if not incidents:
        print("no incidents")
        return
    header = ("ID", "DETECTED (UTC)", "STATE", "SERVICE", "KIND", "NAME / AGENT", "DURATION")
    rows = [
        (
            str(i["id"]),
            _short(i["detected_at"]),
            i["state"],
            i["service"],
            i["kind"],
            " / ".join(x for x in (i["name"], i["agent"]) if x) or "-",
            _seconds(i["duration"]),
        )
        for i in incidents
    ]
    widths = [max(len(r[c]) for r in (header, *rows)) for c in range(len(header))]
    for row in (header, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _print_one(incident: dict[str, Any]) -> None:
    print(f"incident {incident['id']}: {incident['alertname']} ({incident['state']})")
    for key in (
        "service",
        "host",
        "pid",
        "kind",
        "name",
        "agent",
        "trace_id",
        "span_id",
        "reason",
        "threshold",
        "started_at",
        "detected_at",
        "ended_at",
        "duration",
        "resolution",
    ):
        value = incident.get(key)
        if value not in (None, ""):
            print(f"  {key:<12} {value}")
    print("  timeline:")
    for entry in incident.get("timeline", []):
        detail = ", ".join(f"{k}={v}" for k, v in entry["detail"].items() if v is not None)
        print(f"    {_short(entry['at'])}  {entry['event']:<11} {detail}")


def run_abort(args: argparse.Namespace) -> int:
    """Ask the sidecar to abort a span; 0 when the ladder started."""
    url = args.url or os.environ.get("AGENTS_WATCHDOG_URL") or DEFAULT_URL
    body: dict[str, Any] = {"action": args.action}
    if args.instance_id:
        body["instance_id"] = args.instance_id
    try:
        status, reply = _call("POST", url, f"/v1/spans/{args.span_id}/abort", body=body)
    except httpx.HTTPError as exc:
        print(f"agents-watchdog: cannot reach the sidecar at {url}: {exc}", file=sys.stderr)
        return 1
    if status != 202:
        print(f"agents-watchdog: {reply.get('error')}: {reply.get('detail')}", file=sys.stderr)
        return 1
    dry = " (dry run: nothing will be sent)" if reply.get("dry_run") else ""
    print(f"abort of {args.span_id} started: {' -> '.join(reply['steps'])}{dry}")
    return 0
