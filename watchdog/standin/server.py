"""Serving a :class:`StandIn` with uvicorn: in a background thread, or in the foreground."""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from watchdog._serving import GracefulServer
from watchdog.standin.app import StandIn

__all__ = ["StandInServer", "main"]


class _UvicornServer(GracefulServer):
    """A uvicorn server that reports its port once listening and closes the stand-in first."""

    def __init__(
        self, config: uvicorn.Config, standin: StandIn, on_started: Callable[[int], None]
    ) -> None:
        super().__init__(config)
        self._standin = standin
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started(int(self.servers[0].sockets[0].getsockname()[1]))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._standin.close()
        await super().shutdown(sockets=sockets)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _config(app: Starlette, host: str, port: int, log_level: str | None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="asyncio",
        ws="none",
        lifespan="off",
        log_config=None,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


class StandInServer:
    """Run a :class:`StandIn` with uvicorn on a loopback port in a background thread.

    Use as a context manager (or :meth:`start`/:meth:`stop`). Entering returns once the socket
    is listening; leaving closes the stand-in (releasing hanging and slow requests), shuts
    uvicorn down and joins its thread. A server can be started once.
    """

    def __init__(
        self,
        standin: StandIn | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 10.0,
        shutdown_timeout: float = 10.0,
    ) -> None:
        """Prepare (not start) a server; ``port=0`` picks a free port."""
        self.standin = standin if standin is not None else StandIn()
        self._host = host
        self._port = port
        self._startup_timeout = startup_timeout
        self._shutdown_timeout = shutdown_timeout
        self._started = threading.Event()
        self._bound_port: int | None = None
        self._server: _UvicornServer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL such as ``http://127.0.0.1:PORT`` (the OpenAI ``base_url`` is this + "/v1")."""
        if self._bound_port is None:
            raise RuntimeError("the stand-in server is not running")
        return _url(self._host, self._bound_port)

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._bound_port is None:
            raise RuntimeError("the stand-in server is not running")
        return self._bound_port

    @property
    def hanging(self) -> int:
        """Requests currently held by a ``hang`` step."""
        return self.standin.hanging

    @property
    def requests(self) -> int:
        """Total ``/v1/responses`` requests received."""
        return self.standin.requests

    @property
    def tool_outputs(self) -> list[str]:
        """What agents were told their tools returned (see :attr:`StandIn.tool_outputs`)."""
        return self.standin.tool_outputs

    def release(self) -> int:
        """Let all currently hanging requests answer; return how many. Thread-safe."""
        return self.standin.release()

    def start(self) -> None:
        """Start serving and block until listening; raise RuntimeError/TimeoutError if not."""
        if self._thread is not None:
            raise RuntimeError("a StandInServer can only be started once")

        def on_started(port: int) -> None:
            self._bound_port = port
            self._started.set()

        config = _config(self.standin.app(), self._host, self._port, "warning")
        self._server = _UvicornServer(config, self.standin, on_started)
        self._thread = threading.Thread(target=self._run, name="standin-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._started.wait(0.02):
            if not self._thread.is_alive():
                raise RuntimeError(f"the stand-in server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("the stand-in server did not start in time")

    def _run(self) -> None:
        assert self._server is not None
        try:
            self._server.run()
        except BaseException as exc:  # reported by start(); SystemExit from uvicorn included
            self._error = exc

    def stop(self) -> None:
        """Release held requests, shut uvicorn down and join the thread. Idempotent."""
        self.standin.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self._shutdown_timeout)
            if self._thread.is_alive():
                raise RuntimeError("the stand-in server did not shut down in time")

    def __enter__(self) -> StandInServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve a stand-in in the foreground until SIGINT/SIGTERM.

    Prints the base URL on one line to stdout (flushed) once listening. Returns the exit code.
    """
    parser = argparse.ArgumentParser(
        prog="python -m watchdog.standin",
        description="Loopback stand-in for the OpenAI Responses API, scripted by model name.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="TCP port, 0 = any (default 8787)")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    args = parser.parse_args(argv)
    host: str = args.host
    standin = StandIn()

    def on_started(port: int) -> None:
        print(_url(host, port), flush=True)

    server = _UvicornServer(
        _config(standin.app(), host, args.port, args.log_level), standin, on_started
    )
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits on startup failure (e.g. port in use)
        return exc.code if isinstance(exc.code, int) else 1
    return 0
