"""In the app: carry out the sidecar's commands — cancel the task that owns a hung span.

Cancelling happens on the task's own event loop (``call_soon_threadsafe``): asyncio
objects are not thread-safe, and the sender thread is not the loop's thread.

The task that runs the whole trace (the one that called ``Runner.run``) is remembered
as *aborted*, so that :func:`watchdog.processor.abortable` around ``Runner.run`` can turn
the resulting cancellation into :class:`RunAborted` — whether the cancelled task was
that one or a child of it (a tool, a sub-agent run as a tool).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

from watchdog.protocol import Command, CommandResult

__all__ = ["RunAborted", "abortable", "execute"]


class RunAborted(Exception):
    """The watchdog aborted this run: a span in it hung, and its rule (or an operator)
    asked for it to be cancelled. ``str(exc)`` says which span and why."""


_aborted: dict[asyncio.Task[Any], str] = {}
_aborted_lock = threading.Lock()


def _mark_aborted(task: asyncio.Task[Any], reason: str) -> None:
    with _aborted_lock:
        for done in [t for t in _aborted if t.done()]:
            del _aborted[done]  # runs that did not use abortable(): forget them
        _aborted[task] = reason


def _take_aborted(task: asyncio.Task[Any]) -> str | None:
    with _aborted_lock:
        return _aborted.pop(task, None)


@contextlib.asynccontextmanager
async def abortable() -> AsyncIterator[None]:
    """Wrap ``Runner.run`` to tell a watchdog abort from other cancellations.

    Like ``asyncio.timeout()``: when the watchdog cancels this run, the cancellation is
    absorbed (``uncancel``) and :class:`RunAborted` is raised instead, so the app can
    answer its user with an error. Any other cancellation passes through untouched::

        async with abortable():
            result = await Runner.run(agent, prompt)
    """
    task = asyncio.current_task()
    try:
        yield
    except asyncio.CancelledError:
        reason = None if task is None else _take_aborted(task)
        if reason is None:
            raise
        assert task is not None
        if task.cancelling():
            task.uncancel()
        raise RunAborted(reason) from None


def _task_of(open_spans: dict[Any, tuple[float, int, Any]], span_id: str) -> tuple[Any, Any]:
    """(span object, its task) for ``span_id`` among the open spans, or (None, None)."""
    for obj, (_, _, task) in open_spans.copy().items():
        key = obj.span_id if hasattr(obj, "span_data") else obj.trace_id
        if key == span_id:
            return obj, task
    return None, None


def execute(command: Command, open_spans: dict[Any, tuple[float, int, Any]]) -> CommandResult:
    """Carry out one command; never raises."""
    try:
        if command.action not in ("cancel", "cancel_trace"):
            return CommandResult(command.id, False, f"unknown action {command.action!r}")
        obj, task = _task_of(open_spans, command.span_id)
        if obj is None:
            return CommandResult(command.id, False, "span is no longer open")
        if task is None:
            return CommandResult(
                command.id, False, "span was opened outside an event loop: no task to cancel"
            )
        if task.done():
            return CommandResult(command.id, False, "the span's task has already finished")
        _, owner = _task_of(open_spans, obj.trace_id)
        reason = command.reason or f"agents-watchdog aborted span {command.span_id}"
        if owner is not None:
            _mark_aborted(owner, reason)
        loop = task.get_loop()
        if loop.is_closed():
            return CommandResult(command.id, False, "the task's event loop is closed")
        loop.call_soon_threadsafe(task.cancel, reason)
        name = task.get_name()
        return CommandResult(command.id, True, f"cancel delivered to task {name!r}")
    except Exception as exc:
        return CommandResult(command.id, False, f"failed: {type(exc).__name__}: {exc}"[:1000])
