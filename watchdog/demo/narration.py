"""What the demo prints, and how it reads the sidecar: as an operator would, through
its HTTP API, its metrics, its alert webhook and the ``agents-watchdog`` commands."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from typing import Any

import httpx

__all__ = [
    "WebhookReceiver",
    "cause_of",
    "incident_table",
    "learned_row",
    "metric_lines",
    "poll",
    "say",
    "status_lines",
]


def say(text: str = "") -> None:
    """Print one line of the demo's narration, at once."""
    print(text, flush=True)


class WebhookReceiver:
    """A local stand-in for the team's alert receiver: prints each alert it gets."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.payloads: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                payload = json.loads(body)
                receiver.payloads.append(payload)
                alert = payload["alerts"][0]
                say(
                    f"   [webhook] {payload['status'].upper()} {alert['labels']['alertname']}: "
                    f"{alert['annotations']['summary']}"
                    + (
                        f" ({alert['annotations']['resolution']})"
                        if payload["status"] == "resolved"
                        else ""
                    )
                )
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def statuses(self) -> list[str]:
        """Statuses of the payloads received so far."""
        return [p["status"] for p in self.payloads]


def poll(check: Callable[[], Any], within: float, every: float = 0.1) -> Any:
    """Call ``check`` until it returns something truthy or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(every)


def metric_lines(sidecar_url: str, *names: str) -> list[str]:
    """The sample lines of the named metrics, as Prometheus would scrape them."""
    text = httpx.get(f"{sidecar_url}/metrics", timeout=5).text
    return [line for line in text.splitlines() if line.startswith(names) and "} 0.0" not in line]


def cause_of(sidecar_url: str, span_id: str) -> str | None:
    listing = httpx.get(f"{sidecar_url}/v1/spans", timeout=5).json()["spans"]
    found = next((s for s in listing if s["span_id"] == span_id), None)
    return None if found is None else found.get("cause")


def status_lines(sidecar_url: str) -> tuple[int, list[str]]:
    """What ``agents-watchdog status`` prints for the sidecar, and its exit status."""
    from watchdog.cli import main as cli

    captured = io.StringIO()
    with redirect_stdout(captured):
        code = cli(["status", "--url", sidecar_url, "--limit", "3"])
    return code, [line.rstrip() for line in captured.getvalue().splitlines() if line.strip()]


def learned_row(sidecar_url: str, name: str) -> dict[str, Any] | None:
    rows = httpx.get(f"{sidecar_url}/v1/thresholds", timeout=5).json()["thresholds"]
    return next((r for r in rows if r["name"] == name and r["source"] == "learned"), None)


def incident_table(incidents: list[dict[str, Any]]) -> list[str]:
    from watchdog.incidents_cli import print_table

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        print_table(incidents)
    return buffer.getvalue().splitlines()
