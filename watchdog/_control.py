"""In the app: carry out the sidecar's commands — cancel the task that owns a hung span,
or capture where it is stuck.

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
import linecache
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

from watchdog.protocol import MAX_STACK_LENGTH, Command, CommandResult, LoopReport

__all__ = ["RunAborted", "abortable", "execute"]

# Bound once, like the sender's clock: a patched time.monotonic must not fake a lag.
_monotonic = time.monotonic


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


def _find(
    open_spans: dict[Any, tuple[float, int, Any]], span_id: str
) -> tuple[Any, tuple[float, int, Any]] | None:
    """(span object, what the hot path recorded) for ``span_id``, or None."""
    for obj, info in open_spans.copy().items():
        key = obj.span_id if hasattr(obj, "span_data") else obj.trace_id
        if key == span_id:
            return obj, info
    return None


def _task_of(open_spans: dict[Any, tuple[float, int, Any]], span_id: str) -> tuple[Any, Any]:
    """(span object, its task) for ``span_id`` among the open spans, or (None, None)."""
    found = _find(open_spans, span_id)
    return (None, None) if found is None else (found[0], found[1][2])


_MAX_FRAMES = 40


def _format_frames(frames: list[Any]) -> list[str]:
    lines = []
    for frame in frames[-_MAX_FRAMES:]:
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}')
        source = linecache.getline(code.co_filename, frame.f_lineno).strip()
        if source:
            lines.append(f"    {source}")
    if len(frames) > _MAX_FRAMES:
        lines.insert(0, f"  ... {len(frames) - _MAX_FRAMES} outer frames omitted")
    return lines


def _awaited(awaitable: Any) -> list[Any]:
    """What ``awaitable`` is waiting on: the next coroutine, or the tasks behind a future."""
    for attribute in ("cr_await", "gi_yieldfrom", "ag_await"):
        inner = getattr(awaitable, attribute, None)
        if inner is not None:
            return [inner]
    if isinstance(awaitable, asyncio.Task):
        return [awaitable.get_coro()]
    if isinstance(awaitable, asyncio.Future):
        children = getattr(awaitable, "_children", None)  # asyncio.gather
        if children:
            return list(children)
        # asyncio.shield (and the like): the inner task hides in a done-callback's closure.
        tasks = []
        for callback in getattr(awaitable, "_callbacks", None) or ():
            function = callback[0] if isinstance(callback, tuple) else callback
            for cell in getattr(function, "__closure__", None) or ():
                with contextlib.suppress(ValueError):
                    value = cell.cell_contents
                    if isinstance(value, asyncio.Task) and value is not awaitable:
                        tasks.append(value)
        return tasks
    return []


def task_stack(task: Any) -> list[str]:
    """Where a task waits: its chain of awaiting coroutines, outermost first, followed
    into the tasks it awaits (``gather``, ``shield``, a task awaited directly).

    ``Task.get_stack()`` stops at the task's own coroutine; following ``cr_await``
    reaches the coroutine that is actually waiting (an HTTP read, a sleep, a lock).
    """
    lines: list[str] = []
    pending: list[tuple[Any, str | None]] = [(task, None)]
    seen: set[int] = set()
    steps = 0
    while pending and steps < 400:
        awaitable, header = pending.pop(0)
        owner: Any = None
        frames = []
        while awaitable is not None and id(awaitable) not in seen and steps < 400:
            steps += 1
            seen.add(id(awaitable))
            frame = (
                getattr(awaitable, "cr_frame", None)
                or getattr(awaitable, "gi_frame", None)
                or getattr(awaitable, "ag_frame", None)
            )
            if frame is not None:
                frames.append(frame)
            following = _awaited(awaitable)
            if isinstance(awaitable, asyncio.Task):
                owner = awaitable
            elif following and not hasattr(following[0], "cr_frame") and owner is not None:
                # A coroutine awaiting a future holds an opaque iterator; the task knows
                # the future it waits on.
                waiter = getattr(owner, "_fut_waiter", None)
                following = [waiter] if waiter is not None else []
            if len(following) == 1 and not isinstance(following[0], asyncio.Future):
                awaitable = following[0]
                continue
            for nxt in following:
                name = nxt.get_name() if isinstance(nxt, asyncio.Task) else type(nxt).__name__
                pending.append((nxt, f"  -> awaiting {name!r}:"))
            awaitable = None
        if header is not None and frames:
            lines.append(header)
        lines.extend(_format_frames(frames))
    return lines


def _awaiters(future: Any, depth: int = 0) -> list[Any]:
    """The tasks waiting on ``future``: directly (their wake-up callback is bound to
    them), or through the outer future of a ``gather`` or ``shield``."""
    found: list[Any] = []
    for callback in getattr(future, "_callbacks", None) or ():
        function = callback[0] if isinstance(callback, tuple) else callback
        owner = getattr(function, "__self__", None)
        if isinstance(owner, asyncio.Task):
            found.append(owner)
            continue
        for cell in getattr(function, "__closure__", None) or ():
            with contextlib.suppress(ValueError):
                value = cell.cell_contents
                if isinstance(value, asyncio.Future) and value is not future and depth < 4:
                    found.extend(_awaiters(value, depth + 1))
    return found


def _awaiting_chain(task: Any) -> list[Any]:
    """The tasks that wait on ``task``, outermost first (one line of descent)."""
    chain: list[Any] = []
    current = task
    while len(chain) < 16:
        parents = [t for t in _awaiters(current) if t is not task and t not in chain]
        if not parents:
            break
        current = parents[0]
        chain.append(current)
    chain.reverse()
    return chain


def _own_frames(task: Any) -> list[Any]:
    """A task's coroutine frames down to where it awaits another task or a future."""
    frames: list[Any] = []
    awaitable = task.get_coro()
    while awaitable is not None and len(frames) < 200:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return frames


