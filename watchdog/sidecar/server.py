"""Running the sidecar: bind, serve with uvicorn, stop gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from typing import Any

import uvicorn

from watchdog._serving import GracefulServer
from watchdog.sidecar.app import Sidecar
from watchdog.sidecar.config import Config
from watchdog.sidecar.connections import ConnectionGuard, guarded, raise_open_files_limit
from watchdog.sidecar.logs import configure_logging, log_event
from watchdog.sidecar.notify import Notifier

__all__ = ["bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """Bind and listen on a TCP socket (port 0 picks a free one)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        # Listen now, not when uvicorn gets to it: once "listening" is logged, clients
        # that connect are queued in the backlog instead of being refused.
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind_unix(path: str) -> socket.socket:
    """Listen on a Unix socket at ``path`` that only this user can connect to."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(f"{path} exists and is not a socket")
        os.unlink(path)  # left by a previous run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Owner-only from the first instant: no window in which others could connect.
    previous = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(previous)
    os.chmod(path, 0o600)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


_CREDENTIALS = struct.Struct("3i")


class PeerCredentialsProtocol(ConnectionGuard):
    """uvicorn's h11 protocol (with a deadline per request, see ``connections.py``),
    plus what the socket itself says about who connected, passed to the app in
    ``scope["extensions"]``: on a Unix socket the kernel's ``SO_PEERCRED`` (pid, uid,
    gid) as ``peer_credentials``; on TCP the connection's own two ends as
    ``peer_address`` (client, server). Identity is proven from these only: the
    request's ``client`` is what a proxy header may rewrite, and a local process could
    name another process's connection in one."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Read the peer's identity once per connection, from the socket."""
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is None:
            return
        extension: dict[str, Any]
        if sock.family == socket.AF_UNIX:
            try:
                raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
            except OSError:
                return
            extension = {"peer_credentials": _CREDENTIALS.unpack(raw)}
        else:
            peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
            if not peer or not local:
                return
            extension = {
                "peer_address": ((str(peer[0]), int(peer[1])), (str(local[0]), int(local[1])))
            }
        app = self.app

        async def with_identity(scope: Any, receive: Any, send: Any) -> None:
            scope["extensions"] = {**scope.get("extensions", {}), **extension}
            await app(scope, receive, send)

        self.app = with_identity


class SidecarServer(GracefulServer):
    """The sidecar's uvicorn server, speaking systemd's notify protocol when started by
    systemd: ``READY=1`` once requests are served, watchdog pings from this event loop
    while the sidecar is healthy, ``STOPPING=1`` as the shutdown begins."""

    def __init__(self, config: uvicorn.Config, sidecar: Sidecar, notifier: Notifier | None) -> None:
        super().__init__(config)
        self.sidecar = sidecar
        self.notifier = notifier
        self._pings: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start serving (lifespan first), then tell systemd."""
        await super().startup(sockets)
        notifier = self.notifier
        if notifier is None or not self.started:
            return
        sidecar = self.sidecar
        notifier.ready(f"watching; serving on {sidecar.base_url}")
        self._pings = asyncio.create_task(
            notifier.keep_alive(sidecar.problem, self._status),
            name="agents-watchdog-systemd-watchdog",
        )

    def _status(self) -> str:
        registry = self.sidecar.registry
        return f"{registry.open_count} open spans from {len(registry.processes)} processes"

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Tell systemd first: the graceful part may take seconds."""
        notifier = self.notifier
        if notifier is not None:
            notifier.stopping()
        if self._pings is not None:
            self._pings.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pings
        try:
            await super().shutdown(sockets)
        finally:
            if notifier is not None:
                notifier.close()


def serve(config: Config) -> int:
    """Serve until SIGTERM or SIGINT; returns the process exit code."""
    configure_logging(config.server.log_level)
    limits = config.limits
    # Each connection is a file; leave room for the database, logs and pipes.
    raise_open_files_limit(limits.max_connections + 256)
    try:
        sock = bind(config.server.host, config.server.port)
    except OSError as exc:
        log_event(
            logging.ERROR,
            "bind_failed",
            host=config.server.host,
            port=config.server.port,
            error=exc.strerror or str(exc),
        )
        return 1
    sockets = [sock]
    if config.server.unix_socket:
        try:
            sockets.append(bind_unix(config.server.unix_socket))
        except OSError as exc:
            log_event(
                logging.ERROR,
                "bind_failed",
                path=config.server.unix_socket,
                error=exc.strerror or str(exc),
            )
            sock.close()
            return 1
    sidecar = Sidecar(config)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    sidecar.base_url = f"http://{shown}:{port}"
    log_event(
        logging.INFO,
        "listening",
        url=f"http://{shown}:{port}",
        version=sidecar.version,
        sidecar_id=sidecar.sidecar_id,
        config=config.source,
        auth=config.server.token is not None,
        unix_socket=config.server.unix_socket or None,
    )
    server = SidecarServer(
        uvicorn.Config(
            sidecar.app(),
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            timeout_keep_alive=30,
            # Bounds what one client can make the sidecar buffer before a handler runs.
            h11_max_incomplete_event_size=64 * 1024,
            # Past it, requests get 503 until connections close (slow ones time out).
            limit_concurrency=limits.max_connections,
            server_header=False,
            # Never rewrite the client address from X-Forwarded-For: nothing sits in
            # front of the sidecar, and identity must come from the socket alone.
            proxy_headers=False,
            http=guarded(
                PeerCredentialsProtocol, limits.request_timeout, sidecar.ingest_stats.rejected
            ),
        ),
        sidecar,
        Notifier.from_environ(),
    )
    try:
        server.run(sockets=sockets)
    finally:
        for listening in sockets:
            listening.close()
        if config.server.unix_socket:
            with contextlib.suppress(OSError):
                os.unlink(config.server.unix_socket)
    return 0
