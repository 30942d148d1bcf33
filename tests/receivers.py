"""Loopback HTTP receivers for alerts: they record what arrives and can misbehave."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps its access log out of the test output."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class LoopbackServer:
    """A threaded HTTP server on a free loopback port, serving from :meth:`start` to
    :meth:`stop`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class Receiver:
    """Records every JSON POST with its arrival time. ``script`` gives the answers for
    the first requests as (status, headers); later ones get 200. ``delay`` makes every
    answer wait that long (a slow receiver)."""

    def __init__(
        self, script: list[tuple[int, dict[str, str]]] | None = None, delay: float = 0.0
    ) -> None:
        self.script = list(script or [])
        self.delay = delay
        self.received: list[tuple[float, Any]] = []
        self.answered: list[int] = []
        self.changed = threading.Condition()
        self.closing = threading.Event()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                arrived = time.monotonic()
                with receiver.changed:
                    status, headers = receiver.script.pop(0) if receiver.script else (200, {})
                if receiver.delay:
                    receiver.closing.wait(receiver.delay)
                with receiver.changed:
                    receiver.received.append((arrived, json.loads(body)))
                    receiver.answered.append(status)
                    receiver.changed.notify_all()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self._http = LoopbackServer(Handler)
        self.url = self._http.url

    def bodies(self) -> list[Any]:
        """What arrived (and was answered 200), in order."""
        with self.changed:
            return [
                body
                for (_, body), status in zip(self.received, self.answered, strict=True)
                if status == 200
            ]

    def wait_for(self, check: Callable[[list[Any]], bool], timeout: float = 15.0) -> list[Any]:
        """Wait until ``check(bodies)`` holds; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                bodies = [
                    b for (_, b), s in zip(self.received, self.answered, strict=True) if s == 200
                ]
                if check(bodies):
                    return bodies
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"receiver never got what was expected; got {bodies}")
                self.changed.wait(remaining)

    def __enter__(self) -> Receiver:
        self._http.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.closing.set()
        self._http.stop()
