"""In the app: carry out the sidecar's commands — end the run that a hung span belongs
to, or capture where it is stuck.

Cancelling happens on the task's own event loop (``call_soon_threadsafe``): asyncio
objects are not thread-safe, and the sender thread is not the loop's thread. Within an
agent run, ``cancel`` ends the run and its caller gets :class:`RunAborted` (see
``_runs.py``). A span outside any agent run has only its own task cancelled; the task
that runs its trace is remembered as *aborted*, so that :func:`abortable` around that
code can turn the cancellation into :class:`RunAborted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

from watchdog._causes import descend, probable_cause
from watchdog._runs import RunAborted, end_run, run_of
from watchdog._stacks import _own_frames, bounded, capture, thread_stack
from watchdog.protocol import Command, CommandResult, LoopReport

__all__ = ["RunAborted", "abortable", "execute"]

# Bound once, like the sender's clock: a patched time.monotonic must not fake a lag.
_monotonic = time.monotonic


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


def _trace_id_of(open_spans: dict[Any, tuple[float, int, Any]], span_id: str) -> str | None:
    """``span_id`` itself when it names an open trace (not a span), else None."""
    found = _find(open_spans, span_id)
    if found is None or hasattr(found[0], "span_data"):
        return None
    return span_id


def _end_runs_of_trace(
    open_spans: dict[Any, tuple[float, int, Any]], trace_id: str, reason: str
) -> str:
    """End every agent run that has a span open in the trace; says which, or ""."""
    runs = {}
    for obj, (_, _, task) in open_spans.copy().items():
        if task is None or task.done() or getattr(obj, "trace_id", None) != trace_id:
            continue
        run = run_of(task)
        if run is not None and not run.loop.is_closed():
            runs[id(run)] = run
    for run in runs.values():
        run.loop.call_soon_threadsafe(end_run, run, None, reason)
    return f"{len(runs)} run(s) of the trace" if runs else ""


def _innermost_wait(task: Any) -> tuple[Any, Any] | str:
    """(the task that waits, the future it waits on) at the bottom of ``task``'s work —
    followed through the tasks it awaits while there is exactly one — or why there is
    no await that a timeout may touch."""
    current, waiter, waiting_for = descend(task)
    if waiter is None:
        return (
            f"task {current.get_name()!r} is not suspended on a pending await "
            "(it is running, or blocks its event loop)"
        )
    if waiting_for > 1:
        return (
            f"task {current.get_name()!r} waits on {waiting_for} tasks at once; "
            "a timeout would have to pick one"
        )
    waiting = set()
    for callback in getattr(waiter, "_callbacks", None) or ():
        owner = getattr(callback[0] if isinstance(callback, tuple) else callback, "__self__", None)
        if isinstance(owner, asyncio.Task):
            waiting.add(id(owner))
    if waiting != {id(current)}:
        return "the future at the bottom is awaited by other tasks too: left alone"
    return current, waiter


_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)


def _where(task: Any) -> str:
    """``file:line in function`` of the innermost coroutine frame of ``task`` outside
    asyncio itself (an ``Event.wait`` says less than the read that called it)."""
    frames = _own_frames(task)
    if not frames:
        return f"task {task.get_name()!r}"
    outside = [f for f in frames if not f.f_code.co_filename.startswith(_ASYNCIO_DIR)]
    frame = (outside or frames)[-1]
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _time_out(task: Any, reason: str) -> None:
    """On the task's loop: make the innermost await of ``task``'s work raise
    ``TimeoutError``, as a read timeout there would have (checked again here: the
    sender thread's view may be stale)."""
    found = _innermost_wait(task)
    if isinstance(found, tuple):
        found[1].set_exception(TimeoutError(reason))


def execute(command: Command, open_spans: dict[Any, tuple[float, int, Any]]) -> CommandResult:
    """Carry out one command; never raises."""
    try:
        if command.action == "stacks":
            found = _find(open_spans, command.span_id)
            if found is None:
                return CommandResult(command.id, False, "span is no longer open")
            stack = capture(*found)
            cause = bounded(probable_cause(found[1]), 1000)
            return CommandResult(
                command.id, True, "stacks captured in-process", stack=stack, cause=cause
            )
        if command.action == "timeout":
            return _execute_timeout(command, open_spans)
        if command.action not in ("cancel", "cancel_trace"):
            return CommandResult(command.id, False, f"unknown action {command.action!r}")
        reason = command.reason or f"agents-watchdog aborted span {command.span_id}"
        if command.action == "cancel_trace" or command.span_id == _trace_id_of(
            open_spans, command.span_id
        ):
            ended = _end_runs_of_trace(open_spans, command.span_id, reason)
            if ended:
                return CommandResult(command.id, True, f"cancel delivered to {ended}")
        obj, task = _task_of(open_spans, command.span_id)
        if obj is None:
            return CommandResult(command.id, False, "span is no longer open")
        if task is None:
            return CommandResult(
                command.id, False, "span was opened outside an event loop: no task to cancel"
            )
        if task.done():
            return CommandResult(command.id, False, "the span's task has already finished")
        loop = task.get_loop()
        if loop.is_closed():
            return CommandResult(command.id, False, "the task's event loop is closed")
        run = run_of(task)
        name = task.get_name()
        if run is not None:
            loop.call_soon_threadsafe(end_run, run, task, reason)
            return CommandResult(command.id, True, f"cancel delivered to task {name!r} and its run")
        # Outside any agent run (a span of the app's own making): only abortable() can
        # tell this cancellation from others.
        _, owner = _task_of(open_spans, obj.trace_id)
        if owner is not None:
            _mark_aborted(owner, reason)
        loop.call_soon_threadsafe(task.cancel, reason)
        return CommandResult(command.id, True, f"cancel delivered to task {name!r}")
    except Exception as exc:
        return CommandResult(command.id, False, f"failed: {type(exc).__name__}: {exc}"[:1000])


def _execute_timeout(
    command: Command, open_spans: dict[Any, tuple[float, int, Any]]
) -> CommandResult:
    obj, task = _task_of(open_spans, command.span_id)
    if obj is None:
        return CommandResult(command.id, False, "span is no longer open")
    if task is None or task.done():
        return CommandResult(command.id, False, "the span has no pending task to time out")
    found = _innermost_wait(task)
    if isinstance(found, str):
        return CommandResult(command.id, False, found)
    loop = task.get_loop()
    if loop.is_closed():
        return CommandResult(command.id, False, "the task's event loop is closed")
    reason = command.reason or f"agents-watchdog timed out span {command.span_id}"
    where = _where(found[0])  # before delivery: a retry may move the task at once
    loop.call_soon_threadsafe(_time_out, task, reason)
    return CommandResult(command.id, True, f"TimeoutError delivered to the await at {where}")
