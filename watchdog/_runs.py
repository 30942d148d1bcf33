"""In the app: the boundary of each agent run, where a watchdog abort becomes
:class:`RunAborted` — the one outcome a caller sees when the watchdog stops its run.

``cancel`` means *the run ends*, whatever kind of span hung in it: the hung span's own
task is cancelled (so the stuck await unwinds where it waits: an HTTP read is dropped,
an MCP call abandoned), and so is the run itself, so that no layer in between can absorb
the cancellation and carry on (the SDK reports a cancelled tool to the calling agent as
a tool error, which would leave the run going). The caller then gets ``RunAborted`` —
an ``Exception``, so ``except Exception`` in a web view catches it — from
``Runner.run``, ``Runner.run_sync`` and ``RunResultStreaming.stream_events()``, never a
bare ``CancelledError``.

To know which run a span belongs to without touching the hot path, the outermost
``AgentRunner.run``/``run_streamed`` of each run sets a context variable; every task the
run creates inherits it, so the span's task names its run. Nested runs (an agent used
as a tool) leave it alone: the outermost run answers for the abort. A cancellation that
the watchdog did not make passes through untouched (as with ``asyncio.timeout()``: if
someone else also cancelled the task, theirs wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gc
import weakref
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["Run", "RunAborted", "aborted", "end_run", "guard_runs", "run_of"]


class RunAborted(Exception):
    """The watchdog aborted this run: a span in it hung, and its rule (or an operator)
    asked for it to be cancelled. ``str(exc)`` says which span and why."""


class Run:
    """One outermost agent run: the task that awaits it (``None`` for a streamed run,
    whose work runs in the SDK's own task), its loop, its streamed result, and the
    abort that ended it, if any."""

    __slots__ = ("__weakref__", "abort", "cancels", "loop", "stream", "task")

    def __init__(
        self,
        task: asyncio.Task[Any] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.task = task
        self.loop = loop
        self.stream: weakref.ref[Any] | None = None
        self.abort: RunAborted | None = None
        # Cancellations of ``task`` that the watchdog made: exactly these are taken back.
        self.cancels = 0


_current: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "agents_watchdog_run", default=None
)
# A streamed result carries its Run (the result's consumer is not one of the run's
# tasks); results are unhashable dataclasses, so an attribute rather than a weak map.
_RUN_ATTRIBUTE = "_agents_watchdog_run"
_guarded = False


def run_of(task: asyncio.Task[Any]) -> Run | None:
    """The outermost run that ``task`` works for, or None (a span outside any run).
    Reads the task's context, so it is safe from another thread."""
    get_context = getattr(task, "get_context", None)
    if get_context is not None:
        context = get_context()
    else:
        # Python 3.11 keeps a task's context to itself; the garbage collector's view of
        # what the task refers to includes it.
        context = next(
            (r for r in gc.get_referents(task) if isinstance(r, contextvars.Context)), None
        )
    return None if context is None else context.get(_current)


def aborted(result: Any) -> RunAborted | None:
    """The :class:`RunAborted` that ended a streamed run (a ``RunResultStreaming``), or
    None if the watchdog did not abort it."""
    run = _run_of_stream(result)
    return None if run is None else run.abort


def _run_of_stream(result: Any) -> Run | None:
    run = getattr(result, _RUN_ATTRIBUTE, None)
    return run if isinstance(run, Run) else None


def end_run(run: Run, task: asyncio.Task[Any] | None, reason: str) -> None:
    """End ``run`` because ``task`` (one of its tasks, or None) hung. Call on the loop
    of ``task`` (or of the run, when ``task`` is None)."""
    if run.abort is None:
        run.abort = RunAborted(reason)
    if task is not None and not task.done() and task.cancel(reason) and task is run.task:
        run.cancels += 1
    stream = run.stream() if run.stream is not None else None
    if stream is not None:
        if getattr(stream, "_stored_exception", None) is None:
            # The SDK's own stream_events() raises what a run stored as its failure.
            stream._stored_exception = run.abort
        _on_loop(run.loop, stream.cancel)
    elif run.task is not None and run.task is not task:
        _on_loop(run.loop, _cancel_run_task, run, reason)


def _cancel_run_task(run: Run, reason: str) -> None:
    if run.task is not None and not run.task.done() and run.task.cancel(reason):
        run.cancels += 1


def _on_loop(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        callback(*args)
    elif not loop.is_closed():
        loop.call_soon_threadsafe(callback, *args)


def _outcome(run: Run, exc: BaseException) -> BaseException:
    """What the caller of an aborted run sees instead of ``exc``."""
    abort = run.abort
    if abort is None or isinstance(exc, RunAborted):
        return exc
    if not isinstance(exc, asyncio.CancelledError | Exception):
        return exc  # KeyboardInterrupt, SystemExit, GeneratorExit: never ours to change
    task = asyncio.current_task()
    if task is not None:
        if task is run.task:
            for _ in range(run.cancels):
                task.uncancel()
            run.cancels = 0
        if task.cancelling():
            return exc  # someone else cancelled too: theirs wins
    return abort


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _nested(loop: asyncio.AbstractEventLoop | None) -> bool:
    outer = _current.get()
    return loop is None or (outer is not None and outer.loop is loop)


def guard_runs() -> None:
    """Give every agent run the watchdog's abort boundary (idempotent). Wraps
    ``AgentRunner.run`` (``Runner.run`` and ``Runner.run_sync`` go through it),
    ``AgentRunner.run_streamed`` and ``RunResultStreaming.stream_events``."""
    global _guarded
    if _guarded:
        return
    _guarded = True
    try:
        from agents.result import RunResultStreaming
        from agents.run import AgentRunner
    except ImportError:
        # An SDK without these classes: runs keep the SDK's own outcome (a cancel may
        # then surface as CancelledError); constructing a processor must never fail.
        return

    run_original = AgentRunner.run
    streamed_original = AgentRunner.run_streamed
    events_original = RunResultStreaming.stream_events

    @functools.wraps(run_original)
    async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        loop = _running_loop()
        if _nested(loop):
            return await run_original(self, *args, **kwargs)
        assert loop is not None
        this = Run(asyncio.current_task(), loop)
        token = _current.set(this)
        try:
            return await run_original(self, *args, **kwargs)
        except BaseException as exc:
            outcome = _outcome(this, exc)
            if outcome is exc:
                raise
            raise outcome from exc
        finally:
            _current.reset(token)

    @functools.wraps(streamed_original)
    def run_streamed(self: Any, *args: Any, **kwargs: Any) -> Any:
        loop = _running_loop()
        if _nested(loop):
            return streamed_original(self, *args, **kwargs)
        assert loop is not None
        this = Run(None, loop)
        token = _current.set(this)  # the SDK's run task is created in here: it inherits
        try:
            result = streamed_original(self, *args, **kwargs)
        finally:
            _current.reset(token)
        with contextlib.suppress(TypeError, AttributeError):
            this.stream = weakref.ref(result)
            setattr(result, _RUN_ATTRIBUTE, this)
        return result

    @functools.wraps(events_original)
    def stream_events(self: Any) -> AsyncIterator[Any]:
        return _guarded_events(self, events_original(self))

    run._agents_watchdog = True  # type: ignore[attr-defined]
    AgentRunner.run = run  # type: ignore[method-assign]
    AgentRunner.run_streamed = run_streamed  # type: ignore[method-assign]
    RunResultStreaming.stream_events = stream_events  # type: ignore[method-assign]


async def _guarded_events(result: Any, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The SDK's event stream, ending in :class:`RunAborted` when the watchdog ended
    the run (the SDK would end it as if it had completed)."""
    try:
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for event in events:
                yield event
    except BaseException as exc:
        run = _run_of_stream(result)
        outcome = exc if run is None else _outcome(run, exc)
        if outcome is exc:
            raise
        raise outcome from exc
    run = _run_of_stream(result)
    if run is not None and run.abort is not None:
        raise run.abort
