"""Alert lifecycle: one alert per hung span, fired once, resolved once.

``AlertBook`` listens to the registry. A span flagged as hung raises ``AgentSpanHung``
(deduplicated by process and span); the span ending, becoming active again, or its
process leaving resolves it. Every change goes to the dispatcher, which hands a copy to
each sink whose filter accepts it. What an alert holds and the formats sinks send it in
(Alertmanager's webhook format and v2 API, Slack's blocks) are in ``payloads.py``,
re-exported here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

from watchdog.sidecar.payloads import (
    Alert,
    alertmanager_alert,
    iso,
    slack_message,
    webhook_payload,
)
from watchdog.sidecar.registry import OpenSpan, ProcessRecord, RegistryListener, unknown_end

__all__ = [
    "LOOP_BLOCKED",
    "PROCESS_BLIND",
    "PROCESS_UNRESPONSIVE",
    "SPANS_ORPHANED",
    "SPAN_HUNG",
    "Alert",
    "AlertBook",
    "alertmanager_alert",
    "iso",
    "slack_message",
    "webhook_payload",
]

SPAN_HUNG: Final = "AgentSpanHung"
PROCESS_UNRESPONSIVE: Final = "AgentProcessUnresponsive"
SPANS_ORPHANED: Final = "AgentSpansOrphaned"
LOOP_BLOCKED: Final = "AgentEventLoopBlocked"
PROCESS_BLIND: Final = "AgentProcessBlind"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class AlertBook(RegistryListener):
    """Fires and resolves alerts for hung spans; ``send`` receives every change."""

    send: Callable[[Alert], None]
    external_url: Callable[[], str]
    wall: Callable[[], float] = time.time
    continued: Callable[[str], bool] = lambda key: False
    # Seconds a hung-span alert waits for its stack before one-shot sinks (webhook,
    # Slack, log) hear of it; 0: at once. Alertmanager takes updates, so it is told now.
    stack_wait: float = 0.0
    active: dict[str, Alert] = field(default_factory=dict)
    _held: dict[str, asyncio.TimerHandle | None] = field(default_factory=dict)

    def span_hung(self, span: OpenSpan, now: float) -> None:
        """Fire ``AgentSpanHung`` for ``span`` (once)."""
        key = span.key
        if key in self.active:
            return
        info = span.process.info
        agent = span.agent() or ""
        age = now - span.started
        what = f"{span.kind} span {span.name!r}" if span.name else f"{span.kind} span"
        if agent and span.kind != "agent":
            what += f" of agent {agent!r}"
        labels = {
            "alertname": SPAN_HUNG,
            "service": info.service,
            "host": info.host,
            "kind": span.kind,
            "name": span.name,
            "agent": agent,
            "severity": span.severity,
            # Two spans stuck the same way are two alerts, not one merged by
            # Alertmanager: the span id keeps their label sets apart.
            "span_id": span.span_id,
            "pid": str(info.pid),
        }
        annotations = {
            "summary": f"{info.service}: {what} is hung (pid {info.pid})",
            "description": (
                f"The {what} in service {info.service!r} (pid {info.pid} on "
                f"{info.host}) has been {span.reason or 'open too long'}: "
                f"{_duration(age)} against a threshold of {_duration(span.threshold)}. "
                f"Trace {span.trace_id}, span {span.span_id}."
            ),
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "threshold_seconds": f"{span.threshold:g}",
            "action": span.action,
        }
        wall_now = self.wall()
        alert = Alert(
            key=key,
            labels=labels,
            annotations=annotations,
            starts_at=wall_now - (now - (span.flagged_at or now)),
            generator_url=f"{self.external_url()}/?span={span.span_id}",
            announce=not self.continued(key),
        )
        self.active[key] = alert
        if self.stack_wait > 0 and alert.announce:
            # Unannounced, only stateful sinks take it; the stack (or the timer) then
            # announces it, so the first message an operator reads says where it is stuck.
            self._held[key] = asyncio.get_running_loop().call_later(
                self.stack_wait, self._announce, key, "not captured yet; it follows if it comes"
            )
            alert = replace(alert, announce=False)
        self.send(alert)

    def _announce(self, key: str, missing_stack: str | None = None) -> None:
        """Announce a held alert to every sink (with a note if its stack is missing)."""
        timer = self._held.pop(key, None)
        if timer is not None:
            timer.cancel()
        alert = self.active.get(key)
        if alert is None:
            return
        if missing_stack is not None:
            alert = replace(alert, annotations={**alert.annotations, "stack": missing_stack})
            self.active[key] = alert
        self.send(replace(alert, announce=True))

    def annotate(self, key: str, name: str, text: str) -> None:
        """Add an annotation to a firing alert (what was done about it). Sinks that
        keep state (Alertmanager) get the update; the others see it on resolve."""
        alert = self.active.get(key)
        if alert is None:
            return
        updated = replace(alert, annotations={**alert.annotations, name: text}, announce=False)
        self.active[key] = updated
        if name == "stack" and key in self._held:
            self._announce(key)
            return
        self.send(updated)

    def span_resumed(self, span: OpenSpan, now: float) -> None:
        """A container is active again: its idle alert resolves."""
        self._resolve(span, "activity resumed below it")

    def span_orphaned(self, span: OpenSpan, now: float) -> None:
        """The span's process died: its hung alert resolves (the orphan alert takes over)."""
        self._resolve(span, "its process died")

    def loop_changed(
        self, process: ProcessRecord, thread_id: int, lag: float, stack: str | None, blocked: bool
    ) -> None:
        """Fire or resolve ``AgentEventLoopBlocked`` for one loop of a process."""
        info = process.info
        suffix = f"/{thread_id}"
        if not blocked:
            self._resolve_key(f"{LOOP_BLOCKED}/{info.instance_id}{suffix}", "the loop caught up")
            return
        self._process_alert(
            LOOP_BLOCKED,
            process,
            f"{info.service}: an event loop in pid {info.pid} is blocked",
            f"The event loop on thread {thread_id} of pid {info.pid} ({info.service!r} on "
            f"{info.host}) has not run a callback for {_duration(lag)}: sync code is "
            "blocking it (time.sleep, a blocking client, a sync ORM call in async code). "
            "Every task on that loop is stuck meanwhile.",
            suffix=suffix,
            extra={"thread_id": str(thread_id), "stack": stack or "not captured"},
        )

    def _process_alert(
        self,
        alertname: str,
        process: ProcessRecord,
        summary: str,
        description: str,
        suffix: str = "",
        extra: dict[str, str] | None = None,
    ) -> None:
        info = process.info
        key = f"{alertname}/{info.instance_id}{suffix}"
        if key in self.active:
            return
        alert = Alert(
            key=key,
            labels={
                "alertname": alertname,
                "service": info.service,
                "host": info.host,
                "pid": str(info.pid),
                "severity": "critical" if alertname == SPANS_ORPHANED else "warning",
            },
            annotations={
                "summary": summary,
                "description": description,
                "instance_id": info.instance_id,
                **(extra or {}),
            },
            starts_at=self.wall(),
            generator_url=f"{self.external_url()}/?process={info.instance_id}",
        )
        self.active[key] = alert
        self.send(alert)

    def process_unresponsive(self, process: ProcessRecord, now: float) -> None:
        """Fire ``AgentProcessUnresponsive``."""
        info = process.info
        silent = process.silent_for(now)
        self._process_alert(
            PROCESS_UNRESPONSIVE,
            process,
            f"{info.service}: pid {info.pid} on {info.host} stopped reporting",
            f"No heartbeat from pid {info.pid} of service {info.service!r} on {info.host} for "
            f"{_duration(silent)} (heartbeats every {_duration(process.heartbeat_interval)}); "
            f"it had {len(process.spans)} open spans. It may be wedged (GIL held, stopped) or "
            "unable to reach the sidecar.",
        )

    def process_responsive(self, process: ProcessRecord, now: float) -> None:
        """Heartbeats are back: resolve ``AgentProcessUnresponsive``."""
        self._resolve_key(f"{PROCESS_UNRESPONSIVE}/{process.info.instance_id}", "reporting again")

    def process_died(self, process: ProcessRecord, orphans: list[OpenSpan], now: float) -> None:
        """Resolve the unresponsive alert; fire ``AgentSpansOrphaned`` if spans were open."""
        info = process.info
        self._resolve_key(f"{PROCESS_UNRESPONSIVE}/{info.instance_id}", "the process died")
        self._resolve_key(f"{PROCESS_BLIND}/{info.instance_id}", "the process died")
        if not orphans:
            return
        kinds = ", ".join(sorted({span.kind for span in orphans}))
        self._process_alert(
            SPANS_ORPHANED,
            process,
            f"{info.service}: pid {info.pid} died with {len(orphans)} spans open",
            f"Pid {info.pid} of service {info.service!r} on {info.host} is gone (or its pid "
            f"now belongs to another process) while {len(orphans)} spans ({kinds}) were open: "
            "those runs can never finish. Traces: "
            + ", ".join(sorted({span.trace_id for span in orphans})[:5]),
        )

    def process_blind(self, process: ProcessRecord, now: float) -> None:
        """Fire ``AgentProcessBlind``: its runs cannot be watched, so silence means nothing."""
        info = process.info
        self._process_alert(
            PROCESS_BLIND,
            process,
            f"{info.service}: pid {info.pid} on {info.host} cannot be watched",
            f"Agent runs of pid {info.pid} ({info.service!r} on {info.host}) are invisible to "
            f"the watchdog: {process.blind}. A hang there would go unseen.",
            extra={"reason": process.blind or ""},
        )

    def process_sighted(self, process: ProcessRecord, now: float) -> None:
        """Its runs are visible again: resolve ``AgentProcessBlind``."""
        self._resolve_key(
            f"{PROCESS_BLIND}/{process.info.instance_id}", "its runs are traced again"
        )

    def process_left(self, process: ProcessRecord, now: float) -> None:
        """The process is forgotten: anything still firing for it resolves."""
        for alertname in (PROCESS_UNRESPONSIVE, SPANS_ORPHANED, PROCESS_BLIND):
            self._resolve_key(f"{alertname}/{process.info.instance_id}", "process forgotten")

    def span_ended(self, span: OpenSpan, duration: float | None, now: float) -> None:
        """The span ended (or left with its process): its alert resolves."""
        note = f"ended after {_duration(duration)}" if duration is not None else unknown_end(span)
        self._resolve(span, note)

    def _resolve(self, span: OpenSpan, note: str) -> None:
        self._resolve_key(span.key, note)

    def _resolve_key(self, key: str, note: str) -> None:
        if key in self._held:
            # Ended before its stack came: announce it first, so no sink hears of a
            # resolution for an alert it never saw fire.
            self._announce(key, "none: the span ended before its stack was captured")
        alert = self.active.pop(key, None)
        if alert is None:
            return
        annotations = dict(alert.annotations)
        annotations["resolution"] = note
        self.send(
            replace(
                alert,
                status="resolved",
                ends_at=self.wall(),
                annotations=annotations,
                announce=True,
            )
        )
