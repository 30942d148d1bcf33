"""The sender's one HTTP connection to the sidecar, from the standard library alone.

A watched app already carries the SDK's HTTP stack; a loopback POST a second needs no
second one. ``http.client`` speaks HTTP/1.1 with keep-alive over TCP, TLS or the
sidecar's Unix socket (``unix:///run/agents-watchdog.sock``), and imports nothing that a
Python process does not already have.
"""

from __future__ import annotations

import http.client
import socket
from typing import Final
from urllib.parse import urlsplit

# Failures that mean "the connection kept alive was closed meanwhile": worth one retry
# on a fresh connection, since the request never reached a live server.
_STALE: Final = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix stream socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        """Connect to the socket path instead of a host and port."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def check_url(url: str) -> None:
    """Raise ``ValueError`` naming what is wrong with a sidecar URL, if anything."""
    if not url.startswith(("http://", "https://", "unix:///")):
        raise ValueError(
            f"url must start with http://, https:// or unix:/// (a socket path), got {url!r}"
        )
    if url.startswith("unix://"):
        return
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ValueError(f"url has a port that is not a number 0-65535: {url!r}") from None
    if not parts.hostname:
        raise ValueError(f"url names no host: {url!r}")


class Transport:
    """POSTs bodies to one sidecar over a kept-alive connection.

    ``post`` raises ``OSError`` or ``http.client.HTTPException`` when no answer came;
    the connection is then dropped and the next call opens a new one. Not thread-safe:
    it belongs to the sender thread.
    """

    def __init__(self, url: str, token: str | None) -> None:
        self._url = url
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        if url.startswith("unix://"):
            self._unix: str | None = url.removeprefix("unix://")
            self._base = ""
        else:
            self._unix = None
            parts = urlsplit(url)
            self._https = parts.scheme == "https"
            self._host = parts.hostname or "127.0.0.1"
            self._port = parts.port
            self._base = parts.path.rstrip("/")
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self._unix is not None:
            return _UnixConnection(self._unix, timeout)
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def post(self, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        """Send ``body`` to ``path``; returns the status and the reply's body."""
        for attempt in (1, 2):
            reused = self._connection is not None
            connection = self._connection or self._connect(timeout)
            self._connection = connection
            connection.timeout = timeout
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            try:
                connection.request("POST", self._base + path, body, self._headers)
                response = connection.getresponse()
                data = response.read()
            except _STALE:
                self.close()
                if reused and attempt == 1:
                    continue
                raise
            except BaseException:
                self.close()
                raise
            if response.will_close:
                self.close()
            return response.status, data
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Drop the connection (a new one opens on the next post)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
