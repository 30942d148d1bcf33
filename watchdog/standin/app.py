"""The stand-in's state and its ASGI app: counters, held requests, and the routes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive

from watchdog.standin.responses import (
    Call,
    error_response,
    function_tools,
    input_items,
    new_id,
    response_object,
    stream_events,
)
from watchdog.standin.script import (
    DEFAULT_REPLY,
    ScriptError,
    Step,
    count_tool_results,
    parse_script,
    select_step,
)

__all__ = ["StandIn"]


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event
    hang: bool

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has already closed
            self.loop.call_soon_threadsafe(self.event.set)


class StandIn:
    """The stand-in's state: request counters and the set of waiting (hanging/slow) requests.

    All public methods and properties are thread-safe. One instance may serve several
    :meth:`app` objects, but waits belong to the event loop that serves them.
    """

    def __init__(self, *, default_reply: str = DEFAULT_REPLY) -> None:
        """Create an idle stand-in; ``default_reply`` replaces :data:`DEFAULT_REPLY`."""
        self.default_reply = default_reply
        self._lock = threading.Lock()
        self._requests = 0
        self._waiters: set[_Waiter] = set()
        self._closed = False
        # (model, tool results) of the hang=once steps that have hung already.
        self._hung_once: set[tuple[str, int]] = set()
        self._tool_outputs: list[str] = []

    @property
    def requests(self) -> int:
        """Total ``/v1/responses`` requests received so far."""
        with self._lock:
            return self._requests

    @property
    def tool_outputs(self) -> list[str]:
        """Every distinct tool result (``function_call_output``) agents have sent, in the
        order first seen: what each agent was told its tools returned."""
        with self._lock:
            return list(self._tool_outputs)

    @property
    def hanging(self) -> int:
        """Requests currently held by a ``hang`` step."""
        with self._lock:
            return sum(1 for waiter in self._waiters if waiter.hang)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`: ``hang`` and ``slow`` steps then answer at once."""
        with self._lock:
            return self._closed

    def release(self) -> int:
        """Let every currently hanging request answer as ``reply=``; return how many.

        Later ``hang`` steps hang as usual. Safe to call from any thread.
        """
        with self._lock:
            released = [waiter for waiter in self._waiters if waiter.hang]
            self._waiters.difference_update(released)
        for waiter in released:
            waiter.wake()
        return len(released)

    def close(self) -> int:
        """Release every hanging and slow request and answer future ones at once.

        Returns the number of hanging requests released. Idempotent and thread-safe; used on
        server shutdown so that held requests cannot keep the server alive.
        """
        with self._lock:
            self._closed = True
            waiters = list(self._waiters)
            self._waiters.clear()
        for waiter in waiters:
            waiter.wake()
        return sum(1 for waiter in waiters if waiter.hang)

    def app(self) -> Starlette:
        """Return an ASGI app serving this stand-in.

        Routes: ``POST /v1/responses`` (also ``/responses``), ``POST /control/release`` →
        ``{"released": n}``, ``GET /control/stats`` → ``{"requests": n, "hanging": m}``.
        """
        return Starlette(
            routes=[
                Route("/v1/responses", self._responses, methods=["POST"]),
                Route("/responses", self._responses, methods=["POST"]),
                Route("/control/release", self._control_release, methods=["POST"]),
                Route("/control/stats", self._control_stats, methods=["GET"]),
            ]
        )

    async def _control_release(self, request: Request) -> Response:
        return JSONResponse({"released": self.release()})

    async def _control_stats(self, request: Request) -> Response:
        with self._lock:
            hanging = sum(1 for waiter in self._waiters if waiter.hang)
            stats = {"requests": self._requests, "hanging": hanging}
        return JSONResponse(stats)

    async def _responses(self, request: Request) -> Response:
        with self._lock:
            self._requests += 1
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error_response(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return error_response(400, "request body must be a JSON object")
        model = body.get("model")
        try:
            steps = parse_script(model if isinstance(model, str) else "")
        except ScriptError as exc:
            return error_response(400, str(exc), param="model")
        tools = function_tools(body)
        items = input_items(body.get("input"))
        with self._lock:
            for item in items:
                if item.get("type") == "function_call_output":
                    output = str(item.get("output"))
                    if output not in self._tool_outputs:
                        self._tool_outputs.append(output)
        results = count_tool_results(items)
        step = select_step(steps, results)
        if step is not None and step.kind == "hang" and step.value == "once":
            with self._lock:
                retried = (str(model), results) in self._hung_once
                self._hung_once.add((str(model), results))
            if retried:
                step = Step("reply")
        call = Call(body, step, tools)
        headers = {"x-request-id": new_id("req")}
        if body.get("stream") is True:
            headers["cache-control"] = "no-cache"
            events = stream_events(
                call, self.default_reply, lambda: self._pause(call.step, request.receive)
            )
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        await self._pause(call.step, request.receive)
        response = response_object(call, new_id("resp"), int(time.time()), self.default_reply)
        return JSONResponse(response, headers=headers)

    async def _pause(self, step: Step | None, receive: Receive) -> None:
        """Hold the request for a ``hang`` or ``slow`` step; return early on client disconnect."""
        if step is None or step.kind not in ("hang", "slow"):
            return
        hang = step.kind == "hang"
        waiter = _Waiter(asyncio.get_running_loop(), asyncio.Event(), hang)
        with self._lock:
            if self._closed:
                return
            self._waiters.add(waiter)
        woken = asyncio.ensure_future(waiter.event.wait())
        gone = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait(
                {woken, gone},
                timeout=None if hang else step.seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            with self._lock:
                self._waiters.discard(waiter)
            woken.cancel()
            gone.cancel()
