"""Connections: how slow a client may be, and how many may be open at once.

uvicorn closes a kept-alive connection that stays idle, but not a client that is slow to
send: one that connects and sends nothing, or trickles its request line and headers a
byte at a time (slowloris), holds a connection — and a place under
``limits.max_connections`` — for as long as it likes. :class:`ConnectionGuard` gives
every request a deadline instead: ``limits.request_timeout`` seconds from the first
byte (or from the connection) until its headers are in. The body has the same time
again, counted by the endpoint that reads it (``Sidecar._read_body``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from typing import Final

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ConnectionGuard", "guarded", "raise_open_files_limit"]

logger = logging.getLogger("watchdog.sidecar")

_TIMEOUT_BODY: Final = b"request timeout: the request was not sent in time\n"
_TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


class ConnectionGuard(H11Protocol):
    """uvicorn's h11 protocol with a deadline on receiving each request's headers.

    Past the deadline the client gets a 408 and the connection closes; the refusal is
    counted in ``rejected["header_timeout"]``. Configure through :func:`guarded`.
    """

    request_timeout: float = 10.0
    rejected: Counter[str] | None = None
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request."""
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """The first bytes of a request on a kept-alive connection start its clock."""
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()
        super().data_received(data)

    def on_response_complete(self) -> None:
        """The request was answered; the next one gets its own deadline."""
        self._disarm()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Nothing to time out any more."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return  # the headers are in; the endpoint reading the body keeps its own time
        if self.transport.is_closing():
            return
        if self.rejected is not None:
            self.rejected["header_timeout"] += 1  # metrics.HEADER_TIMEOUT: a connection
        self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def guarded(
    base: type[ConnectionGuard], request_timeout: float, rejected: Counter[str]
) -> type[ConnectionGuard]:
    """``base`` with this sidecar's deadline and rejection counter (uvicorn builds one
    protocol object per connection from the class it is given)."""
    return type(base.__name__, (base,), {"request_timeout": request_timeout, "rejected": rejected})


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (never above the
    hard limit, never lowering it): each connection is a file. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open files limit to %d: %s", target, exc)
            return soft
        return target
    return soft
