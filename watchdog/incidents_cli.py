"""``agents-watchdog incidents``: the incident history, read from a running sidecar."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

__all__ = ["print_table", "run_incidents"]

DEFAULT_URL = "http://127.0.0.1:9750"


def _get(url: str, path: str, params: dict[str, Any]) -> tuple[int, Any]:
    headers = {}
    token = os.environ.get("AGENTS_WATCHDOG_TOKEN")
    if token:
        headers["authorization"] = f"Bearer {token}"
    response = httpx.get(
        f"{url.rstrip('/')}{path}",
        params={k: v for k, v in params.items() if v is not None},
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
