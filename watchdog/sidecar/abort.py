"""The abort ladder: stop a stuck run the way an operator would, step by step.

``timeout`` asks the app to make the innermost await of the hung span's work raise
``TimeoutError``, as a read timeout there would have: the HTTP client and the SDK see an
ordinary timeout and retry, a tool fails and its agent is told; if the span is still
open after the grace, the ladder goes on as ``cancel``.

``cancel`` asks the app to end the run the hung span belongs to (the app cancels the
span's task and the run's, and the run's caller gets ``RunAborted``); if the span has
not ended ``grace_seconds`` later, every run with a span open in its trace. The first
step is taken as soon as the span is flagged — its threshold was the wait — and each
later one only while the span is still open, ``grace_seconds`` after the app was told
of the one before. Commands ride on the replies to the app's next batch (heartbeats
come every second), so the grace runs from that reply (or, for an app that does not
ask within ``grace_seconds``, from then). ``dry_run`` records every step it
would take and sends nothing.

Then, for ``terminate`` and ``kill``: SIGTERM, and (``kill``) SIGKILL, each followed by
the grace period — only to a process whose pid the sidecar verified at registration
and re-checks right before the signal (see ``identity.py``). Where that is impossible
the ladder stops after the cooperative steps and says why. Signals per service are
limited (``max_signals`` per ``window_seconds``) so that a bad rule cannot take down a
fleet. A process that exits counts as the step's success; its spans leave the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from watchdog.protocol import CommandResult
from watchdog.sidecar.commands import CommandQueue
from watchdog.sidecar.config import AbortConfig
from watchdog.sidecar.identity import is_alive, send_signal
from watchdog.sidecar.logs import log_event
from watchdog.sidecar.registry import OpenSpan, Registry, RegistryListener

__all__ = ["AbortLadder", "steps_for"]

_STEPS: Final = {
    "timeout": ("timeout", "cancel", "cancel_trace"),
    "cancel": ("cancel", "cancel_trace"),
    "terminate": ("cancel", "cancel_trace", "terminate"),
    "kill": ("cancel", "cancel_trace", "terminate", "kill"),
}

# (span, step, outcome, detail): the incident timeline and the alert hear of each step.
StepReport = Callable[[OpenSpan, str, str, str], None]


def steps_for(action: str) -> tuple[str, ...]:
    """The ladder for a rule's action (``alert`` has none)."""
    return _STEPS.get(action, ())


