"""Responses API payloads: ``Response`` objects, output items, errors and the SSE stream.

Shaped as the OpenAI Responses API answers, closely enough for the ``openai`` client and
the openai-agents SDK to parse them; nothing here holds state or touches the network.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse

from watchdog.standin.examples import example_value
from watchdog.standin.script import Step, handoff_tool_name

__all__ = [
    "Call",
    "error_response",
    "function_tools",
    "input_items",
    "new_id",
    "output_items",
    "response_object",
    "stream_events",
]


@dataclass
class Call:
    """One request to answer: its JSON body, the script step chosen for it (None past the
    end) and the parameter schemas of its function tools, by tool name."""

    body: Mapping[str, Any]
    step: Step | None
    tools: dict[str, Any] = field(default_factory=dict)


def new_id(prefix: str) -> str:
    """A fresh id in the API's style, such as ``resp_<hex>``."""
    return f"{prefix}_{uuid.uuid4().hex}"


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    """An ``invalid_request_error`` answer, as the API sends for a bad request."""
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    return JSONResponse({"error": error}, status_code=status)


def input_items(raw: object) -> list[Mapping[str, Any]]:
    """The request's ``input`` items that are objects (none for a plain-string input)."""
    if not isinstance(raw, list):
        return []
    return [item for item in raw if isinstance(item, Mapping)]


def function_tools(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parameter schema of each ``function`` tool the request offers, by tool name."""
    tools: dict[str, Any] = {}
    raw_tools = body.get("tools")
    for tool in raw_tools if isinstance(raw_tools, list) else []:
        if isinstance(tool, Mapping) and tool.get("type") == "function" and "name" in tool:
            tools[str(tool["name"])] = tool.get("parameters")
    return tools


def _message_item(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": new_id("msg"),
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _function_call_item(name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": new_id("fc"),
        "call_id": new_id("call"),
        "name": name,
        "arguments": json.dumps(arguments),
        "status": "completed",
    }


def output_items(call: Call, default_reply: str) -> list[dict[str, Any]]:
    """The output items for the call's step: tool calls, a handoff call or one message.

    A message without scripted text says ``default_reply``, or gives an example object
    when the request asks for a JSON-schema output.
    """
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
    return [_message_item(text or _default_text(call.body, default_reply))]


def _default_text(body: Mapping[str, Any], default_reply: str) -> str:
    text_config = body.get("text")
    fmt = text_config.get("format") if isinstance(text_config, Mapping) else None
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        return json.dumps(example_value(fmt.get("schema")))
    return default_reply


def response_object(
    call: Call,
    response_id: str,
    created_at: int,
    default_reply: str,
    output: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``Response`` object: with ``output=None`` the completed one for ``call.step``
    (with usage), otherwise an in-progress one holding ``output``."""
    body = call.body
    in_progress = output is not None
    items = output_items(call, default_reply) if output is None else output
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


def _sse(event: Mapping[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def _text_chunks(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*|\s+", text)


async def stream_events(
    call: Call, default_reply: str, pause: Callable[[], Awaitable[None]]
) -> AsyncIterator[str]:
    """The SSE event sequence of a streamed response.

    ``pause`` is awaited after ``response.in_progress``: a ``hang`` or ``slow`` step holds
    the stream there, as a slow model does before its first token.
    """
    sequence = itertools.count()
    response_id = new_id("resp")
    created_at = int(time.time())

    def event(kind: str, **fields: Any) -> str:
        return _sse({"type": kind, **fields, "sequence_number": next(sequence)})

    started = response_object(call, response_id, created_at, default_reply, output=[])
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    await pause()
    final = response_object(call, response_id, created_at, default_reply)
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
