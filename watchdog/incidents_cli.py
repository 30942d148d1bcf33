"""``agents-watchdog incidents``: the incidents a running sidecar recorded, as a table,
one with its timeline, or JSON.

Exit code: ``0`` the sidecar answered (with incidents or none); ``1`` the incident asked
for by ``show`` is not there; ``2`` the sidecar could not be asked (see
:mod:`watchdog.client`), or the command line was wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from watchdog.client import (
    EXIT_CANNOT_ASK,
    EXIT_OK,
    CannotAsk,
    SidecarClient,
    SidecarError,
    print_failure,
    sidecar_url,
)

__all__ = ["print_table", "run_incidents"]


def _short(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def run_incidents(args: argparse.Namespace) -> int:
    """List incidents, or show one; returns the exit code in this module's docstring."""
    url = sidecar_url(args.url)
    if args.show and args.id is None:
        print("agents-watchdog: incidents show needs an incident id", file=sys.stderr)
        return EXIT_CANNOT_ASK
    try:
        with SidecarClient.configured(url, args.token, args.timeout) as client:
            body = _ask(client, args)
    except SidecarError as exc:
        return print_failure(exc, url, args.json)
    if args.json:
        print(json.dumps(body, indent=2))
    elif args.show:
        _print_one(body)
    else:
        print_table(body["incidents"])
    return EXIT_OK


def _ask(client: SidecarClient, args: argparse.Namespace) -> dict[str, Any]:
    if args.show:
        body = client.get(f"/v1/incidents/{args.id}")
        expected = "timeline"
    else:
        filters = {
            "since": args.since,
            "service": args.service,
            "state": args.state,
            "limit": args.limit,
        }
        body = client.get("/v1/incidents", filters)
        expected = "incidents"
    if not (isinstance(body, dict) and isinstance(body.get(expected), list)):
        raise CannotAsk(f"unexpected answer from {client.url}: no {expected!r} list in it")
    return body


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
