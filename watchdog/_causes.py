"""In the app: why a span's work is stuck, in plain words, with the fix — read from the
frames it waits in and what the app knows (its OpenAI client's timeouts).

Runs on the sender thread, on request (with the stacks of a hung span). It reads frames
and tasks that belong to other threads; everything is bounded and tolerant.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import sysconfig
from types import FrameType
from typing import Any

from watchdog._clients import ClientTimeouts, default_client_timeouts, timeouts_of
from watchdog._stacks import _outermost_first

__all__ = ["descend", "pending_tasks_behind", "probable_cause"]

READ_TIMEOUT_FIX = "set a read timeout, e.g. httpx.Timeout(20, connect=5)"
_STDLIB = os.path.normpath(sysconfig.get_paths()["stdlib"])
_PACKAGES = ("site-packages", "dist-packages")


def _refers_to(callback: Any, target: Any) -> bool:
    """True when a done-callback holds ``target`` (in its closure, its partial's
    arguments, or as the bound object itself)."""
    function = callback[0] if isinstance(callback, tuple) else callback
    held: list[Any] = [getattr(function, "__self__", None)]
    held.extend(getattr(function, "args", ()) or ())
    inner = getattr(function, "func", function)
    for cell in getattr(inner, "__closure__", None) or ():
        with contextlib.suppress(ValueError):
            held.append(cell.cell_contents)
    return any(value is target for value in held)


def pending_tasks_behind(waiter: Any, loop: Any) -> list[Any]:
    """The pending tasks whose completion ``waiter`` waits for: a ``gather``'s children,
    a ``shield``'s inner task, or the tasks that would wake it (``asyncio.wait``,
    ``wait_for`` on 3.11, a ``TaskGroup``)."""
    children = getattr(waiter, "_children", None)
    if children:
        return [t for t in children if not t.done()]
    behind = []
    for callback in getattr(waiter, "_callbacks", None) or ():
        function = callback[0] if isinstance(callback, tuple) else callback
        for cell in getattr(function, "__closure__", None) or ():
            with contextlib.suppress(ValueError):
                value = cell.cell_contents
                if isinstance(value, asyncio.Task) and not value.done():
                    behind.append(value)
    if behind:
        return behind
    tasks: list[Any] = []
    for _ in range(3):  # the loop's task set may change while another thread reads it
        with contextlib.suppress(RuntimeError):
            tasks = list(asyncio.all_tasks(loop))
            break
    return [
        t
        for t in tasks
        if not t.done() and any(_refers_to(c, waiter) for c in getattr(t, "_callbacks", ()) or ())
    ]


def descend(task: Any) -> tuple[Any, Any, int]:
    """Follow ``task``'s work down through the tasks it awaits while there is exactly
    one: (the innermost task, the future it is suspended on or None when it is not
    suspended, how many tasks that future waits for)."""
    current = task
    loop = task.get_loop()
    for _ in range(32):
        waiter = getattr(current, "_fut_waiter", None)
        if waiter is None or waiter.done():
            return current, None, 0
        if isinstance(waiter, asyncio.Task):
            current = waiter
            continue
        behind = pending_tasks_behind(waiter, loop)
        if len(behind) == 1:
            current = behind[0]
            continue
        return current, waiter, len(behind)
    return current, None, 0


def _coroutine_frames(task: Any) -> list[FrameType]:
    frames: list[FrameType] = []
    awaitable = task.get_coro()
    while awaitable is not None and len(frames) < 200:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            frame = getattr(awaitable, "ag_frame", None)
        if frame is None:
            break
        frames.append(frame)
        awaitable = (
            getattr(awaitable, "cr_await", None)
            or getattr(awaitable, "gi_yieldfrom", None)
            or getattr(awaitable, "ag_await", None)
        )
        if awaitable is not None and type(awaitable).__name__.startswith("async_generator_"):
            # `async for` over a generator: the generator hides behind its asend object.
            awaitable = next(
                (r for r in gc.get_referents(awaitable) if hasattr(r, "ag_frame")), None
            )
    return frames


def _thread_frames(thread_id: int) -> list[FrameType]:
    return _outermost_first(sys._current_frames().get(thread_id))


def _path(frame: FrameType) -> str:
    return frame.f_code.co_filename.replace("\\", "/")


def _is_library(frame: FrameType) -> bool:
    path = os.path.normpath(frame.f_code.co_filename)
    return any(part in path for part in _PACKAGES) or path.startswith(_STDLIB)


def _at(frame: FrameType) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _own_code(frames: list[FrameType]) -> FrameType | None:
    """The innermost frame of the app's own code (not the standard library, not an
    installed package)."""
    return next((f for f in reversed(frames) if not _is_library(f)), None)


def _client_timeouts(frames: list[FrameType]) -> ClientTimeouts:
    """The timeouts of the OpenAI client that made the call (its ``request`` frame holds
    it), else of the SDK's default client."""
    for frame in reversed(frames):
        if "/openai/" in _path(frame) and frame.f_code.co_name in ("request", "_request"):
            with contextlib.suppress(Exception):
                found = timeouts_of(frame.f_locals.get("self"), "the client that made the call")
                if found is not None:
                    return found
    return default_client_timeouts()


def _in(frames: list[FrameType], *parts: str) -> list[FrameType]:
    return [f for f in frames if any(part in _path(f) for part in parts)]


_HTTP = ("/httpcore/", "/httpcore2/", "/httpx/", "/httpx2/", "/h11/", "/anyio/streams/tls")
_CONNECT = ("connect_tcp", "connect_unix_socket", "_connect", "start_tls", "getaddrinfo")
_STREAMING = ("_iter_events", "aiter_bytes", "aiter_raw", "__aiter__", "__anext__", "_iter_chunks")


