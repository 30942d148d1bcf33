"""Open spans per process, and the deadline of each, kept in one heap.

Why one module (over 400 lines): it is one class whose invariants hold only together.
Applying a batch, a resync, the deadline heap and flagging each keep the same counts
(open spans, open children, hung spans per kind) and the rule that a span has at most
one live heap entry; split across files, each part could break what another relies on.
The records it keeps are in ``records.py``, the events it tells in ``listener.py``.

The registry is single-threaded: the sidecar's event loop is its only caller.

Cost per event is O(log n) plus O(depth) for the walk up to the span's ancestors.
Nothing here walks all spans on a timer: the detector asks :meth:`Registry.next_deadline`
and sleeps until then. Each span has at most one live heap entry; a container whose
subtree stays active is re-examined when its entry comes due and pushed back, rather
than re-pushed on every event. Entries left by spans that ended are skipped when
popped, and the heap is rebuilt when they outnumber live entries.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from watchdog.protocol import Batch, SpanEnd, SpanStart
from watchdog.sidecar.config import CONTAINER_KINDS, Resolved, Thresholds
from watchdog.sidecar.learning import DurationLearner
from watchdog.sidecar.listener import Fanout, RegistryListener
from watchdog.sidecar.records import (
    CLIENT_TIMEOUT_FIX,
    INF,
    MAX_DEPTH,
    OpenSpan,
    ProcessRecord,
    SpanState,
    client_timeout_warning,
    unknown_end,
)

# The records and the listener are re-exported: the rest of the sidecar imports them
# from here, as the registry's vocabulary.
__all__ = [
    "CLIENT_TIMEOUT_FIX",
    "Fanout",
    "OpenSpan",
    "ProcessRecord",
    "Registry",
    "RegistryListener",
    "SpanState",
    "client_timeout_warning",
    "unknown_end",
]

_RESOLVE_CACHE_SIZE: Final = 4096
_STRING_CACHE_SIZE: Final = 8192


def _always_alive(process: ProcessRecord) -> bool:
    return True


class Registry:
    """Open spans of every process, with deadline scheduling. Not thread-safe."""

    def __init__(
        self,
        thresholds: Thresholds,
        listener: RegistryListener | None = None,
        clock: Callable[[], float] | None = None,
        learner: DurationLearner | None = None,
        max_open_spans: int = 100_000,
        refused: Counter[str] | None = None,
        liveness: Callable[[ProcessRecord], bool | None] | None = None,
        service_label: Callable[[str], str] | None = None,
    ) -> None:
        self.thresholds = thresholds
        # Whether a process is alive right now: True or False when that can be known
        # (a verified pid on this host), None when it cannot. Asked before any span of
        # it is flagged; without it every process counts as alive.
        self.liveness = liveness or _always_alive
        # Per process; starts past it are refused and counted in ``refused`` by reason.
        self.max_open_spans = max_open_spans
        self.refused: Counter[str] = Counter() if refused is None else refused
        self.learner = learner
        self.listener = listener or RegistryListener()
        self.clock = clock or time.monotonic
        self.processes: dict[str, ProcessRecord] = {}
        # Short spans the apps summarised instead of sending, by service (a counter),
        # keyed by the service's metric label value: apps choose services, without bound.
        self.summarised: Counter[str] = Counter()
        # Failures the apps' sender threads recovered from, by service (a counter).
        self.sender_errors: Counter[str] = Counter()
        self.service_label: Callable[[str], str] = service_label or str
        self.open_count = 0
        # (deadline, span): no tie-breaking counter, spans due together compare equal.
        self._heap: list[tuple[float, OpenSpan]] = []
        self._resolved: dict[tuple[str, str], Resolved] = {}
        # Spans started by the batch being applied, scheduled once it is in.
        self._started: list[OpenSpan] = []
        # One copy of each kind and name in use (bounded: names come from apps).
        self._strings: dict[str, str] = {}

    def __del__(self) -> None:
        # Each process and its spans hold each other, a cycle the garbage collector
        # cannot see through spans (see OpenSpan): break it when the registry goes.
        for process in getattr(self, "processes", {}).values():
            process.spans, process.spans_by_kind, process.orphans = {}, {}, []

    # -- ingest -----------------------------------------------------------------------

    def apply(self, batch: Batch, now: float | None = None) -> bool:
        """Apply one batch; returns True when the sidecar needs the process to resync.

        That is the case when the process is new to this sidecar (it restarted, or the
        process forgot to say hello) and the batch carries no resync.
        """
        now = self.clock() if now is None else now
        info = batch.process
        process = self.processes.get(info.instance_id)
        wants_resync = False
        if process is None:
            process = ProcessRecord(info, now)
            # Judged once, as it registers: the app reads its client's timeouts once,
            # so every batch of one instance carries the same figures.
            process.timeout_warning = client_timeout_warning(
                info.client_timeouts, self.response_threshold()
            )
            self.processes[info.instance_id] = process
            wants_resync = batch.resync is None and not batch.goodbye
            self.listener.process_joined(process, now)
        else:
            process.info = info
        if process.status == "dead":
            # Declared dead, yet it speaks: it was only wedged or unreachable. Its spans
            # were orphaned, so it must tell us again what it has open.
            process.status, process.died_at, process.orphans = "unresponsive", None, []
            wants_resync = batch.resync is None
        summarised = batch.heartbeat.summarised
        if summarised > process.summarised:
            self.summarised[self.service_label(info.service)] += summarised - process.summarised
        process.summarised = summarised
        errors = batch.heartbeat.sender_errors
        if errors > process.sender_errors:
            self.sender_errors[self.service_label(info.service)] += errors - process.sender_errors
        was_blind = process.blind
        process.observe(batch.sent_at, batch.heartbeat, now)
        if (was_blind is None) != (process.blind is None):
            if process.blind is None:
                self.listener.process_sighted(process, now)
            else:
                self.listener.process_blind(process, now)
        if process.held:
            # It spoke after their deadlines: alive, so they are judged now.
            held, process.held = process.held, {}
            for overdue in held.values():
                self._schedule(overdue, overdue.deadline_now())
        if process.status == "unresponsive":
            process.status = "live"
            self.listener.process_responsive(process, now)
        try:
            for event in batch.events:
                if type(event) is SpanStart:
                    self._start(process, event)
                else:
                    assert type(event) is SpanEnd
                    self._end(process, event, now)
            for key in batch.leaked:
                leaked = process.spans.get(key)
                if leaked is not None:
                    self._leak(leaked, now)
            for key in batch.active:
                # Short spans ran under it (summarised, not sent): that is activity.
                span = process.spans.get(key)
                if span is not None:
                    self._touch(span, now)
                    self._touch_ancestors(span, now)
            if batch.resync is not None:
                self._resync(process, batch.resync, now)
        finally:
            self._schedule_started()
        if batch.goodbye:
            process.leaving = "exited"
            self._forget(process, now)
        return wants_resync

    def _resolve(self, kind: str, name: str) -> Resolved:
        key = (kind, name)
        found = self._resolved.get(key)
        if found is None:
            if len(self._resolved) >= _RESOLVE_CACHE_SIZE:
                self._resolved.clear()
            found = self._resolved[key] = self.thresholds.resolve(kind, name)
        return found

    def response_threshold(self) -> float:
        """The configured threshold of a model call (kind ``response``, any name): how
        long a client's read timeout may be before a hung call outlasts it."""
        # Resolved directly, not through the cache, which lists the names spans used.
        return self.thresholds.resolve("response", "*").threshold

    def seen_names(self) -> list[tuple[str, str]]:
        """The kind/name pairs resolved lately (bounded), for listing thresholds."""
        return list(self._resolved)

    def is_stale(self, batch: Batch) -> bool:
        """True for a batch sent before the latest one applied from its process: a
        request that arrived late, whose sender gave up on it and has since sent its
        content again. Applying it would bring back spans that have ended since."""
        process = self.processes.get(batch.process.instance_id)
        return process is not None and batch.sent_at < process.last_sent

    def _start(self, process: ProcessRecord, event: SpanStart) -> None:
        if event.span_id in process.spans:
            return  # a duplicate start (a resent batch) changes nothing
        if len(process.spans) >= self.max_open_spans:
            self.refused["open_span_limit"] += 1
            return
        resolved = self._resolve(event.kind, event.name)
        threshold = resolved.threshold
        if resolved.auto is not None and self.learner is not None:
            threshold = self.learner.threshold(event.kind, event.name, resolved).threshold
        started = event.started + process.offset
        spans = process.spans
        # Each decoded event brings its own copies of strings and numbers that many
        # spans share; keeping one copy of each is most of what an open span weighs.
        strings = self._strings
        if len(strings) >= _STRING_CACHE_SIZE:
            strings.clear()
        kind, name = (
            strings.setdefault(event.kind, event.kind),
            strings.setdefault(event.name, event.name),
        )
        span_id, trace_id, thread_id, task_id = (
            event.span_id,
            event.trace_id,
            event.thread_id,
            event.task_id,
        )
        if kind == "trace":
            if trace_id == span_id:
                trace_id = span_id  # the same text: keep one string, not two
            parent_key = event.parent_id
        else:
            trace = spans.get(trace_id)
            if trace is not None:
                trace_id = trace.span_id
            parent_key = event.parent_id or trace_id
        parent = spans.get(parent_key) if parent_key else None
        if parent is not None:
            parent_key = parent.span_id
            if parent.thread_id == thread_id:
                thread_id = parent.thread_id
            if parent.task_id == task_id:
                task_id = parent.task_id
        span = OpenSpan(
            process,
            span_id,
            trace_id,
            kind,
            name,
            parent_key,
            kind in CONTAINER_KINDS,
            started,
            threshold,
            resolved,
            thread_id,
            task_id,
            started,
        )
        spans[span_id] = span
        by_kind = process.spans_by_kind.get(kind)
        if by_kind is None:
            by_kind = process.spans_by_kind[kind] = {}
        by_kind[span_id] = span
        self.open_count += 1
        if parent is not None:
            parent.open_children += 1
        self._touch_ancestors(span, started)
        self._started.append(span)

    def _leak(self, span: OpenSpan, now: float) -> None:
        """The span can never end (its owner finished without ending it): out of the open
        set, counted and noted, never flagged."""
        self._remove(span, now)
        span.state = "leaked"
        span.process.leaked += 1
        self.listener.span_leaked(span, now)
        self.listener.span_ended(span, None, now)

    def _schedule_started(self) -> None:
        """Give the spans started by this batch their deadlines, now that it is applied.

        Nothing can be flagged in between (the detector runs on the same loop), and by
        now most short spans have ended and most containers have open children (no
        deadline while so): neither costs a heap entry, which is the bulk of the heap's
        work and memory."""
        started, self._started = self._started, []
        for span in started:
            if span.state == "open" and span.process.spans.get(span.span_id) is span:
                self._schedule(span, span.deadline_now())

    def _end(self, process: ProcessRecord, event: SpanEnd, now: float) -> None:
        span = process.spans.get(event.span_id)
        if span is None:
            return  # an end for a span never seen (or already resynced away)
        ended = event.ended + process.offset
        self._remove(span, ended)
        duration = max(0.0, ended - span.started)
        # A span flagged as hung does not teach: repeated hangs must not talk the
        # learned threshold up to their own length.
        if span.learns and span.flagged_at is None and self.learner is not None:
            self.learner.observe(span.kind, span.name, duration)
        self.listener.span_ended(span, duration, now)

    def _remove(self, span: OpenSpan, at: float) -> None:
        process = span.process
        del process.spans[span.span_id]
        by_kind = process.spans_by_kind[span.kind]
        del by_kind[span.span_id]
        if not by_kind:
            del process.spans_by_kind[span.kind]
        self.open_count -= 1
        span.deadline = None  # its heap entry, if any, is now stale
        if process.held and process.held.get(span.span_id) is span:
            del process.held[span.span_id]
        if span.state == "hung":
            process.hung[span.kind] -= 1
        parent = process.spans.get(span.parent_key) if span.parent_key else None
        if parent is not None and parent.open_children > 0:
            parent.open_children -= 1
            if not parent.open_children:
                parent.children_ended = at
        self._touch_ancestors(span, at)

    def _touch_ancestors(self, span: OpenSpan, at: float) -> None:
        """Record activity at ``at`` on every ancestor of ``span``."""
        spans = span.process.spans
        key = span.parent_key
        for _ in range(MAX_DEPTH):
            if key is None:
                return
            ancestor = spans.get(key)
            if ancestor is None:
                return
            if (
                ancestor.open_children
                and ancestor.state == "open"
                and (not ancestor.container or ancestor.resolved.max_duration is None)
            ):
                # Waiting on open children: not due before they are, so only its
                # activity changes (the usual case, kept cheap: it runs per event).
                ancestor.last_activity = max(ancestor.last_activity, at)
            else:
                self._touch(ancestor, at)
            key = ancestor.parent_key

    def _touch(self, span: OpenSpan, at: float) -> None:
        span.last_activity = max(span.last_activity, at)
        if span.state == "hung" and span.reason == "idle too long":
            self._unflag(span)
        self._schedule(span, span.deadline_now())

    def _resync(self, process: ProcessRecord, starts: Sequence[SpanStart], now: float) -> None:
        """Make the process's open spans exactly ``starts``."""
        wanted = {start.span_id: start for start in starts}
        for span in [s for s in process.spans.values() if s.span_id not in wanted]:
            # It ended while we could not hear about it: its end time is unknown.
            self._remove(span, now)
            self.listener.span_ended(span, None, now)
        for start in sorted(starts, key=lambda s: s.started):
            self._start(process, start)
        # Spans that arrive by resync may be older than those already known; restore
        # start order (the oldest-span metric reads the first entry) and recount
        # children, which may have arrived before their parents.
        for kind, by_kind in process.spans_by_kind.items():
            process.spans_by_kind[kind] = dict(
                sorted(by_kind.items(), key=lambda item: item[1].started)
            )
        for span in process.spans.values():
            span.open_children = 0
        for span in process.spans.values():
            parent = process.spans.get(span.parent_key) if span.parent_key else None
            if parent is not None:
                parent.open_children += 1
        for span in process.spans.values():
            if span.container and span.state == "open":
                self._schedule(span, span.deadline_now())

    def mark_unresponsive(self, process: ProcessRecord, now: float) -> None:
        """The process stopped reporting; its spans stay watched."""
        if process.status == "live":
            process.status = "unresponsive"
            self.listener.process_unresponsive(process, now)

    def mark_dead(self, process: ProcessRecord, now: float) -> None:
        """The process is gone: its open spans become orphans (no longer open, never to
        end) and leave the deadline heap; the process record stays until
        :meth:`forget` (retention), so operators can see what it left behind."""
        if process.status == "dead":
            return
        process.status = "dead"
        process.died_at = now
        process.held = {}
        orphans = list(process.spans.values())
        for span in orphans:
            self._remove(span, now)
            span.state = "orphaned"
            span.deadline = None
            span.cause = (
                f"its process (pid {process.info.pid}) died with the span open: it was "
                "killed or crashed; look at the process's exit (OOM killer, a signal, "
                "a deploy) rather than at this span"
            )
            self.listener.span_orphaned(span, now)
        process.orphans = orphans
        self.listener.process_died(process, orphans, now)

    def forget(self, instance_id: str, now: float | None = None) -> None:
        """Remove a process and its spans (it exited); spans end with unknown times."""
        process = self.processes.get(instance_id)
        if process is not None:
            self._forget(process, self.clock() if now is None else now)

    def _forget(self, process: ProcessRecord, now: float) -> None:
        process.held = {}
        for span in list(process.spans.values()):
            self._remove(span, now)
            self.listener.span_ended(span, None, now)
        del self.processes[process.info.instance_id]
        self.listener.process_left(process, now)
        # Orphans hold their process and it holds them: a cycle the garbage collector
        # cannot see through spans (see OpenSpan), so it is broken here.
        process.orphans = []

    # -- deadlines --------------------------------------------------------------------

    def _schedule(self, span: OpenSpan, deadline: float) -> None:
        if deadline == INF or span.state != "open":
            return
        if span.deadline is not None and span.deadline <= deadline:
            return  # the live entry comes due first and will re-examine the span
        span.deadline = deadline
        heapq.heappush(self._heap, (deadline, span))
        if len(self._heap) > 4 * self.open_count + 1024:
            self._compact()

    def _compact(self) -> None:
        """Drop entries of spans that ended or were rescheduled: O(n), amortised."""
        self._heap = [entry for entry in self._heap if entry[1].deadline == entry[0]]
        heapq.heapify(self._heap)

    def next_deadline(self) -> float | None:
        """The earliest time at which some span may become hung, or None."""
        heap = self._heap
        while heap and heap[0][1].deadline != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire(self, now: float | None = None) -> list[OpenSpan]:
        """Flag every span whose deadline has passed; returns them, oldest deadline first."""
        now = self.clock() if now is None else now
        flagged = []
        heap = self._heap
        # Per process, once per pass: whether it is alive (see ``liveness``).
        alive: dict[str, bool | None] = {}
        while heap and heap[0][0] <= now:
            deadline, span = heapq.heappop(heap)
            if span.deadline != deadline:
                continue  # stale: the span ended or has an earlier entry
            span.deadline = None
            if span.state != "open":
                continue
            due = span.deadline_now()
            if due > now:
                self._schedule(span, due)
                continue
            if not self._proven_alive(span, due, now, alive):
                continue
            self._flag(span, now)
            flagged.append(span)
        return flagged

    def _proven_alive(
        self, span: OpenSpan, due: float, now: float, alive: dict[str, bool | None]
    ) -> bool:
        """Whether the span's process is known to be alive after the span became due.

        A span of a process that is gone is orphaned, never hung: a page for a hang
        that never was is the one thing a watchdog must not send. Where the pid can be
        checked, it is (a dead process is declared dead here and then). Where it
        cannot, a batch that arrived after the deadline is the proof; until one does,
        the span is held and judged again when the process next speaks."""
        process = span.process
        key = process.info.instance_id
        if key not in alive:
            alive[key] = self.liveness(process)
            if alive[key] is False:
                self.mark_dead(process, now)
        answer = alive[key]
        if answer is True:
            return True
        if answer is None and process.last_seen >= due:
            return True
        if answer is None and process.status != "dead":
            process.held[span.span_id] = span
        return False

    def _flag(self, span: OpenSpan, now: float) -> None:
        span.state = "hung"
        span.flagged_at = now
        if not span.container:
            span.reason = "open too long"
        elif span.max_duration is not None and now >= span.started + span.max_duration:
            span.reason = "over max duration"
        else:
            span.reason = "idle too long"
        hung = span.process.hung
        hung[span.kind] = hung.get(span.kind, 0) + 1
        self.listener.span_hung(span, now)

    def _unflag(self, span: OpenSpan) -> None:
        span.state = "open"
        span.reason = None
        span.flagged_at = None
        span.process.hung[span.kind] -= 1
        self.listener.span_resumed(span, self.clock())

    # -- reading ----------------------------------------------------------------------

    def spans(self) -> Iterator[OpenSpan]:
        """Every open span (hung ones included), then the orphans of dead processes."""
        for process in self.processes.values():
            yield from process.spans.values()
            yield from process.orphans
