"""What the registry keeps: an open span (:class:`OpenSpan`) and the app process that
owns it (:class:`ProcessRecord`), with the words the sidecar says about them.

These are records, built and changed by the registry alone (``registry.py``); listeners,
the read API and the page only read them.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, Literal

import msgspec

from watchdog.protocol import ClientTimeoutsInfo, Heartbeat, LoopReport, ProcessInfo
from watchdog.sidecar.config import Action, Resolved

__all__ = [
    "CLIENT_TIMEOUT_FIX",
    "INF",
    "MAX_DEPTH",
    "HungReason",
    "OpenSpan",
    "ProcessRecord",
    "ProcessState",
    "ShownState",
    "SpanState",
    "client_timeout_warning",
    "unknown_end",
]

SpanState = Literal["open", "hung", "orphaned", "leaked"]
ProcessState = Literal["live", "unresponsive", "dead"]
# As operators see it: a live process whose runs cannot be watched is "blind".
ShownState = Literal["live", "unresponsive", "dead", "blind"]
HungReason = Literal["open too long", "idle too long", "over max duration"]
INF: Final = math.inf
# Ancestor walks stop here: real traces are a handful deep, and a hostile batch could
# otherwise make a parent cycle.
MAX_DEPTH: Final = 64
CLIENT_TIMEOUT_FIX: Final = (
    "Set a read timeout, e.g. AsyncOpenAI(timeout=httpx.Timeout(20, connect=5)) "
    "and set_default_openai_client(...)"
)


class OpenSpan(msgspec.Struct, gc=False, eq=False):
    """A span the sidecar believes is open. Times are on the sidecar's monotonic clock.

    Built by the registry only (see
    :meth:`~watchdog.sidecar.registry.Registry._start`). Instances are invisible
    to Python's cyclic garbage collector (``gc=False``): with a million spans open, a
    full collection that walked them all would stop the sidecar for half a second and
    more, detection included. The one cycle a span is part of (its process holds it,
    it holds its process) is broken by the registry whenever a span or a process goes,
    so reference counting alone frees them. Settings shared by every span of a
    kind and name (action, severity, max duration) are read from ``resolved``.
    """

    process: ProcessRecord
    span_id: str
    trace_id: str
    kind: str
    name: str
    parent_key: str | None
    container: bool
    started: float
    threshold: float
    resolved: Resolved
    thread_id: int
    task_id: int | None
    last_activity: float
    open_children: int = 0
    # When its last open child ended (0: never waited on one). See deadline_now.
    children_ended: float = 0.0
    state: SpanState = "open"
    reason: HungReason | None = None
    flagged_at: float | None = None
    # The deadline of this span's one live heap entry; None when it has none.
    deadline: float | None = None
    # Where it is stuck, once captured (see stacks.py): the text and where from.
    stack: str | None = None
    stack_source: str | None = None
    # Why it is stuck and the fix, in plain words (from the app, with its stacks).
    cause: str | None = None

    @property
    def action(self) -> Action:
        """What to do when it hangs (the matching rule's ``action``)."""
        return self.resolved.action

    @property
    def severity(self) -> str:
        """The alert severity (the matching rule's ``severity``)."""
        return self.resolved.severity

    @property
    def max_duration(self) -> float | None:
        """For a container, the whole-span deadline in seconds (None: none)."""
        return self.resolved.max_duration

    @property
    def learns(self) -> bool:
        """Under a ``threshold = "auto"`` rule its duration teaches the learner."""
        return self.resolved.auto is not None

    def __lt__(self, other: OpenSpan) -> bool:
        # Heap entries are (deadline, span): spans due at the same time are equals.
        return False

    @property
    def key(self) -> str:
        """Unique across processes and restarts: the process instance and the span id."""
        return f"{self.process.info.instance_id}/{self.span_id}"

    def deadline_now(self) -> float:
        """When this span becomes hung if nothing else happens (``inf``: not while so)."""
        # While it has open children the span waits on them, and they are judged by
        # their own thresholds: flagging every ancestor too would report one stuck
        # call several times (a function tool that runs a sub-agent, say).
        if not self.container:
            if self.open_children:
                return INF
            due = self.started + self.threshold
            if self.children_ended:
                # Its children just ended: its own end comes right after theirs, maybe
                # in the app's next batch. Judged once that batch had time to come.
                due = max(due, self.children_ended + self.process.heartbeat_interval)
            return due
        idle = INF if self.open_children else self.last_activity + self.threshold
        cap = INF if self.max_duration is None else self.started + self.max_duration
        return min(idle, cap)

    def agent(self) -> str | None:
        """The name of the nearest enclosing ``agent`` span (this one, if it is one)."""
        spans = self.process.spans
        node: OpenSpan | None = self
        for _ in range(MAX_DEPTH):
            if node is None:
                return None
            if node.kind == "agent":
                return node.name
            node = spans.get(node.parent_key) if node.parent_key else None
        return None


class ProcessRecord:
    """One app process that talks to this sidecar, and the spans it has open."""

    __slots__ = (
        "dropped_events",
        "heartbeat_interval",
        "held",
        "blind",
        "hung",
        "info",
        "died_at",
        "leaked",
        "leaving",
        "last_seen",
        "last_sent",
        "loops",
        "offset",
        "orphans",
        "status",
        "sender_errors",
        "summarised",
        "open_reported",
        "timeout_warned",
        "timeout_warning",
        "spans",
        "spans_by_kind",
        "verified",
        "verify_attempts",
        "verify_note",
        "wall_minus_mono",
        "_offset_samples",
    )

    def __init__(self, info: ProcessInfo, now: float) -> None:
        self.info = info
        self.spans: dict[str, OpenSpan] = {}
        # Per kind, in order of start: the first entry is the oldest open span.
        self.spans_by_kind: dict[str, dict[str, OpenSpan]] = {}
        self.hung: dict[str, int] = {}
        # Why its agent runs cannot be watched (tracing off ...), as it last reported.
        self.blind: str | None = None
        self.sender_errors = 0
        # Spans it reported as leaked (their owner finished without ending them).
        self.leaked = 0
        # Spans past their deadline, not flagged because nothing proves the process
        # was alive after it (see Registry.expire): judged again when it speaks.
        self.held: dict[str, OpenSpan] = {}
        self.last_seen = now
        # The app's clock reading on its latest batch applied: an earlier one is stale.
        self.last_sent = -1.0
        self.offset = 0.0
        self._offset_samples: deque[float] = deque(maxlen=8)
        self.heartbeat_interval = 1.0
        self.wall_minus_mono = 0.0
        self.open_reported = 0
        self.dropped_events = 0
        self.summarised = 0  # the process's running count, as last reported
        # Whether the claimed pid was proven to own the connection (see identity.py);
        # None until checked. Only verified processes are ever signalled.
        self.status: ProcessState = "live"
        self.loops: list[LoopReport] = []
        self.died_at: float | None = None
        # Set as the process is forgotten with spans still open: why they left.
        self.leaving: Literal["exited"] | None = None
        # Spans left open by a process that died: no longer watched, kept for a while.
        self.orphans: list[OpenSpan] = []
        self.verified: bool | None = None
        self.verify_note = "not checked yet"
        self.verify_attempts = 0
        # Why its default OpenAI client lets a model call outlast the response
        # threshold, with the fix (see client_timeout_warning); logged once.
        self.timeout_warning: str | None = None
        self.timeout_warned = False

    @property
    def service(self) -> str:
        """The service name the app declared."""
        return self.info.service

    def observe(self, sent_at: float, heartbeat: Heartbeat, now: float) -> None:
        """Take a heartbeat: liveness, and one sample of the app-to-sidecar clock offset.

        The sample is ``arrival - departure``: the true offset plus the transit time.
        The smallest of recent samples is the best estimate (transit only adds), and a
        window of eight lets the estimate follow a machine that was suspended.
        """
        self._offset_samples.append(now - sent_at)
        self.offset = min(self._offset_samples)
        self.last_seen = now
        self.last_sent = sent_at
        self.heartbeat_interval = heartbeat.interval
        self.wall_minus_mono = heartbeat.wall_minus_mono
        self.open_reported = heartbeat.open_spans
        self.dropped_events = heartbeat.dropped_events
        self.loops = heartbeat.loops
        self.blind = heartbeat.blind
        self.sender_errors = heartbeat.sender_errors

    @property
    def state(self) -> ShownState:
        """Its liveness, or ``blind`` while it is live but its runs cannot be watched."""
        if self.status == "live" and self.blind is not None:
            return "blind"
        return self.status

    def wall_time(self, local: float) -> float:
        """Convert a sidecar-monotonic time into the app's wall-clock seconds."""
        return local - self.offset + self.wall_minus_mono

    def silent_for(self, now: float) -> float:
        """Seconds since the last batch arrived."""
        return now - self.last_seen


def client_timeout_warning(timeouts: ClientTimeoutsInfo | None, threshold: float) -> str | None:
    """Why a model call made with the app's default OpenAI client can hang past the
    ``response`` threshold — its read timeout is longer, or there is none — with the
    fix, in plain words; None when the read timeout is within the threshold, or when the
    app did not say (an older app: nothing is known, so nothing is claimed)."""
    if timeouts is None or (timeouts.read is not None and timeouts.read <= threshold):
        return None
    client = "the SDK's default OpenAI client"
    if timeouts.read is None:
        return (
            f"{client} has no read limit ({timeouts.source}): a hung model call holds its "
            f"run past the response threshold of {threshold:g} s, for as long as the server "
            f"keeps it waiting. {CLIENT_TIMEOUT_FIX}"
        )
    return (
        f"{client} waits {timeouts.read:g} s for a read ({timeouts.source}), longer than "
        f"the response threshold of {threshold:g} s: a hung model call holds its run that "
        f"long. {CLIENT_TIMEOUT_FIX}"
    )


def unknown_end(span: OpenSpan) -> str:
    """What became of a span that left the registry without an end time, in words."""
    if span.state == "leaked":
        return "leaked: the task that opened it finished without ending it, so it never will"
    if span.process.leaving == "exited":
        return "its process exited with the span still open"
    return "ended while its process was not reporting"
