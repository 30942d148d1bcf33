"""Running the sidecar: bind, serve with uvicorn, stop gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import socket

import uvicorn

from watchdog._serving import GracefulServer
from watchdog.sidecar.app import Sidecar
from watchdog.sidecar.config import Config
from watchdog.sidecar.logs import configure_logging, log_event

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


def serve(config: Config) -> int:
    """Serve until SIGTERM or SIGINT; returns the process exit code."""
    configure_logging(config.server.log_level)
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
    )
    server = GracefulServer(
        uvicorn.Config(
            sidecar.app(),
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            timeout_keep_alive=30,
            # Bounds what one client can make the sidecar buffer before a handler runs.
            h11_max_incomplete_event_size=64 * 1024,
            server_header=False,
        )
    )
    server.run(sockets=[sock])
    sock.close()
    return 0
