"""A loopback stand-in for the OpenAI Responses API, scripted by the model name.

The stand-in answers ``POST /v1/responses`` (plain JSON and ``stream: true`` server-sent
events) well enough for the real openai-agents SDK to run agents, tools, agents-as-tools and
handoffs against it through an ordinary ``openai.AsyncOpenAI`` client::

    with StandInServer() as server:
        client = AsyncOpenAI(base_url=server.url + "/v1", api_key="standin")
        agents.set_default_openai_client(client, use_for_tracing=False)
        agents.set_default_openai_api("responses")
        agent = Agent(name="A", model="standin:tool=lookup*3;reply=Done")

Behaviour is scripted by the model name: ``"standin:"`` followed by ``;``-separated steps.
The step for a request is chosen by how many tool results (``function_call_output`` input
items) the agent has already received, counted from its last handoff (so a handoff target
starts at its own first step); a ``tool=NAME*N`` step accounts for N results. Steps:

``reply=TEXT``
    A final assistant message with TEXT (a default text when empty; when the request asks for
    a JSON-schema output, an example object matching the schema).
``tool=NAME`` / ``tool=NAME*N``
    One (or N parallel) ``function_call`` items for tool NAME, with arguments made from the
    tool's parameter schema (required strings ``"x"``, numbers ``1``, booleans ``true``).
``handoff=AGENT_NAME``
    A call to the handoff tool ``transfer_to_<agent_name>`` (normalised the way the SDK does).
``hang``
    Never answer until released (:meth:`StandIn.release`, ``POST /control/release``), the
    stand-in is closed, or the client disconnects; then answer as ``reply=``.
``hang=once``
    Hang like ``hang`` the first time a request reaches this step of this model, and
    answer as ``reply=`` every later time: a call that heals on its retry.
``slow=SECONDS``
    Wait that long, then answer as ``reply=``.

Past the last step (or for a model name without the prefix) the answer is a default reply.
Nothing here runs, logs or binds anything at import time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive

from watchdog._serving import GracefulServer

__all__ = [
    "DEFAULT_REPLY",
    "MODEL_PREFIX",
    "ScriptError",
    "StandIn",
    "StandInServer",
    "Step",
    "count_tool_results",
    "example_value",
    "handoff_tool_name",
    "main",
    "parse_script",
    "script",
    "select_step",
]

MODEL_PREFIX = "standin:"
"""Model names starting with this prefix carry a script; any other name gets a default reply."""

DEFAULT_REPLY = "Done."
"""Text of the final message for ``reply=`` without text, released hangs, ``slow`` steps and
requests past the end of their script."""

_HANDOFF_PREFIX = "transfer_to_"
_TOOL_NAME = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\*(\d+))?$")
_MAX_PARALLEL_CALLS = 64
_MAX_SCHEMA_DEPTH = 16

StepKind = Literal["reply", "tool", "handoff", "hang", "slow"]


class ScriptError(ValueError):
    """A model-name script that cannot be parsed (answered with HTTP 400)."""


@dataclass(frozen=True)
class Step:
    """One parsed script step.

    ``value`` is the reply text, tool name or handoff agent name; ``count`` the number of
    parallel calls of a ``tool`` step; ``seconds`` the delay of a ``slow`` step.
    """

    kind: StepKind
    value: str = ""
    count: int = 1
    seconds: float = 0.0

    @property
    def results(self) -> int:
        """How many tool results this step accounts for when choosing later steps (at least 1)."""
        return self.count if self.kind == "tool" else 1


def script(*steps: str) -> str:
    """Build a stand-in model name from steps: ``script("tool=a", "reply=ok")``."""
    return MODEL_PREFIX + ";".join(steps)


def parse_script(model: str) -> list[Step]:
    """Parse a model name into steps.

    A name without :data:`MODEL_PREFIX` is an empty script. Raises :class:`ScriptError` for an
    unknown step or a malformed value. Step text cannot contain ``;``.
    """
    if not model.startswith(MODEL_PREFIX):
        return []
    steps: list[Step] = []
    for raw in model[len(MODEL_PREFIX) :].split(";"):
        part = raw.strip()
        if not part:
            continue
        key, _, value = part.partition("=")
        key = key.strip().lower()
        value = value.strip()
        if key == "reply":
            steps.append(Step("reply", value))
        elif key == "hang":
            if value not in ("", "once"):
                raise ScriptError(f"step {part!r}: expected hang or hang=once")
            steps.append(Step("hang", value))
        elif key == "tool":
            match = _TOOL_NAME.match(value)
            if match is None:
                raise ScriptError(f"step {part!r}: expected tool=NAME or tool=NAME*N")
            count = int(match.group(2)) if match.group(2) else 1
            if not 1 <= count <= _MAX_PARALLEL_CALLS:
                raise ScriptError(f"step {part!r}: N must be between 1 and {_MAX_PARALLEL_CALLS}")
            steps.append(Step("tool", match.group(1), count=count))
        elif key == "handoff":
            if not value:
                raise ScriptError(f"step {part!r}: expected handoff=AGENT_NAME")
            steps.append(Step("handoff", value))
        elif key == "slow":
            try:
                seconds = float(value)
            except ValueError:
                raise ScriptError(f"step {part!r}: expected slow=SECONDS") from None
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ScriptError(f"step {part!r}: SECONDS must be a finite number >= 0")
            steps.append(Step("slow", seconds=seconds))
        else:
            raise ScriptError(f"unknown step {part!r} in model {model!r}")
    return steps


def _input_items(raw: object) -> list[Mapping[str, Any]]:
    if not isinstance(raw, list):
        return []
    return [item for item in raw if isinstance(item, Mapping)]


def count_tool_results(items: Iterable[Mapping[str, Any]]) -> int:
    """Count ``function_call_output`` items after the last handoff result.

    A handoff result is the output of a ``function_call`` whose name starts with
    ``transfer_to_``; counting restarts after it so the receiving agent begins its own script.
    """
    items = list(items)
    handoff_calls = {
        item.get("call_id")
        for item in items
        if item.get("type") == "function_call"
        and str(item.get("name", "")).startswith(_HANDOFF_PREFIX)
    }
    count = 0
    for item in items:
        if item.get("type") != "function_call_output":
            continue
        count = 0 if item.get("call_id") in handoff_calls else count + 1
    return count


def select_step(steps: Sequence[Step], tool_results: int) -> Step | None:
    """Return the step to perform after ``tool_results`` tool results, or None past the end.

    Each step accounts for :attr:`Step.results` results, so for scripts without ``*N`` the
    index is simply ``tool_results``.
    """
    remaining = tool_results
    index = 0
    while index < len(steps) and remaining > 0:
        remaining -= steps[index].results
        index += 1
    return steps[index] if index < len(steps) else None


def handoff_tool_name(agent_name: str) -> str:
    """The SDK's default handoff tool name for an agent: ``transfer_to_<normalised name>``."""
    name = re.sub(r"\s", "_", f"{_HANDOFF_PREFIX}{agent_name}")
    return re.sub(r"[^a-zA-Z0-9_]", "_", name).lower()


