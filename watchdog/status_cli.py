"""``agents-watchdog status``: what is in flight on a running sidecar, as terminal tables.

Reads ``GET /v1/processes`` and ``GET /v1/spans``. The exit code makes it a probe:

- ``0`` all is well: every process is live, no span is hung or orphaned, no event loop
  is blocked;
- ``1`` something needs attention: a hung or orphaned span, a process unresponsive or
  dead, or a blocked event loop;
- ``2`` the status is unknown: the URL is bad, the sidecar is unreachable or silent,
  refused the request (a missing or wrong token) or answered nonsense; or the command
  line was wrong.

The URL, token and timeout, and every way of failing to ask, are those of
:mod:`watchdog.client`, shared with ``incidents`` and ``abort``.

With ``--watch`` the tables refresh until interrupted, and the exit code is that of
the last refresh.

Warnings — a process whose default OpenAI client would let a model call outlast the
response threshold — are printed, and listed under ``warnings`` in ``--json``, without
changing the exit code: nothing is stuck yet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Final

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from watchdog.client import (
    EXIT_ATTENTION,
    EXIT_CANNOT_ASK,
    EXIT_OK,
    CannotAsk,
    SidecarClient,
    SidecarError,
    print_failure,
    sidecar_url,
)

__all__ = ["EXIT_ATTENTION", "EXIT_OK", "EXIT_UNKNOWN", "Status", "fetch_status", "run_status"]

# The status is unknown when the sidecar cannot be asked.
EXIT_UNKNOWN: Final = EXIT_CANNOT_ASK
_STATE_ORDER: Final = {"hung": 0, "orphaned": 1, "open": 2}
_STYLES: Final = {
    "hung": "bold red",
    "orphaned": "yellow",
    "unresponsive": "bold red",
    "dead": "bold red",
    "blind": "bold yellow",
    "live": "green",
    "open": "",
}


@dataclass
class Status:
    """One snapshot of a sidecar: its processes and its open, hung and orphaned spans."""

    url: str
    processes: list[dict[str, Any]]
    spans: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.problems = problems_of(self.processes, self.spans)
        self.warnings = warnings_of(self.processes)

    @property
    def exit_code(self) -> int:
        """``EXIT_ATTENTION`` when anything needs attention, else ``EXIT_OK``."""
        return EXIT_ATTENTION if self.problems else EXIT_OK

    def json(self) -> dict[str, Any]:
        """The snapshot as printed by ``--json``."""
        return {
            "url": self.url,
            "ok": not self.problems,
            "exit_code": self.exit_code,
            "problems": self.problems,
            "warnings": self.warnings,
            "processes": self.processes,
            "spans": self.spans,
        }


def problems_of(processes: list[dict[str, Any]], spans: list[dict[str, Any]]) -> list[str]:
    """One line per thing that needs attention; empty when all is well."""
    found = []
    for process in processes:
        who = f"{process['service']} (pid {process['pid']} on {process['host']})"
        if process["state"] == "blind":
            found.append(f"process {who} is blind: {process.get('blind_reason')}")
        elif process["state"] != "live":
            found.append(f"process {who} is {process['state']}")
        for loop in process["loops"]:
            if loop["blocked"]:
                found.append(
                    f"event loop of {who} thread {loop['thread_id']} is blocked "
                    f"({loop['lag_seconds']:.1f} s late)"
                )
    for span in spans:
        if span["state"] != "open":
            # Model calls carry no name on the wire: their agent says whose they are.
            what = (
                f"{span['kind']} span {span['name']!r}" if span["name"] else f"{span['kind']} span"
            )
            if span.get("agent") and span["kind"] != "agent":
                what += f" of agent {span['agent']!r}"
            found.append(
                f"{span['state']} {what} in {span['service']} "
                f"(pid {span['pid']}), open {span['age_seconds']:.1f} s"
            )
    return found


def warnings_of(processes: list[dict[str, Any]]) -> list[str]:
    """One line per service and warning — about a default OpenAI client that can let a
    model call hang past the response threshold — naming its processes (the workers of
    one service share one); they never change the exit code."""
    found: dict[tuple[str, str], list[str]] = {}
    for process in processes:
        # .get: a sidecar older than this command does not report it.
        warning = process.get("timeout_warning")
        if warning:
            where = f"{process['pid']} on {process['host']}"
            found.setdefault((process["service"], warning), []).append(where)
    return [
        f"{service} (pid {', '.join(where)}): {warning}"
        for (service, warning), where in found.items()
    ]


def fetch_status(client: SidecarClient) -> Status:
    """Ask the sidecar behind ``client``; raises :class:`SidecarError` when it cannot
    answer, or answers something that is not a status."""
    processes = client.get("/v1/processes")
    spans = client.get("/v1/spans")
    try:
        return Status(client.url, list(processes["processes"]), list(spans["spans"]))
    except (KeyError, TypeError) as exc:
        raise CannotAsk(f"unexpected answer from {client.url}: {exc!r}") from None


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def _processes_table(processes: list[dict[str, Any]]) -> Table:
    table = Table(title="Processes", title_justify="left", expand=False)
    for name in ("SERVICE", "HOST", "PID", "STATE", "HEARTBEAT", "LOOP LAG"):
        table.add_column(name, no_wrap=True, justify="right" if name == "PID" else "left")
    for name in ("OPEN", "HUNG", "ORPHANED"):
        table.add_column(name, justify="right", no_wrap=True)
    for process in processes:
        blocked = any(loop["blocked"] for loop in process["loops"])
        state = Text(process["state"], style=_STYLES.get(process["state"], ""))
        if blocked:
            state.append(" loop blocked", style="bold magenta")
        lag = process["loop_lag_seconds"]
        table.add_row(
            process["service"],
            process["host"],
            str(process["pid"]),
            state,
            _seconds(process["heartbeat_age_seconds"]) + " ago",
            "-" if lag is None else f"{lag * 1000:.0f}ms",
            str(process["open_spans"]),
            Text(str(process["hung_spans"]), style="bold red" if process["hung_spans"] else ""),
            str(process["orphaned_spans"]),
        )
    return table


def _spans_table(spans: list[dict[str, Any]], limit: int) -> Table:
    ordered = sorted(spans, key=lambda s: (_STATE_ORDER.get(s["state"], 3), -s["age_seconds"]))
    # Every span that needs attention, then the oldest open ones up to ``limit``.
    troubled = [s for s in ordered if s["state"] != "open"]
    shown = troubled + [s for s in ordered if s["state"] == "open"][:limit]
    counts = {state: sum(1 for s in spans if s["state"] == state) for state in _STATE_ORDER}
    title = (
        f"Spans: {counts['open'] + counts['hung']} open, {counts['hung']} hung, "
        f"{counts['orphaned']} orphaned"
    )
    if len(shown) < len(spans):
        title += f" (showing {len(shown)}: every one in trouble, then the oldest)"
    table = Table(title=title, title_justify="left", expand=False)
    for name in ("STATE", "SERVICE", "PID", "KIND", "NAME", "AGENT", "AGE", "THRESHOLD"):
        table.add_column(
            name, no_wrap=True, justify="right" if name in {"PID", "AGE", "THRESHOLD"} else "left"
        )
    table.add_column("REASON / SPAN", overflow="fold")
    for span in shown:
        style = _STYLES.get(span["state"], "")
        table.add_row(
            Text(span["state"], style=style),
            span["service"],
            str(span["pid"]),
            span["kind"],
            Text(span["name"], style=style),
            span["agent"] or "-",
            _seconds(span["age_seconds"]),
            _seconds(span["threshold_seconds"]),
            span["reason"] or span["span_id"],
        )
    return table


def render(status: Status, limit: int) -> RenderableType:
    """The snapshot as rich tables, with a verdict line last."""
    parts: list[RenderableType] = []
    if status.processes:
        parts.append(_processes_table(status.processes))
    else:
        parts.append(Text("no app process has reported to this sidecar"))
    if status.spans:
        parts.append(_spans_table(status.spans, limit))
    else:
        parts.append(Text("no open spans"))
    for line in status.warnings:
        parts.append(Text(f"WARNING: {line}", style="yellow"))
    if status.problems:
        verdict = Text(f"ATTENTION: {len(status.problems)} problem(s)\n", style="bold red")
        for line in status.problems[:20]:
            verdict.append(f"  - {line}\n")
        if len(status.problems) > 20:
            verdict.append(f"  ... and {len(status.problems) - 20} more\n")
        parts.append(verdict)
    else:
        parts.append(Text("OK: all processes live, nothing hung", style="bold green"))
    return Group(*parts)


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or captured: wide enough that names and ids are not cut.
        console = Console(highlight=False, width=160)
    return console


def _snapshot(client: SidecarClient) -> tuple[int, Status | None, str]:
    try:
        status = fetch_status(client)
    except SidecarError as exc:
        # Whatever the sidecar said, no verdict came of it: the status is unknown.
        return EXIT_UNKNOWN, None, str(exc)
    return status.exit_code, status, ""


def run_status(args: argparse.Namespace) -> int:
    """Print the status once, or refresh it every ``args.watch`` seconds until
    interrupted; returns the exit code described in this module's docstring."""
    url = sidecar_url(args.url)
    if args.limit < 0:
        print("agents-watchdog: --limit must be 0 or more", file=sys.stderr)
        return EXIT_UNKNOWN
    if args.watch is not None and args.watch <= 0:
        print("agents-watchdog: --watch takes a positive number of seconds", file=sys.stderr)
        return EXIT_UNKNOWN
    try:
        client = SidecarClient.configured(url, args.token, args.timeout)
    except SidecarError as exc:
        return print_failure(exc, url, args.json)
    with client:
        return _run(args, client)