def thread_stack(thread_id: int) -> list[str]:
    """What the thread is executing right now, innermost last."""
    frame = sys._current_frames().get(thread_id)
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return _format_frames(frames)


class LoopProbes:
    """Measures how late each event loop that ran spans runs a callback.

    Every heartbeat, the sender thread schedules a probe on each loop
    (``call_soon_threadsafe``); the probe notes when it ran. A loop whose probe has not
    run yet is blocked for as long as the probe has waited — and the stack of its
    thread then shows the line of sync code that blocks it.
    """

    def __init__(self, blocked_after: float = 1.0) -> None:
        self.blocked_after = blocked_after
        # loop -> (thread id, time the pending probe was scheduled or None, last lag)
        self._loops: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()

    def saw(self, task: Any, thread_id: int) -> None:
        """Remember the loop of a task that opened a span (sender thread only)."""
        loop = task.get_loop()
        if loop not in self._loops:
            self._loops[loop] = [thread_id, None, 0.0]

    def report(self, now: float) -> list[LoopReport]:
        """Lag of every known loop, then schedule the next probes."""
        reports = []
        for loop, state in list(self._loops.items()):
            thread_id, scheduled, lag = state
            if loop.is_closed():
                del self._loops[loop]
                continue
            if not loop.is_running():
                # An idle loop (``Runner.run_sync`` keeps one between requests) runs
                # nothing, so nothing on it is blocked; a probe it still holds is void.
                state[1], state[2] = None, 0.0
                reports.append(LoopReport(thread_id=thread_id, lag=0.0, stack=None))
                continue
            if scheduled is not None:
                lag = now - scheduled  # still waiting: blocked at least this long
            stack = None
            if lag >= self.blocked_after:
                stack = bounded(
                    "\n".join(
                        [f"Thread {thread_id} (event loop blocked, most recent call last):"]
                        + (thread_stack(thread_id) or ["  (the thread has ended)"])
                    )
                )
            reports.append(LoopReport(thread_id=thread_id, lag=round(lag, 6), stack=stack))
            if scheduled is None:
                state[1] = now
                try:
                    loop.call_soon_threadsafe(self._ran, state, now)
                except RuntimeError:  # closed meanwhile
                    del self._loops[loop]
        return reports

    @staticmethod
    def _ran(state: list[Any], scheduled: float) -> None:
        if state[1] != scheduled:
            return  # queued before the loop went idle: it measured the idleness
        state[2] = _monotonic() - scheduled
        state[1] = None


def capture(obj: Any, info: tuple[float, int, Any]) -> str:
    """The stacks of the span's task (if any) and of the thread that opened it."""
    _, thread_id, task = info
    parts = []
    if task is not None and not task.done():
        # Who waits on the span's task says why it runs (a tool call, a sub-agent);
        # the span's own task then says where it is stuck.
        chain = _awaiting_chain(task)
        for index, parent in enumerate(chain):
            parts.append(
                f"Task {parent.get_name()!r} (awaiting, outermost first):"
                if index == 0
                else f"  -> awaiting {parent.get_name()!r}:"
            )
            parts.extend(_format_frames(_own_frames(parent)))
        parts.append(
            f"  -> awaiting {task.get_name()!r} (the span's task):"
            if chain
            else f"Task {task.get_name()!r} (awaiting, outermost first):"
        )
        parts.extend(
            task_stack(task) or ["  (no frames: the task is not suspended in a coroutine)"]
        )
    names = {t.ident: t.name for t in threading.enumerate()}
    parts.append(f"Thread {names.get(thread_id, thread_id)!r} (now, most recent call last):")
    parts.extend(thread_stack(thread_id) or ["  (the thread has ended)"])
    return bounded("\n".join(parts))


def bounded(text: str, limit: int = MAX_STACK_LENGTH) -> str:
    """``text`` cut to ``limit`` characters in the middle: the outermost frames say why it
    runs and the innermost say where it is stuck, so both ends are kept."""
    if len(text) <= limit:
        return text
    marker = "\n  ... ({} characters omitted) ...\n"
    keep = limit - len(marker.format(len(text)))
    head = text[: keep // 3]
    tail = text[len(text) - (keep - len(head)) :]
    return head + marker.format(len(text) - len(head) - len(tail)) + tail


def execute(command: Command, open_spans: dict[Any, tuple[float, int, Any]]) -> CommandResult:
    """Carry out one command; never raises."""
    try:
        if command.action == "stacks":
            found = _find(open_spans, command.span_id)
            if found is None:
                return CommandResult(command.id, False, "span is no longer open")
            stack = capture(*found)
            return CommandResult(command.id, True, "stacks captured in-process", stack=stack)
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