def example_value(schema: object, root: Mapping[str, Any] | None = None, _depth: int = 0) -> Any:
    """Return a value valid for a JSON schema: strings ``"x"``, numbers ``1``, booleans ``true``.

    Objects get their required properties only, arrays are empty unless ``minItems`` asks for
    more, enums and consts give their first value, ``anyOf``/``oneOf`` the first non-null
    option, and local ``$ref``s are followed.
    """
    if not isinstance(schema, Mapping) or _depth > _MAX_SCHEMA_DEPTH:
        return None
    root = schema if root is None else root
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for key in ref[2:].split("/"):
            target = target.get(key) if isinstance(target, Mapping) else None
        return example_value(target, root, _depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            chosen = next((o for o in options if not _is_null_schema(o)), options[0])
            return example_value(chosen, root, _depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind == "string":
        return "x"
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "array":
        min_items = schema.get("minItems")
        count = min_items if isinstance(min_items, int) and min_items > 0 else 0
        return [example_value(schema.get("items"), root, _depth + 1) for _ in range(count)]
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        names = required if isinstance(required, list) else []
        return {
            name: example_value(properties.get(name), root, _depth + 1)
            for name in names
            if isinstance(name, str)
        }
    return "x"


def _is_null_schema(schema: object) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") == "null"


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _message_item(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": _new_id("msg"),
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _function_call_item(name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": _new_id("fc"),
        "call_id": _new_id("call"),
        "name": name,
        "arguments": json.dumps(arguments),
        "status": "completed",
    }


def _sse(event: Mapping[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def _text_chunks(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*|\s+", text)


def _error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    return JSONResponse({"error": error}, status_code=status)


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


@dataclass
class _Request:
    body: Mapping[str, Any]
    step: Step | None
    tools: dict[str, Any] = field(default_factory=dict)


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
            return _error_response(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error_response(400, "request body must be a JSON object")
        model = body.get("model")
        try:
            steps = parse_script(model if isinstance(model, str) else "")
        except ScriptError as exc:
            return _error_response(400, str(exc), param="model")
        tools: dict[str, Any] = {}
        raw_tools = body.get("tools")
        for tool in raw_tools if isinstance(raw_tools, list) else []:
            if isinstance(tool, Mapping) and tool.get("type") == "function" and "name" in tool:
                tools[str(tool["name"])] = tool.get("parameters")
        items = _input_items(body.get("input"))
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
        call = _Request(body, step, tools)
        headers = {"x-request-id": _new_id("req")}
        if body.get("stream") is True:
            headers["cache-control"] = "no-cache"
            events = self._stream(call, request.receive)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        await self._pause(call.step, request.receive)
        response = self._response_object(call, _new_id("resp"), int(time.time()))
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

    def _output(self, call: _Request) -> list[dict[str, Any]]:
        step = call.step
        if step is not None and step.kind == "tool":
            schema = call.tools.get(step.value)
            arguments = example_value(schema) if schema is not None else {"input": "x"}
            return [_function_call_item(step.value, arguments) for _ in range(step.count)]
        if step is not None and step.kind == "handoff":
            name = step.value
            if name not in call.tools:
                name = handoff_tool_name(step.value)
            schema = call.tools.get(name)
            arguments = example_value(schema) if schema is not None else {}
            return [_function_call_item(name, arguments)]
        text = step.value if step is not None and step.kind == "reply" else ""
        return [_message_item(text or self._default_text(call.body))]

    def _default_text(self, body: Mapping[str, Any]) -> str:
        text_config = body.get("text")
        fmt = text_config.get("format") if isinstance(text_config, Mapping) else None
        if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
            return json.dumps(example_value(fmt.get("schema")))
        return self.default_reply

    def _response_object(
        self,
        call: _Request,
        response_id: str,
        created_at: int,
        output: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A ``Response`` object; with ``output=None`` the completed one for ``call.step``."""
        body = call.body
        in_progress = output is not None
        items = self._output(call) if output is None else output
        usage = None
        if not in_progress:
            input_tokens = max(1, len(json.dumps(body.get("input"))) // 4)
            output_tokens = max(1, len(json.dumps(items)) // 4)
            usage = {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            }
        tools = body.get("tools")
        return {
            "id": response_id,
            "object": "response",
            "created_at": created_at,
            "completed_at": None if in_progress else int(time.time()),
            "status": "in_progress" if in_progress else "completed",
            "model": body.get("model") or "standin",
            "output": items,
            "instructions": body.get("instructions"),
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "tool_choice": body.get("tool_choice") or "auto",
            "tools": tools if isinstance(tools, list) else [],
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"),
            "previous_response_id": body.get("previous_response_id"),
            "metadata": body.get("metadata") or {},
            "text": body.get("text") or {"format": {"type": "text"}},
            "truncation": body.get("truncation") or "disabled",
            "error": None,
            "incomplete_details": None,
            "usage": usage,
        }

    async def _stream(self, call: _Request, receive: Receive) -> AsyncIterator[str]:
        """The SSE event sequence; a ``hang``/``slow`` step waits after ``response.in_progress``."""
        sequence = itertools.count()
        response_id = _new_id("resp")
        created_at = int(time.time())

        def event(kind: str, **fields: Any) -> str:
            return _sse({"type": kind, **fields, "sequence_number": next(sequence)})

        started = self._response_object(call, response_id, created_at, output=[])
        yield event("response.created", response=started)
        yield event("response.in_progress", response=started)
        await self._pause(call.step, receive)
        final = self._response_object(call, response_id, created_at)
        for index, item in enumerate(final["output"]):
            where: dict[str, Any] = {"item_id": item["id"], "output_index": index}
            if item["type"] == "message":
                part = item["content"][0]
                added = {**item, "status": "in_progress", "content": []}
                yield event("response.output_item.added", item=added, output_index=index)
                where["content_index"] = 0
                yield event("response.content_part.added", part={**part, "text": ""}, **where)
                for chunk in _text_chunks(part["text"]):
                    yield event("response.output_text.delta", delta=chunk, logprobs=[], **where)
                yield event("response.output_text.done", text=part["text"], logprobs=[], **where)
                yield event("response.content_part.done", part=part, **where)
            else:
                added = {**item, "status": "in_progress", "arguments": ""}
                yield event("response.output_item.added", item=added, output_index=index)
                arguments = item["arguments"]
                yield event("response.function_call_arguments.delta", delta=arguments, **where)
                yield event(
                    "response.function_call_arguments.done",
                    arguments=arguments,
                    name=item["name"],
                    **where,
                )
            yield event("response.output_item.done", item=item, output_index=index)
        yield event("response.completed", response=final)


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


if __name__ == "__main__":
    sys.exit(main())