def _run(args: argparse.Namespace, client: SidecarClient) -> int:
    url = client.url
    console = _console()

    def show(code: int, status: Status | None, error: str, live: Live | None) -> None:
        if args.json:
            body = status.json() if status else {"url": url, "exit_code": code, "error": error}
            print(json.dumps(body, indent=None if args.watch else 2), flush=True)
            return
        if status is None:
            if live is None:
                print(f"agents-watchdog: {error}", file=sys.stderr, flush=True)
                return
            view: RenderableType = Text(f"agents-watchdog: {error}", style="bold red")
        else:
            view = render(status, args.limit)
        if live is not None:
            stamp = Text(f"{url} at {time.strftime('%H:%M:%S')}, every {args.watch:g}s (Ctrl-C)")
            live.update(Group(stamp, view), refresh=True)
        else:
            console.print(view)

    if args.watch is None:
        code, status, error = _snapshot(client)
        show(code, status, error, None)
        return code
    # Redrawn in place on a terminal; one snapshot after another when piped.
    screen: contextlib.AbstractContextManager[Live | None] = (
        Live(console=console, auto_refresh=False)
        if console.is_terminal and not args.json
        else contextlib.nullcontext()
    )
    code = EXIT_UNKNOWN
    try:
        with screen as live:
            while True:
                code, status, error = _snapshot(client)
                show(code, status, error, live)
                if live is None and not args.json:
                    console.print()
                time.sleep(args.watch)
    except KeyboardInterrupt:
        return code
