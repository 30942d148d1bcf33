"""A TCP proxy between an app and the sidecar that misbehaves on command.

Modes, switched at any time with :meth:`FaultProxy.set_mode` (they act on the next
chunk of data, so a kept-alive connection feels the change at once):

``pass``
    Forward both ways.
``delay``
    Hold each chunk from the client for a random time up to ``delay`` seconds before
    forwarding it. Data keeps flowing to the sidecar after the client gave up and
    closed, as a service-mesh proxy does: requests arrive late, out of order with the
    client's retries on new connections.
``drop``
    Swallow everything the client sends; never answer (the client times out).
``reset``
    Reset the client's connection (TCP RST) on its next chunk.
``truncate``
    Forward requests, but only the first ``truncate_at`` bytes of each response; then
    close both sides.
``truncate_request``
    Forward the client's next request up to half its body, then close both sides.

Everything runs on one event loop in a thread of its own; :attr:`counts` says how often
each fault was applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections import Counter
from types import TracebackType
from typing import Final, Literal

__all__ = ["FaultProxy", "Mode"]

Mode = Literal["pass", "delay", "drop", "reset", "truncate", "truncate_request"]
_CHUNK: Final = 65_536
# After the client left, wait this long for the sidecar to finish before closing.
_LINGER: Final = 5.0


class FaultProxy:
    """Listens on a loopback port and forwards to ``target_port`` on loopback."""

    def __init__(self, target_port: int, seed: int = 0) -> None:
        self.target_port = target_port
        self.mode: Mode = "pass"
        self.delay = 0.5
        self.truncate_at = 64
        self.counts: Counter[str] = Counter()
        self.port = 0
        self._random = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        """Where apps should send to."""
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: Mode, delay: float | None = None) -> None:
        """Misbehave in this way from the next chunk on."""
        if delay is not None:
            self.delay = delay
        self.mode = mode

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.counts["connections"] += 1
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        state = _Connection(client_w, upstream_w)
        down = asyncio.create_task(self._downstream(upstream_r, state))
        try:
            await self._upstream(client_r, state)
            if not state.closed:
                # The client is done sending (or gone): let the sidecar finish first.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(down), _LINGER)
        finally:
            state.close()
            down.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await down

    async def _upstream(self, client_r: asyncio.StreamReader, state: _Connection) -> None:
        while not state.closed:
            try:
                chunk = await client_r.read(_CHUNK)
            except OSError:
                return
            if not chunk:
                return
            mode = self.mode
            if mode == "drop" or state.black_hole:
                state.black_hole = True
                self.counts["dropped"] += 1
                continue
            if mode == "reset":
                self.counts["reset"] += 1
                state.reset_client()
                return
            if mode == "truncate_request":
                head = await _head_and_half_a_body(chunk, client_r)
                if head is None:
                    return
                self.counts["truncated_request"] += 1
                state.upstream.write(head)
                with contextlib.suppress(OSError):
                    await state.upstream.drain()
                state.close()
                return
            if mode == "delay":
                self.counts["delayed"] += 1
                await asyncio.sleep(self._random.uniform(0, self.delay))
            if mode == "truncate":
                state.truncate_reply = True
            state.upstream.write(chunk)
            try:
                await state.upstream.drain()
            except OSError:
                return

    async def _downstream(self, upstream_r: asyncio.StreamReader, state: _Connection) -> None:
        while True:
            chunk = await upstream_r.read(_CHUNK)
            if not chunk:
                return
            if state.client_gone:
                continue  # the sidecar answered a client that left: nobody to tell
            if state.truncate_reply:
                self.counts["truncated_reply"] += 1
                state.client.write(chunk[: self.truncate_at])
                with contextlib.suppress(OSError):
                    await state.client.drain()
                state.close()
                return
            state.client.write(chunk)
            try:
                await state.client.drain()
            except OSError:
                state.client_gone = True


async def _head_and_half_a_body(data: bytes, reader: asyncio.StreamReader) -> bytes | None:
    """Read on until the request's headers are in; returns them and half its body (None
    if the client left first)."""
    while b"\r\n\r\n" not in data:
        more = await reader.read(_CHUNK)
        if not more:
            return None
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length // 2:
        more = await reader.read(_CHUNK)
        if not more:
            return None
        body += more
    return head + b"\r\n\r\n" + body[: length // 2]


class _Connection:
    """Both ends of one proxied connection."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.black_hole = False
        self.truncate_reply = False
        self.client_gone = False
        self.closed = False

    def reset_client(self) -> None:
        """Close the client's socket with an RST instead of a FIN, and the upstream too."""
        sock = self.client.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.client.transport.abort()
        self.client_gone = True
        self.close()

    def close(self) -> None:
        """Close both sides (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for writer in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                writer.close()
