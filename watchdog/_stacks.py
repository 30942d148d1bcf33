"""In the app: where a span's work is stuck — the chain of awaits of its asyncio task,
followed into whatever it waits on, and the frames of the thread that opened it.

Runs on the sender thread, on request only (never on the hot path). It reads other
threads' frames and tasks that belong to other event loops: everything here only reads,
and what it reads may change under it, so every walk is bounded and tolerant of a
chain that moves while it is followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import linecache
import sys
import threading
from typing import Any

from watchdog.protocol import MAX_STACK_LENGTH

__all__ = ["bounded", "capture", "task_stack", "thread_stack"]


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