@dataclass
class _Ladder:
    span: OpenSpan
    action: str
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class AbortLadder(RegistryListener):
    """Runs one ladder per hung span whose rule (or an operator) asks for an abort."""

    def __init__(
        self,
        config: AbortConfig,
        outcomes: Counter[tuple[str, str]],
        report: StepReport,
        registry: Registry | None = None,
        commands: CommandQueue | None = None,
    ) -> None:
        self.config = config
        self.commands = commands or CommandQueue()
        self.registry = registry
        self._signals: dict[str, deque[float]] = {}
        self.outcomes = outcomes
        self.report = report
        self.ladders: dict[str, _Ladder] = {}

    # -- registry events --------------------------------------------------------------

    def span_hung(self, span: OpenSpan, now: float) -> None:
        """Start the rule's ladder for a newly hung span."""
        if steps_for(span.action):
            self.start(span, span.action, by="rule")

    def span_ended(self, span: OpenSpan, duration: float | None, now: float) -> None:
        """The span ended: its ladder stops, and the last step counts as a success."""
        ladder = self.ladders.get(span.key)
        if ladder is not None:
            ladder.ended.set()

    # -- control ----------------------------------------------------------------------

    def start(self, span: OpenSpan, action: str, by: str) -> tuple[str, ...]:
        """Start (or keep) the ladder for ``span``; returns its steps."""
        steps = steps_for(action)
        if span.key in self.ladders or not steps:
            return steps
        ladder = _Ladder(span, action)
        self.ladders[span.key] = ladder
        ladder.task = asyncio.get_running_loop().create_task(
            self._climb(ladder, steps, by), name=f"abort-{span.span_id}"
        )
        return steps

    def _result(self, key: str, step: str, instance_id: str, result: CommandResult) -> None:
        """The app's answer to one of this ladder's commands."""
        outcome = "delivered" if result.ok else "refused"
        log_event(
            logging.WARNING if not result.ok else logging.INFO,
            "abort_step_result",
            step=step,
            outcome=outcome,
            detail=result.detail,
            instance_id=instance_id,
        )
        ladder = self.ladders.get(key)
        if ladder is not None:
            self.report(ladder.span, step, outcome, result.detail)

    async def stop(self) -> None:
        """Cancel every running ladder (sidecar shutdown)."""
        tasks = [ladder.task for ladder in self.ladders.values() if ladder.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _climb(self, ladder: _Ladder, steps: tuple[str, ...], by: str) -> None:
        span = ladder.span
        try:
            for step in steps:
                if ladder.ended.is_set():
                    return
                if step in ("terminate", "kill"):
                    if not await self._signal(ladder, step, by):
                        return
                    continue
                if self.config.dry_run:
                    self._step(span, step, "dry_run", f"would send {step} (requested by {by})")
                else:
                    told = self._send(span, step, by)
                    # The grace is the app's time to act, so it runs from when the app
                    # is told (the reply to its next batch, within a heartbeat), or from
                    # one grace on if it does not ask for its commands by then.
                    await _first(self.config.grace_seconds, told, ladder.ended)
                try:
                    await asyncio.wait_for(ladder.ended.wait(), self.config.grace_seconds)
                except TimeoutError:
                    self._step(
                        span,
                        step,
                        "timed_out",
                        f"span still open {self.config.grace_seconds:g} s after {step}",
                    )
                    continue
                self._step(span, step, "succeeded", "the span ended")
                return
        finally:
            self.ladders.pop(span.key, None)

    async def _signal(self, ladder: _Ladder, step: str, by: str) -> bool:
        """One signal step; True to go on climbing, False when the ladder ends here."""
        span = ladder.span
        process = span.process
        signum = signal.SIGTERM if step == "terminate" else signal.SIGKILL
        if not process.verified:
            self._step(
                span,
                step,
                "refused",
                f"process identity not verified ({process.verify_note}); "
                "stopping at cooperative cancel",
            )
            return False
        if not self._may_signal(process.service):
            self._step(
                span,
                step,
                "rate_limited",
                f"{self.config.max_signals} signals to service {process.service!r} "
                f"within {self.config.window_seconds:g} s already",
            )
            return False
        if self.config.dry_run:
            self._step(
                span,
                step,
                "dry_run",
                f"would send {signum.name} to pid {process.info.pid} (requested by {by})",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ladder.ended.wait(), self.config.grace_seconds)
            return not ladder.ended.is_set()
        sent, why = await asyncio.to_thread(send_signal, process.info, signum)
        self._step(span, step, "sent" if sent else "failed", f"{why} (requested by {by})")
        if not sent:
            return False
        deadline = time.monotonic() + self.config.grace_seconds
        while time.monotonic() < deadline and not ladder.ended.is_set():
            if not await asyncio.to_thread(is_alive, process.info):
                self._step(span, step, "succeeded", f"pid {process.info.pid} exited")
                if self.registry is not None:
                    self.registry.forget(process.info.instance_id)
                return False
            # Liveness of a process that is not our child can only be polled.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ladder.ended.wait(), 0.1)
        if ladder.ended.is_set():
            self._step(span, step, "succeeded", "the span ended")
            return False
        self._step(
            span,
            step,
            "timed_out",
            f"pid {process.info.pid} still running {self.config.grace_seconds:g} s "
            f"after {signum.name}",
        )
        return True

    def _may_signal(self, service: str) -> bool:
        now = time.monotonic()
        sent = self._signals.setdefault(service, deque())
        while sent and now - sent[0] > self.config.window_seconds:
            sent.popleft()
        if len(sent) >= self.config.max_signals:
            return False
        sent.append(now)
        return True

    def _send(self, span: OpenSpan, step: str, by: str) -> asyncio.Event:
        """Queue the step's command; the Event is set when the app takes it."""
        told = asyncio.Event()
        target = span.trace_id if step == "cancel_trace" else span.span_id
        action = step
        reason = (
            f"agents-watchdog: {span.kind} span {span.span_id} hung "
            f"({span.reason}); {step} requested by {by}"
        )
        key, instance = span.key, span.process.info.instance_id
        self.commands.issue(
            instance,
            action,
            target,
            reason,
            lambda r: self._result(key, step, instance, r),
            on_taken=told.set,
        )
        self._step(span, step, "requested", f"requested by {by}")
        return told

    def _step(self, span: OpenSpan, step: str, outcome: str, detail: str) -> None:
        self.outcomes[(step, outcome)] += 1
        log_event(
            logging.WARNING,
            "abort_step",
            step=step,
            outcome=outcome,
            detail=detail,
            service=span.process.service,
            pid=span.process.info.pid,
            span_id=span.span_id,
            trace_id=span.trace_id,
        )
        self.report(span, step, outcome, detail)


async def _first(seconds: float, *events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set, or ``seconds``."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
