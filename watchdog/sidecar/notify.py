"""systemd's notify protocol (``sd_notify``): readiness, status, and watchdog pings.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a datagram socket: a path, or
``@name`` in the abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC``
(and ``WATCHDOG_PID``). The sidecar says ``READY=1`` once it serves requests,
``STOPPING=1`` when it begins to stop, and ``WATCHDOG=1`` at half the watchdog
interval. The pings are sent by a task on the sidecar's own event loop, and only while
the detector and its companions run: a wedged loop or a dead detector stops them, and
systemd restarts the sidecar. Outside systemd nothing here does anything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, MutableMapping
from typing import Final

from watchdog.sidecar.logs import log_event

__all__ = ["Notifier", "notify_address"]

_VARIABLES: Final = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def notify_address(value: str) -> str | bytes:
    """The socket address ``NOTIFY_SOCKET`` names: an absolute path, or ``@name`` for
    the abstract namespace (a leading NUL byte); raises ``ValueError`` otherwise."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"NOTIFY_SOCKET must be an absolute path or @name, got {value!r}")


def _watchdog_interval(environ: MutableMapping[str, str]) -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``), or None when no watchdog is
    asked of this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    # The watchdog is meant for the process named; a child that inherited the
    # variables must not ping on its parent's behalf.
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


class Notifier:
    """Sends notify messages to systemd. Every send is non-blocking and never raises:
    a full or vanished socket costs one message, never the sidecar."""

    def __init__(self, address: str | bytes, watchdog_interval: float | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_interval
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # systemd drains the socket at once; if it ever did not, the event loop must
        # not wait for it.
        self._socket.setblocking(False)
        self._status = ""
        self._failed = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier | None:
        """A notifier for the socket systemd passed, or None outside systemd.

        Removes the variables from ``environ`` (``os.environ`` by default), as
        ``sd_notify`` does on request: programs the sidecar starts (``py-spy``) must
        not speak for it.
        """
        environ = os.environ if environ is None else environ
        value = environ.get("NOTIFY_SOCKET", "")
        interval = _watchdog_interval(environ)
        for name in _VARIABLES:
            environ.pop(name, None)
        if not value:
            return None
        try:
            address = notify_address(value)
        except ValueError as exc:
            log_event(logging.WARNING, "notify_disabled", detail=str(exc))
            return None
        return cls(address, interval)

    def send(self, *fields: str) -> bool:
        """Send one message of ``KEY=value`` lines; True if the socket took it."""
        message = "\n".join(fields).encode()
        try:
            self._socket.sendto(message, self.address)
        except OSError as exc:
            # Logged once: a socket that is gone stays gone.
            if not self._failed:
                self._failed = True
                log_event(logging.WARNING, "notify_failed", error=exc.strerror or str(exc))
            return False
        return True

    def ready(self, status: str) -> None:
        """Tell systemd the service is up (``READY=1``), with a status line."""
        self._status = status
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """Update the line ``systemctl status`` shows, if it changed."""
        if status != self._status:
            self._status = status
            self.send(f"STATUS={status}")

    def stopping(self) -> None:
        """Tell systemd the service is shutting down (``STOPPING=1``)."""
        self._status = "stopping"
        self.send("STOPPING=1", "STATUS=stopping")

    async def keep_alive(
        self, problem: Callable[[], str | None], status: Callable[[], str] | None = None
    ) -> None:
        """Ping the watchdog every half interval while ``problem()`` finds none; runs
        until cancelled, on the loop whose health it vouches for.

        When ``problem()`` names one, the pings stop and ``WATCHDOG=trigger`` asks
        systemd to act now rather than at the timeout: a sidecar whose detector died
        still answers HTTP, but no longer flags anything.
        """
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            trouble = problem()
            if trouble is not None:
                log_event(logging.ERROR, "watchdog_stopped", problem=trouble)
                self._status = trouble
                self.send(f"STATUS={trouble}", "WATCHDOG=trigger")
                return
            self.send("WATCHDOG=1")
            if status is not None:
                self.status(status())
            await asyncio.sleep(interval)

    def close(self) -> None:
        """Close the socket; later sends fail quietly."""
        self._socket.close()