def _http_cause(frames: list[FrameType]) -> str:
    timeouts = _client_timeouts(frames)
    names = {f.f_code.co_name for f in _in(frames, *_HTTP)}
    if names & set(_CONNECT):
        return (
            "connecting to the model's API: the TCP or TLS handshake has not completed "
            f"(client: {timeouts.describe()}); set a connect timeout, "
            "e.g. httpx.Timeout(20, connect=5)"
        )
    streaming = bool(_in(frames, "/openai/_streaming.py")) or bool(names & set(_STREAMING))
    if streaming:
        what = "the model's response stream stalled after it began: no event arrives"
    elif "_receive_response_body" in names:
        what = "waiting on the model's HTTP response: its headers came, its body stalled"
    elif "_receive_response_headers" in names:
        what = "waiting on the model's HTTP response: no bytes of it have arrived"
    else:
        what = "waiting on the model's HTTP response"
    if timeouts.read is not None and timeouts.read <= 60:
        fix = (
            f"the client's read timeout of {timeouts.read:g} s has not fired yet; "
            "it will, or lower it"
        )
    else:
        fix = READ_TIMEOUT_FIX
    return f"{what} (client: {timeouts.describe()}); {fix}"


def _mcp_cause(frames: list[FrameType]) -> str:
    name = None
    for frame in frames:
        with contextlib.suppress(Exception):
            server = frame.f_locals.get("server") or frame.f_locals.get("self")
            candidate = getattr(server, "name", None)
            if isinstance(candidate, str) and "/agents/mcp/" in _path(frame):
                name = candidate
    who = f"the MCP server {name!r}" if name else "an MCP server"
    return (
        f"{who} stopped answering: the tool call's request waits for its response; "
        "check the server process, and set client_session_timeout_seconds on the "
        "MCPServer so a call cannot wait forever"
    )


def _lock_cause(frames: list[FrameType]) -> str | None:
    locks = [f for f in _in(frames, "/asyncio/locks.py") if f.f_code.co_name in {"acquire", "wait"}]
    if not locks:
        return None
    kind = locks[-1].f_locals.get("self") if locks else None
    if isinstance(kind, asyncio.Event):
        return None  # an Event is a wait, not a lock
    own = _own_code(frames)
    where = f" at {_at(own)}" if own is not None else ""
    return (
        f"waiting for an asyncio {type(kind).__name__ if kind is not None else 'lock'}{where}: "
        "another task holds it and has not released it (a lock held across an await "
        "that never ends, or a release that was skipped)"
    )


def _thread_cause(thread_id: int, names: dict[int, str]) -> str:
    frames = _thread_frames(thread_id)
    name = names.get(thread_id, str(thread_id))
    if not frames:
        return f"the thread {name!r} that opened the span has ended"
    innermost = frames[-1]
    lock = innermost.f_code.co_name in ("acquire", "wait", "_wait_for_tstate_lock") or (
        "/threading.py" in _path(innermost)
    )
    own = _own_code(frames)
    where = _at(own) if own is not None else _at(innermost)
    if lock:
        return (
            f"the thread {name!r} waits for a lock or another thread at {where}: a "
            "thread-safety conflict (two threads sharing one client, session or "
            "connection) is the usual cause"
        )
    return f"the thread {name!r} is busy at {where}"


def probable_cause(info: tuple[float, int, Any]) -> str:
    """The probable cause, in plain words, with the fix; never raises."""
    try:
        return _probable_cause(info)
    except Exception as exc:  # a chain that moved under us: say so rather than fail
        return f"cause not determined ({type(exc).__name__})"


def _probable_cause(info: tuple[float, int, Any]) -> str:
    import threading

    _, thread_id, task = info
    names = {t.ident or 0: t.name for t in threading.enumerate()}
    if task is None or task.done():
        return _thread_cause(thread_id, names)
    current, waiter, waiting_for = descend(task)
    if waiter is None:
        # Not suspended, yet not done: it is running, so nothing else on its loop runs.
        blocking = _thread_frames(thread_id)
        own = _own_code(blocking)
        line = _at(own or blocking[-1]) if blocking else "an unknown line"
        return (
            f"the event loop is blocked by sync code at {line}: nothing else on this "
            "loop runs until it returns; run it with asyncio.to_thread or make it async"
        )
    frames = _coroutine_frames(current)
    if _in(frames, "/mcp/"):
        return _mcp_cause(frames)
    if _in(frames, *_HTTP) or _in(frames, "/openai/_base_client.py"):
        return _http_cause(frames)
    lock = _lock_cause(frames)
    if lock is not None:
        return lock
    if frames and frames[-1].f_code.co_name in ("to_thread", "run_in_executor", "run_sync"):
        own = _own_code(frames)
        where = f" called at {_at(own)}" if own is not None else ""
        return (
            f"waiting for a worker thread{where} that has not finished: its stack below "
            "shows where it is (a blocking call without a timeout, or a lock)"
        )
    if waiting_for > 1:
        return f"waiting for {waiting_for} tasks at once, none of which has finished"
    own = _own_code(frames)
    if own is not None:
        return (
            f"the app's code awaits something that never completes at {_at(own)}; "
            "give that await a timeout (asyncio.timeout) or make sure it is resolved"
        )
    where = _at(frames[-1]) if frames else f"task {current.get_name()!r}"
    return f"waiting at {where}, which never completes"
