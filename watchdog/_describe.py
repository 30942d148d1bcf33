"""The SDK adapter of the app side: what an SDK ``Span`` or ``Trace`` says on the wire.

Only ids, kinds, names and the hot path's own record (clock, thread, task) are read:
never a span's input, output or arguments. Runs on the sender thread, never on the
app's (see ``processor.py``).
"""

from __future__ import annotations

from typing import Any, Final

from agents.tracing import Span

from watchdog.protocol import MAX_ID_LENGTH, MAX_NAME_LENGTH, SpanStart

OpenInfo = tuple[float, int, Any]
"""What the hot path records when a span starts: (monotonic time, thread id, task)."""

# Kinds whose wire name is not their ``name`` attribute.
_NAMED_BY_MODEL: Final = frozenset({"generation", "transcription", "speech"})


def span_name(data: Any) -> str:
    """The human name of a span: agent, tool, guardrail or workflow — never its input."""
    kind = data.type
    if kind == "turn":
        name = data.agent_name
    elif kind == "handoff":
        name = f"{data.from_agent or '?'} -> {data.to_agent or '?'}"
    elif kind == "mcp_tools":
        name = data.server
    elif kind in _NAMED_BY_MODEL:
        name = data.model
    else:
        name = getattr(data, "name", None)
    return str(name)[:MAX_NAME_LENGTH] if name else ""


_IS_SPAN: dict[type, bool] = {}


def is_span(obj: Any) -> bool:
    """True for an SDK span, False for a trace (or anything else)."""
    # isinstance against the SDK's abstract base class is slow (ABC machinery); the
    # concrete types are few, so remember the answer per type.
    kind = type(obj)
    answer = _IS_SPAN.get(kind)
    if answer is None:
        answer = _IS_SPAN[kind] = isinstance(obj, Span)
    return answer


def describe_start(obj: Any, info: OpenInfo) -> SpanStart:
    """Turn an SDK ``Span`` or ``Trace`` that started into a wire event."""
    started, thread_id, task = info
    task_id = id(task) if task is not None else None
    if is_span(obj):
        data = obj.span_data
        return SpanStart(
            span_id=obj.span_id[:MAX_ID_LENGTH],
            trace_id=obj.trace_id[:MAX_ID_LENGTH],
            parent_id=obj.parent_id[:MAX_ID_LENGTH] if obj.parent_id else None,
            kind=str(data.type)[:64],
            name=span_name(data),
            started=started,
            thread_id=thread_id,
            task_id=task_id,
        )
    trace_id = obj.trace_id[:MAX_ID_LENGTH]
    return SpanStart(
        span_id=trace_id,
        trace_id=trace_id,
        parent_id=None,
        kind="trace",
        name=str(obj.name or "")[:MAX_NAME_LENGTH],
        started=started,
        thread_id=thread_id,
        task_id=task_id,
    )


def parent_of(obj: Any) -> str | None:
    """The id of the span or trace a span runs under (None for a trace)."""
    if not is_span(obj):
        return None
    return str(obj.parent_id or obj.trace_id)[:MAX_ID_LENGTH]


def span_id_of(obj: Any) -> str:
    """The wire id of a span or trace (a trace's id is its trace id)."""
    key = obj.span_id if is_span(obj) else obj.trace_id
    return str(key)[:MAX_ID_LENGTH]


def failed(obj: Any) -> bool:
    """Whether a span that ended carries an error (a trace never does)."""
    return getattr(obj, "error", None) is not None
