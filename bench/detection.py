"""Detection latency at many open spans, and what an open span costs the sidecar in memory.

One real sidecar subprocess is filled with open spans in steps (10 k, 100 k, 1 M), as
app processes of at most 100,000 open spans each (the processor's own bound) would send
them. At each step a probe process opens short-threshold probe spans one by one, and
the bench waits for each probe's ``span_hung`` log line and webhook. Latency is measured
from the probe's deadline (its start plus its threshold, on the probe's clock) to the
``ts`` of the log line and to the webhook's arrival, all on this machine's wall clock.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import msgspec
import psutil

from bench import wire
from bench.report import Figure, Section, render_console
from watchdog._sidecar_process import SidecarProcess
from watchdog.protocol import Event, SpanStart, decode_batch
from watchdog.sidecar.config import KINDS, Thresholds
from watchdog.sidecar.registry import Registry

__all__ = ["measure"]

PROBE_THRESHOLD: Final = 1.0
PROBE_GAP: Final = 0.15
SPANS_PER_PROCESS: Final = 100_000

METHOD: Final = """\
One real sidecar subprocess with a webhook sink (a loopback receiver), its default JSON
log at `info`, and `[alerting] stack_wait = 0` (the default holds a webhook up to 1.5 s
for the hung span's stack, by design; the probe process answers no commands). Bulk
spans are agent runs of five open spans (trace, agent, turn, model call, tool call)
from simulated app processes of at most 100,000 open spans each, sent as batches of
2,000 events; their thresholds are an hour, so none fires. At each step {probes} probe
spans (a trace with one `custom` span, threshold {threshold:g} s) are opened
{gap:g} s apart by another process, and each probe's latency is taken from its deadline
to the `ts` (milliseconds) of its `span_hung` log line and to the arrival of its
webhook. Memory is the sidecar's RSS after filling minus its RSS before the first bulk
span, divided by the open spans. A full collection of Python's cyclic garbage collector
stops the sidecar's loop for as long as it takes, and it comes about once the objects it
tracks have grown by a quarter: it is timed in a fresh process that imports the
sidecar and applies the same encoded batches to a registry."""


class Webhook:
    """A loopback receiver that records when each hung span's alert arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.changed = threading.Condition()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                at = time.time()
                payload = json.loads(body)
                with webhook.changed:
                    for alert in payload.get("alerts", []):
                        if alert.get("status") == "firing":
                            webhook.arrived.setdefault(alert["labels"].get("span_id", ""), at)
                    webhook.changed.notify_all()
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    @contextmanager
    def running(self) -> Iterator[Webhook]:
        """Serve in a thread while inside."""
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


def config(webhook_url: str) -> str:
    """Hour-long thresholds for the bulk, a short one for the probes, a webhook."""
    kinds = "\n".join(f"{kind} = 3600" for kind in sorted(KINDS))
    return (
        f"[thresholds]\ndefault = 3600\n{kinds}\n\n"
        f'[[rules]]\nkind = "custom"\nname = "probe-*"\nthreshold = {PROBE_THRESHOLD}\n\n'
        "[alerting]\nstack_wait = 0\n\n"
        f'[[alerts]]\ntype = "webhook"\nname = "bench"\nurl = "{webhook_url}"\n'
    )


def _bulk(prefix: str, runs: int) -> list[Event]:
    """``runs`` agent runs of five open spans each."""
    events: list[Event] = []
    now = time.monotonic()
    for index in range(runs):
        trace = f"trace_{prefix}{index:0{32 - len(prefix)}x}"
        ids = [f"span_{prefix}{index:0{16 - len(prefix)}x}{n:08x}" for n in range(4)]
        events += [
            SpanStart(trace, trace, None, "trace", "Agent workflow", now, 139_812_345, 7),
            SpanStart(ids[0], trace, None, "agent", "Coordinator", now, 139_812_345, 7),
            SpanStart(ids[1], trace, ids[0], "turn", "Coordinator", now, 139_812_345, 7),
            SpanStart(ids[2], trace, ids[1], "response", "", now, 139_812_345, 7),
            SpanStart(ids[3], trace, ids[1], "function", "fetch_report", now, 139_812_345, 7),
        ]
    return events


class Filler:
    """Opens bulk spans in the sidecar, in processes of at most 100,000 open spans."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.poster = wire.Poster(url)
        self.open = 0
        self._current: tuple[Any, int] | None = None  # (process info, its open spans)

    def fill_to(self, total: int) -> None:
        """Open bulk spans until ``total`` are open."""
        while self.open < total:
            if self._current is None or self._current[1] >= SPANS_PER_PROCESS:
                self._current = (wire.process_info("bulk"), 0)
            info, held = self._current
            count = min(total - self.open, SPANS_PER_PROCESS - held)
            events = _bulk(uuid.uuid4().hex[:6], count // 5)
            for template in wire.templates(info, events, 2000):
                if not self.poster.post(template):
                    raise RuntimeError("the sidecar refused a bulk batch")
            self._current = (info, held + len(events))
            self.open += len(events)


def gc_pause(open_spans: int) -> tuple[float, float]:
    """Milliseconds one full collection of the cyclic garbage collector takes with and
    without a registry holding ``open_spans`` spans (applied from the same encoded
    batches the sidecar decodes), in a fresh process that has imported the sidecar.
    The sidecar's loop stops for as long."""
    command = [sys.executable, "-m", "bench.detection", "--gc-pause", str(open_spans)]
    env = {**os.environ, "PYTHONPATH": str(wire.ROOT)}
    output = subprocess.run(
        command, capture_output=True, text=True, cwd=wire.ROOT, env=env, check=True, timeout=600
    ).stdout
    held, without = json.loads(output)
    return float(held), float(without)


def _gc_pause_here(open_spans: int) -> tuple[float, float]:
    import watchdog.sidecar.app  # noqa: F401  (the sidecar's own objects count too)

    def collect() -> float:
        timings = []
        for _ in range(3):
            begin = time.perf_counter()
            gc.collect()
            timings.append((time.perf_counter() - begin) * 1000)
        return statistics.median(timings)

    without = collect()
    registry = Registry(Thresholds())
    info = wire.process_info("bulk")
    for first in range(0, open_spans, SPANS_PER_PROCESS):
        info = wire.process_info("bulk")
        count = min(SPANS_PER_PROCESS, open_spans - first)
        events = _bulk(uuid.uuid4().hex[:6], count // 5)
        for head, tail in wire.templates(info, events, 2000):
            registry.apply(decode_batch(head + repr(time.monotonic()).encode() + tail))
        del events
    held = collect()
    if registry.open_count != open_spans:
        raise RuntimeError(f"expected {open_spans} open spans, got {registry.open_count}")
    return held, without


def probe(url: str, count: int, gap: float) -> dict[str, float]:
    """Open ``count`` probe spans ``gap`` seconds apart; returns span id -> wall deadline."""
    # The probes speak as this very process, which the sidecar can verify: a span is
    # flagged only once its process is proven alive, and for a verified local pid that
    # proof is immediate — as for a real app on the sidecar's host. (An unverifiable
    # one would be flagged at its next heartbeat instead.)
    info = msgspec.structs.replace(
        wire.process_info("probe"),
        pid=os.getpid(),
        create_time=psutil.Process().create_time(),
        host=socket.gethostname(),
    )
    poster = wire.Poster(url)
    deadlines: dict[str, float] = {}
    begin = time.monotonic()
    for index in range(count):
        pause = begin + index * gap - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        prefix = uuid.uuid4().hex[:6]
        trace = f"trace_{prefix}{index:026x}"
        span = f"span_{prefix}{index:018x}"
        started = time.monotonic()
        events: list[Event] = [
            SpanStart(trace, trace, None, "trace", "probe", started, 1, None),
            SpanStart(span, trace, None, "custom", f"probe-{index}", started, 1, None),
        ]
        deadlines[span] = started + PROBE_THRESHOLD + (time.time() - time.monotonic())
        if not poster.post(wire.templates(info, events, 2)[0]):
            raise RuntimeError("the sidecar refused a probe")
    return deadlines


def _epoch(ts: str) -> float:
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _about(span_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda entry: entry.get("span_id") == span_id


def latencies(
    sidecar: SidecarProcess, webhook: Webhook, deadlines: dict[str, float], since: int
) -> tuple[list[float], list[float]]:
    """Milliseconds from each probe's deadline to its log line and to its webhook."""
    logged: list[float] = []
    for span_id, deadline in deadlines.items():
        entry = sidecar.wait_for("span_hung", timeout=30, since=since, where=_about(span_id))
        if entry is None:
            raise RuntimeError(f"probe {span_id} was never flagged")
        logged.append((_epoch(str(entry["ts"])) - deadline) * 1000)
    hooked: list[float] = []
    with webhook.changed:
        webhook.changed.wait_for(lambda: all(s in webhook.arrived for s in deadlines), 30)
        for span_id, deadline in deadlines.items():
            if span_id in webhook.arrived:
                hooked.append((webhook.arrived[span_id] - deadline) * 1000)
    return logged, hooked


def measure(quick: bool) -> Section:
    """The detection-latency and sidecar-memory section."""
    steps = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    probes = 20 if quick else 40
    section = Section(
        "detection",
        "Detection latency and sidecar memory",
        METHOD.format(probes=probes, threshold=PROBE_THRESHOLD, gap=PROBE_GAP),
    )
    webhook = Webhook()
    with webhook.running(), SidecarProcess(config(webhook.url)) as sidecar:
        process = psutil.Process(sidecar.pid)
        filler = Filler(sidecar.url)
        # One empty batch first, so that a process record and the ingest path's own
        # allocations are in the baseline.
        filler.poster.post(wire.templates(wire.process_info("warm"), [], 1)[0])
        baseline = process.memory_info().rss
        for step in steps:
            begin, before = time.monotonic(), filler.open
            filler.fill_to(step)
            fill_rate = (filler.open - before) / (time.monotonic() - begin)
            rss = process.memory_info().rss
            per_span = (rss - baseline) / filler.open
            since = len(sidecar.logs)
            deadlines = probe(sidecar.url, probes, PROBE_GAP)
            logged, hooked = latencies(sidecar, webhook, deadlines, since)
            label = f"{step // 1000:,} k" if step < 1_000_000 else f"{step // 1_000_000} M"
            # The target is set at 1 M; quick mode holds 100 k to it as a smoke check.
            target = 100.0 if step == steps[-1] else None
            for what, values in (("log line", logged), ("webhook", hooked)):
                section.add(
                    Figure(
                        f"deadline to {what} p99, {label} open",
                        _percentile(values, 0.99),
                        "ms",
                        target,
                        context=f"p50 {statistics.median(values):.1f} ms, "
                        f"max {max(values):.1f} ms, {len(values)} probes",
                        digits=1,
                    )
                )
            memory_target = 500.0 if step == steps[-1] else None
            section.add(
                Figure(
                    f"sidecar RSS per open span, {label} open",
                    per_span,
                    "bytes",
                    memory_target,
                    context=f"RSS {rss / 2**20:,.0f} MiB (baseline {baseline / 2**20:,.0f} MiB); "
                    f"filled at {fill_rate:,.0f} events/s",
                    digits=0,
                )
            )
    held, without = gc_pause(steps[-1])
    section.add(
        Figure(
            f"full garbage collection, {label} open",
            held,
            "ms",
            100.0,
            context=f"{without:.0f} ms without the spans; timed in a process of its own",
            digits=0,
        )
    )
    if quick:
        section.notes.append(
            "quick mode stops at 100 k open spans; the 1 M targets are measured by `make bench`"
        )
    return section


def main(argv: list[str] | None = None) -> int:
    """Run this section alone."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gc-pause", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gc_pause:
        print(json.dumps(_gc_pause_here(args.gc_pause)))
        return 0
    print(render_console(measure(args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
