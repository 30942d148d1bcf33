"""Blindness: the runs the SDK's tracing keeps from the processor, and what to say.

With tracing off — ``OPENAI_AGENTS_DISABLE_TRACING``, ``set_tracing_disabled(True)``,
``RunConfig(tracing_disabled=True)`` — or with the processor removed from the SDK's
list, the SDK calls no processor at all: a hang would go unseen with nothing to say
so. This module finds those runs (once per run, never per span) and words the reason
and the fix; the processor reports it as the process's ``blind`` state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from time import monotonic
from typing import Any, Final

from agents.tracing import get_current_trace, get_trace_provider
from agents.tracing.traces import NoOpTrace

__all__ = ["globally_disabled", "reason", "watch_for_blindness"]


# What to say, per setting that hides runs from the processor: the setting, and the fix.
_FIXES: Final = {
    "env": "unset it; to watch without exporting traces to OpenAI, use "
    "install(replace_default=True) instead",
    "manual": "remove that call; to watch without exporting traces to OpenAI, use "
    "install(replace_default=True) instead",
    "run": "drop tracing_disabled from the RunConfig; to keep traces away from OpenAI while "
    "watching, use install(replace_default=True)",
    "removed": "call install() after set_trace_processors(), or include the installed "
    "processor in the list",
}


def globally_disabled(provider: Any) -> str | None:
    """Which process-wide setting turns the SDK's tracing off, or None."""
    if provider is None or not getattr(provider, "_disabled", False):
        return None
    if getattr(provider, "_manual_disabled", None):
        return "manual"
    return "env"


def reason(kind: str) -> str:
    setting = {
        "env": "OPENAI_AGENTS_DISABLE_TRACING="
        + os.environ.get("OPENAI_AGENTS_DISABLE_TRACING", "1"),
        "manual": "agents.set_tracing_disabled(True)",
        "run": "RunConfig(tracing_disabled=True) (or trace(..., disabled=True))",
        "removed": "the WatchdogProcessor is no longer among the SDK's trace processors",
    }[kind]
    return f"tracing is off: {setting}; fix: {_FIXES[kind]}"


class _UntracedRun(NoOpTrace):
    """The SDK's disabled trace, telling the processor while a run it cannot see is in
    progress. Behaves exactly as ``NoOpTrace`` otherwise."""

    def __init__(self, untraced: dict[Any, float]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._untraced = untraced

    def start(self, mark_as_current: bool = False) -> None:
        """Start as ``NoOpTrace`` does; an untraced run is now in progress."""
        super().start(mark_as_current)
        self._untraced[self] = monotonic()

    def finish(self, reset_current: bool = False) -> None:
        """Finish as ``NoOpTrace`` does; the untraced run is over."""
        self._untraced.pop(self, None)
        super().finish(reset_current)


def watch_for_blindness(processor: Any, installed: Callable[[], Any]) -> None:
    """Let the installed processor learn of runs the SDK's tracing keeps from it.

    With tracing off — ``OPENAI_AGENTS_DISABLE_TRACING``, ``set_tracing_disabled(True)``
    or ``RunConfig(tracing_disabled=True)`` — the SDK calls no processor at all, so a
    hang would go unseen with nothing to say so. The one place all three pass through
    is the trace provider's ``create_trace``: wrapped here once (on the instance, so
    the provider's class and every ``isinstance`` check stay as they were), it tells
    the installed processor of each run it will not see. Once per run, never per span.
    """
    try:
        provider = get_trace_provider()
        processor._provider = provider
        if not getattr(provider.create_trace, "_agents_watchdog", False):
            wrapped = _watched_create_trace(provider, provider.create_trace, installed)
            provider.create_trace = wrapped  # type: ignore[method-assign]
    except Exception:
        return  # a provider we cannot wrap: watching goes on as before
    kind = globally_disabled(provider)
    if kind is not None:
        # Said now, at install: the first run may be hours away.
        _warn(reason(kind))


def _watched_create_trace(provider: Any, create_trace: Any, installed: Callable[[], Any]) -> Any:
    def watched_create_trace(*args: Any, **kwargs: Any) -> Any:
        trace = create_trace(*args, **kwargs)
        processor = installed()
        if processor is None:
            return trace
        try:
            if isinstance(trace, NoOpTrace):
                # Inside an untraced run already (the SDK masks a streamed run twice,
                # the second living as long as the stream): the same run, counted once.
                if not isinstance(get_current_trace(), _UntracedRun):
                    processor._untraced_run(globally_disabled(provider) or "run")
                if type(trace) is NoOpTrace:
                    return _UntracedRun(processor._untraced)
            else:
                processors = _processors_of(provider)
                if processors is not None and processor not in processors:
                    processor._untraced_run("removed")
        except Exception:
            pass  # the app must never see a watchdog failure
        return trace

    watched_create_trace._agents_watchdog = True  # type: ignore[attr-defined]
    return watched_create_trace


def _processors_of(provider: Any) -> tuple[Any, ...] | None:
    """The provider's processors, where it keeps them as the SDK's default one does."""
    multi = getattr(provider, "_multi_processor", None)
    processors = getattr(multi, "_processors", None)
    return processors if isinstance(processors, tuple) else None


def _warn(text: str) -> None:
    from watchdog._sender import warn_blind

    warn_blind(text)
