"""App processes spoken on the wire: pre-built batches of the real protocol, posted to a
sidecar from subprocesses so that the app side costs the sidecar's core nothing.

The events are those of real agent runs (trace, agent, three turns, a model call in each
turn and a tool call in the first two), many runs interleaved as concurrent runs are,
with the ids, kinds and names the processor sends. A cycle of batches leaves no span
open, so posting the cycle again and again is a sustained load with a steady number of
open spans. Each body is encoded once; only ``sent_at`` is written in at sending time.

Run as ``python -m bench.wire --url URL [--rate N] ...``: it builds its batches, prints
``ready``, waits for a line on stdin, posts for ``--seconds``, then prints a JSON line
with what it sent.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from watchdog.protocol import (
    PROTOCOL_VERSION,
    Batch,
    Event,
    Heartbeat,
    ProcessInfo,
    SpanEnd,
    SpanStart,
    encode,
)

__all__ = ["Poster", "Posting", "events_of_runs", "process_info", "start", "templates"]

ROOT: Final = Path(__file__).resolve().parents[1]
# A sent_at no real batch has: the encoded body is split around it.
_MARK: Final = 987654321.125
# No real process has this pid here: the sidecar can never verify (nor signal) it.
UNVERIFIABLE_PID: Final = 999_999


def process_info(service: str) -> ProcessInfo:
    """The identity of one simulated app process."""
    return ProcessInfo(
        instance_id=uuid.uuid4().hex,
        pid=UNVERIFIABLE_PID,
        host="bench-host",
        create_time=time.time(),
        service=service,
        sdk_version="0.0.0",
        watchdog_version="0.1.0",
    )


def _run(prefix: str, index: int, at: float) -> list[Event]:
    """One agent run: trace, agent, three turns; a model call per turn, a tool call in
    the first two. Ids are shaped like the SDK's (``trace_`` + 32 hex, ``span_`` + 24)."""
    trace = f"trace_{prefix}{index:0{32 - len(prefix)}x}"
    ids = itertools.count()

    def span_id() -> str:
        return f"span_{prefix}{index:0{16 - len(prefix)}x}{next(ids):08x}"

    events: list[Event] = []
    clock = itertools.count()

    def tick() -> float:
        return at + next(clock) * 0.001

    events.append(SpanStart(trace, trace, None, "trace", "Agent workflow", tick(), 1, 7))
    agent = span_id()
    events.append(SpanStart(agent, trace, None, "agent", "Coordinator", tick(), 1, 7))
    for turn_index in range(3):
        turn = span_id()
        events.append(SpanStart(turn, trace, agent, "turn", "Coordinator", tick(), 1, 7))
        response = span_id()
        events.append(SpanStart(response, trace, turn, "response", "", tick(), 1, 7))
        events.append(SpanEnd(response, tick()))
        if turn_index < 2:
            tool = span_id()
            events.append(SpanStart(tool, trace, turn, "function", "fetch_report", tick(), 1, 7))
            events.append(SpanEnd(tool, tick()))
        events.append(SpanEnd(turn, tick()))
    events.append(SpanEnd(agent, tick()))
    events.append(SpanEnd(trace, tick()))
    return events


def events_of_runs(prefix: str, runs: int, concurrency: int = 100) -> list[Event]:
    """``runs`` agent runs, ``concurrency`` of them interleaved at any time; every span
    that starts also ends."""
    at = time.monotonic()
    pending = (iter(_run(prefix, index, at)) for index in range(runs))
    active: deque[Iterator[Event]] = deque(itertools.islice(pending, concurrency))
    events: list[Event] = []
    while active:
        run = active.popleft()
        event = next(run, None)
        if event is None:
            following = next(pending, None)
            if following is not None:
                active.append(following)
            continue
        events.append(event)
        active.append(run)
    return events


def templates(info: ProcessInfo, events: Sequence[Event], size: int) -> list[tuple[bytes, bytes]]:
    """Encoded batches of ``size`` events, each split where ``sent_at`` goes."""
    bodies = []
    mark = repr(_MARK).encode()
    for seq, first in enumerate(range(0, max(len(events), 1), size)):
        batch = Batch(
            v=PROTOCOL_VERSION,
            process=info,
            seq=seq,
            sent_at=_MARK,
            heartbeat=Heartbeat(
                interval=60.0,  # never called unresponsive between two bench phases
                open_spans=0,
                dropped_events=0,
                wall_minus_mono=time.time() - time.monotonic(),
            ),
            events=list(events[first : first + size]),
        )
        head, found, tail = encode(batch).partition(mark)
        assert found, "sent_at not found in the encoded batch"
        bodies.append((head, tail))
    return bodies


class Poster:
    """Posts bodies to one sidecar over one keep-alive connection."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        self.headers = {"content-type": "application/json"}
        self.failures = 0

    def post(self, template: tuple[bytes, bytes]) -> bool:
        """Send one batch stamped now; True on a 200."""
        head, tail = template
        body = head + repr(time.monotonic()).encode() + tail
        self.connection.request("POST", "/v1/events", body, self.headers)
        response = self.connection.getresponse()
        response.read()
        if response.status != 200:
            self.failures += 1
        return response.status == 200


def _post_for(
    url: str, bodies: list[tuple[bytes, bytes]], sizes: list[int], seconds: float, rate: float
) -> dict[str, Any]:
    poster = Poster(url)
    sent = events = 0
    begin = time.monotonic()
    end = begin + seconds
    # With a rate, one batch per interval (a processor flushes every 250 ms).
    interval = 0.0 if rate <= 0 else sizes[0] / rate
    for index in itertools.cycle(range(len(bodies))):
        now = time.monotonic()
        if now >= end:
            break
        if interval:
            due = begin + sent * interval
            if due > now:
                time.sleep(min(due, end) - now)
                if due >= end:
                    break
        if poster.post(bodies[index]):
            events += sizes[index]
        sent += 1
    return {"batches": sent, "events": events, "failures": poster.failures}


def main(argv: list[str] | None = None) -> int:
    """Build batches, say ``ready``, wait for a line on stdin, post, report as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--service", default="bench")
    parser.add_argument("--batch", type=int, default=2000, help="events per batch")
    parser.add_argument("--runs", type=int, default=1000, help="agent runs per cycle")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s (0: flood)")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    info = process_info(args.service)
    events = events_of_runs(uuid.uuid4().hex[:6], args.runs)
    bodies = templates(info, events, args.batch)
    sizes = [min(args.batch, len(events) - i) for i in range(0, len(events), args.batch)]
    Poster(args.url).post(templates(info, [], 1)[0])  # say hello: the join is not timed
    print("ready", flush=True)
    sys.stdin.readline()
    result = _post_for(args.url, bodies, sizes, args.seconds, args.rate)
    print(json.dumps(result), flush=True)
    return 0


class Posting:
    """A poster subprocess: started with :func:`start`, told to go, then read."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def ready(self) -> None:
        """Wait until it has built its batches."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"poster failed to start: {line!r}")

    def go(self) -> None:
        """Start posting."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self) -> dict[str, Any]:
        """What it sent (waits for it to finish)."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.process.wait(30)
        return dict(json.loads(line))


def start(
    url: str, seconds: float, rate: float = 0.0, batch: int = 2000, runs: int = 1000
) -> Posting:
    """Start a poster subprocess against ``url``."""
    command = [sys.executable, "-m", "bench.wire", "--url", url, "--seconds", str(seconds)]
    command += ["--rate", str(rate), "--batch", str(batch), "--runs", str(runs)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    return Posting(process)


if __name__ == "__main__":
    raise SystemExit(main())
