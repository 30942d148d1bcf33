"""An app process spoken on the wire: batches as the processor sends them, with the
spans, ages, heartbeats and loop reports a test chooses. For states that a real app
takes long to reach (thousands of open spans, a span open for minutes)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence

import httpx

from watchdog.protocol import (
    PROTOCOL_VERSION,
    Batch,
    Heartbeat,
    LoopReport,
    ProcessInfo,
    Reply,
    SpanEnd,
    SpanStart,
    decode_reply,
    encode,
)

# No real process has this pid here: the sidecar can never verify (nor signal) it.
UNVERIFIABLE_PID = 999_999


class WireProcess:
    """One simulated app process talking to the sidecar at ``url``."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        service: str = "wire",
        host: str = "wire-host",
        interval: float = 60.0,
    ) -> None:
        self.url = url
        self.headers = {"content-type": "application/json"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"
        self.info = ProcessInfo(
            instance_id=uuid.uuid4().hex,
            pid=UNVERIFIABLE_PID,
            host=host,
            create_time=time.time(),
            service=service,
        )
        self.interval = interval
        self.seq = 0

    def send(
        self,
        events: Sequence[SpanStart | SpanEnd] = (),
        loops: Sequence[LoopReport] = (),
        goodbye: bool = False,
        blind: str | None = None,
    ) -> Reply:
        """Send one batch (events in chunks of 2,000); returns the last reply."""
        chunks = [list(events[i : i + 2000]) for i in range(0, len(events), 2000)] or [[]]
        reply = None
        for chunk in chunks:
            self.seq += 1
            batch = Batch(
                v=PROTOCOL_VERSION,
                process=self.info,
                seq=self.seq,
                sent_at=time.monotonic(),
                heartbeat=Heartbeat(
                    interval=self.interval,
                    open_spans=0,
                    dropped_events=0,
                    wall_minus_mono=time.time() - time.monotonic(),
                    loops=list(loops),
                    blind=blind,
                ),
                events=list(chunk),
                goodbye=goodbye and chunk is chunks[-1],
            )
            response = httpx.post(
                f"{self.url}/v1/events", content=encode(batch), headers=self.headers, timeout=10
            )
            response.raise_for_status()
            reply = decode_reply(response.content)
        assert reply is not None
        return reply

    def goodbye(self) -> None:
        """A clean exit: the sidecar forgets this process and its spans."""
        self.send(goodbye=True)


def start(
    span_id: str,
    trace_id: str,
    kind: str,
    name: str,
    age: float,
    parent_id: str | None = None,
    thread_id: int = 1,
) -> SpanStart:
    """A span that started ``age`` seconds ago."""
    return SpanStart(span_id, trace_id, parent_id, kind, name, time.monotonic() - age, thread_id)


def run_tree(
    index: int, name: str = "bulk-model", response_age: float = 2.0, prefix: str = "bulk"
) -> list[SpanStart]:
    """One agent run as five open spans: trace -> agent -> turn -> response + function."""
    trace = f"trace_{prefix}{index:06d}"
    agent, turn = f"span_{prefix}_a{index}", f"span_{prefix}_t{index}"
    return [
        start(trace, trace, "trace", f"{prefix}-run-{index}", 3.0),
        start(agent, trace, "agent", "Coordinator", 2.9),
        start(turn, trace, "turn", "turn", 2.8, parent_id=agent),
        start(f"span_{prefix}_r{index}", trace, "response", name, response_age, parent_id=turn),
        start(f"span_{prefix}_f{index}", trace, "function", "fetch_report", 2.0, parent_id=turn),
    ]


def runs(count: int, hung: Iterable[int] = (), prefix: str = "bulk") -> list[SpanStart]:
    """``count`` runs of five spans; in those listed in ``hung`` the model call is named
    ``stuck`` and has been open for 100 s."""
    stuck = set(hung)
    events: list[SpanStart] = []
    for index in range(count):
        if index in stuck:
            events += run_tree(index, "stuck", 100.0, prefix)
        else:
            events += run_tree(index, prefix=prefix)
    return events
