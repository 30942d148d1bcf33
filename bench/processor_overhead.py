"""What the app pays per span: WatchdogProcessor next to the SDK's own BatchTraceProcessor.

Every configuration runs in the same process, interleaved round by round, so that a
noisy machine shifts all of them alike; each takes its fastest round (the least disturbed),
and results are reported as ratios of *marginal* cost (time per span lifecycle minus the no-processor baseline).

Configurations: no processor (baseline); a floor processor that only appends a tuple
to a deque; a *capture floor* that appends what any processor offering stacks and
cancel must record (on start the span with the clock, the thread id and the running
task, on end the span with the clock); the SDK's ``BatchTraceProcessor`` with a no-op
exporter; ``WatchdogProcessor`` with the sidecar up (a real sidecar process), down
(nothing listening) and slow (a loopback server that answers after 1.5 s); and the
processor as it was before its sender worked in bulk (``bench/baseline.py``), sidecar
up. Each is measured from a plain thread and inside a running asyncio event loop. The
sender threads' CPU time is read from their own clocks over each timed loop and the
flush that follows it.

Run: ``make bench`` (full) or ``make bench-quick``; alone: ``python -m bench.processor_overhead``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import socket
import statistics
import threading
import time
from asyncio.events import _get_running_loop
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import get_ident
from typing import Any, Final

from agents.tracing import (
    Span,
    Trace,
    TracingProcessor,
    custom_span,
    set_trace_processors,
    trace,
)
from agents.tracing.processor_interface import TracingExporter
from agents.tracing.processors import BatchTraceProcessor

from bench import baseline
from bench.report import Figure, Section, machine
from watchdog._sidecar_process import SidecarProcess
from watchdog.processor import WatchdogProcessor, _task_of
from watchdog.protocol import PROTOCOL_VERSION, Reply, encode


class NoopExporter(TracingExporter):
    """Exports nothing: isolates the processor's own cost."""

    def export(self, items: list[Trace | Span[Any]]) -> None:
        """Drop the items."""


class FloorProcessor(TracingProcessor):
    """The least a processor can do: append a tuple to a bounded deque."""

    def __init__(self) -> None:
        # As short as the watchdog's queue stays while its sender keeps up (it wakes at
        # a full batch of 2,000 events): a floor that kept every span alive for the
        # whole round would pay the garbage collector for them and flatter the ratio.
        self.queue: deque[tuple[Any, ...]] = deque(maxlen=2_000)

    def on_trace_start(self, trace: Trace) -> None:
        """Append."""
        self.queue.append((0, trace))

    def on_trace_end(self, trace: Trace) -> None:
        """Append."""
        self.queue.append((1, trace))

    def on_span_start(self, span: Span[Any]) -> None:
        """Append."""
        self.queue.append((0, span))

    def on_span_end(self, span: Span[Any]) -> None:
        """Append."""
        self.queue.append((1, span))

    def shutdown(self) -> None:
        """Nothing to do."""

    def force_flush(self) -> None:
        """Drop what was appended, as a consumer draining the deque would."""
        self.queue.clear()


class CaptureFloor(TracingProcessor):
    """The least a processor offering stacks and cancel must do: on start append the
    span with the clock, the thread id and the running task, on end the span with the
    clock. It finds the task as cheaply as the watchdog does (the loop running on this
    thread, remembered per thread; asking asyncio costs a ``getpid()`` on 3.11), so
    that the comparison is of everything else."""

    def __init__(self) -> None:
        self.queue: deque[tuple[Any, ...]] = deque(maxlen=2_000)
        self.loops: dict[int, Any] = {}

    def on_span_start(self, span: Span[Any]) -> None:
        """Append the start record."""
        thread = get_ident()
        loop = self.loops.get(thread)
        if loop is None or loop._thread_id != thread:
            loop = _get_running_loop()
            if loop is not None:
                self.loops[thread] = loop
        self.queue.append(
            (span, time.monotonic(), thread, None if loop is None else _task_of(loop))
        )

    # As the watchdog's: no call more than the floor needs.
    on_trace_start = on_span_start  # type: ignore[assignment]

    def on_trace_end(self, trace: Trace) -> None:
        """Append the end record."""
        self.queue.append((trace, time.monotonic()))

    def on_span_end(self, span: Span[Any]) -> None:
        """Append the end record."""
        self.queue.append((span, time.monotonic()))

    def shutdown(self) -> None:
        """Nothing to do."""

    def force_flush(self) -> None:
        """Drop what was appended, as a consumer draining the deque would."""
        self.queue.clear()


def sender_cpu(processor: TracingProcessor | None) -> float | None:
    """CPU seconds the processor's sender thread has used so far, or None."""
    sender = getattr(processor, "_sender", None)
    thread = getattr(sender, "_thread", None)
    ident = getattr(thread, "ident", None)
    if ident is None or thread is None or not thread.is_alive():
        return None
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except OSError:
        return None


def is_watchdog(processor: TracingProcessor | None) -> bool:
    """Today's processor or the baseline's."""
    return processor is not None and hasattr(processor, "dropped_events")


@contextmanager
def slow_server(delay: float) -> Iterator[str]:
    """A loopback endpoint that takes ``delay`` seconds to accept each batch."""
    reply = encode(Reply(v=PROTOCOL_VERSION, sidecar_id="slow"))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            time.sleep(delay)
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except OSError:
                pass  # the client gave up waiting (at shutdown): nothing to answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def spans_in_thread(count: int) -> float:
    """Seconds for ``count`` span lifecycles under one trace, on this thread."""
    begin = time.perf_counter()
    with trace("bench"):
        for _ in range(count):
            with custom_span("work"):
                pass
    return time.perf_counter() - begin


def spans_in_loop(count: int) -> float:
    """The same, inside a running event loop (spans then record their asyncio task)."""

    async def body() -> float:
        return spans_in_thread(count)

    return asyncio.run(body())


def hot_path_percentiles(processor: TracingProcessor, calls: int) -> tuple[float, float, float]:
    """(median, p99, p99.9) nanoseconds of single on_span_start/on_span_end calls."""
    samples: list[int] = []
    clock = time.perf_counter_ns
    with trace("bench"):
        for _ in range(calls // 2):
            span = custom_span("work")
            t0 = clock()
            processor.on_span_start(span)
            t1 = clock()
            processor.on_span_end(span)
            t2 = clock()
            samples += (t1 - t0, t2 - t1)
    samples.sort()

    def pick(quantile: float) -> float:
        return float(samples[min(len(samples) - 1, int(quantile * len(samples)))])

    return pick(0.5), pick(0.99), pick(0.999)


def quiesce(processors: Iterable[TracingProcessor | None]) -> None:
    """Let every processor finish the work of the previous measurement, so that its
    background thread does not steal time from the next one."""
    for processor in processors:
        if is_watchdog(processor):
            processor.force_flush(timeout=0.2)  # type: ignore[union-attr, call-arg]
        elif processor is not None:
            processor.force_flush()
    gc.collect()


class Overhead:
    """Raw results: ns per span lifecycle per (context, processor) and round, hot-path
    call percentiles per processor, and events the watchdog processors dropped."""

    def __init__(self, spans: int, rounds: int) -> None:
        self.spans = spans
        self.rounds = rounds
        self.per_span: dict[tuple[str, str], list[float]] = {}
        self.percentiles: dict[str, tuple[float, float, float]] = {}
        self.dropped: dict[str, int] = {}
        # Sender CPU ns per span lifecycle, per (context, processor) and round.
        self.sender_ns: dict[tuple[str, str], list[float]] = {}

    def sender_per_span(self, context: str, name: str) -> float | None:
        """Median sender CPU ns per span lifecycle of ``name``, or None if not measured."""
        rounds = self.sender_ns.get((context, name))
        return statistics.median(rounds) if rounds else None

    def typical(self, context: str, name: str) -> float:
        """Ns per span lifecycle of ``name``: the fastest round, the one least disturbed
        by other processes on a shared machine (every round does the same work)."""
        return min(self.per_span[(context, name)])

    def marginal(self, context: str, name: str) -> float:
        """Ns per span lifecycle of ``name`` minus that of no processor."""
        return self.typical(context, name) - self.typical(context, "none")


CONTEXTS: Final = ("thread", "loop")
WATCHDOG_CASES: Final = ("watchdog-up", "watchdog-down", "watchdog-slow")
BEFORE_CASE: Final = "before-up"
# (spans per round, rounds, single calls, spans per sender-CPU run), by quick mode.
SIZES: Final = {True: (2_000, 9, 20_000, 100_000), False: (20_000, 15, 200_000, 300_000)}


def run(spans: int, rounds: int, calls: int, sender_spans: int) -> Overhead:
    """Measure every configuration, interleaved round by round; then the senders' CPU
    over ``sender_spans`` span lifecycles per run."""
    # The down and slow cases log one warning each; keep the report readable.
    logging.getLogger("watchdog.processor").setLevel(logging.ERROR)
    result = Overhead(spans, rounds)
    with ExitStack() as stack:
        sidecar = stack.enter_context(SidecarProcess())
        slow_url = stack.enter_context(slow_server(1.5))
        processors: dict[str, TracingProcessor | None] = {
            "none": None,
            "floor": FloorProcessor(),
            "capture": CaptureFloor(),
            # A queue large enough that it never drops: we measure cost, not overflow.
            "sdk-batch": BatchTraceProcessor(
                NoopExporter(), max_queue_size=1_000_000, schedule_delay=0.25
            ),
            "watchdog-up": WatchdogProcessor(sidecar.url, service="bench"),
            "watchdog-down": WatchdogProcessor(closed_port_url(), service="bench"),
            "watchdog-slow": WatchdogProcessor(slow_url, service="bench", request_timeout=2.0),
        }
        before = baseline.load()
        if before is not None:
            processors[BEFORE_CASE] = before.WatchdogProcessor(sidecar.url, service="bench-before")
        contexts: dict[str, Callable[[int], float]] = {
            "thread": spans_in_thread,
            "loop": spans_in_loop,
        }
        for processor in processors.values():  # warm-up, starts sender threads
            set_trace_processors([processor] if processor else [])
            spans_in_thread(spans // 10)
        previous: TracingProcessor | None = None
        for _ in range(rounds):
            for context, timed in contexts.items():
                for name, processor in processors.items():
                    # Only the processor measured last has work left over.
                    quiesce([previous])
                    previous = processor
                    set_trace_processors([processor] if processor else [])
                    seconds = timed(spans)
                    result.per_span.setdefault((context, name), []).append(seconds / spans * 1e9)
        # The sender threads' CPU, over runs long enough (tens of collections) that
        # what a send costs whatever it carries is spread as it is in a running app.
        for _ in range(3):
            for context, timed in contexts.items():
                for name in ("watchdog-up", BEFORE_CASE):
                    processor = processors.get(name)
                    if processor is None:
                        continue
                    quiesce([previous, processor])
                    previous = processor
                    set_trace_processors([processor])
                    cpu = sender_cpu(processor)
                    timed(sender_spans)
                    quiesce([processor])  # their delivery included
                    after = sender_cpu(processor)
                    if cpu is not None and after is not None:
                        ns = (after - cpu) / sender_spans * 1e9
                        result.sender_ns.setdefault((context, name), []).append(ns)
        set_trace_processors([])
        result.percentiles = {
            name: hot_path_percentiles(processor, calls)
            for name, processor in processors.items()
            if processor is not None
        }
        result.dropped = {
            name: p.dropped_events  # type: ignore[union-attr]
            for name, p in processors.items()
            if is_watchdog(p)
        }
        for processor in processors.values():
            if is_watchdog(processor):
                # The slow one would wait out its requests.
                processor.shutdown(timeout=0.5)  # type: ignore[union-attr, call-arg]
            elif processor is not None:
                processor.shutdown()
    return result


METHOD: Final = """\
Marginal cost per span lifecycle (start + end) in a real SDK span lifecycle: a
`custom_span` under a `trace`, timed in a tight loop from a plain thread and inside a
running asyncio event loop, minus the same loop with no processor. Compared side by
side, interleaved round by round in one process (the fastest of the rounds, the one
least disturbed by other processes, for each configuration): a floor
processor that only appends a tuple to a deque, the SDK's `BatchTraceProcessor` with a
no-op exporter, and `WatchdogProcessor` with the sidecar up (a real sidecar process),
down (nothing listening) and slow (answers after 1.5 s). Single-call percentiles time
each `on_span_start` / `on_span_end` call on its own (timer cost included)."""


def measure(quick: bool) -> Section:
    """The hot-path section: ratios per case against their targets, and percentiles."""
    spans, rounds, calls, sender_spans = SIZES[quick]
    result = run(spans, rounds, calls, sender_spans)
    section = Section("hot_path", "Hot path: what the app pays per span", METHOD)
    for context in CONTEXTS:
        base = result.typical(context, "none")
        batch = result.marginal(context, "sdk-batch")
        floor = result.marginal(context, "floor")
        capture = result.marginal(context, "capture")
        for name in WATCHDOG_CASES:
            own = result.marginal(context, name)
            case = name.removeprefix("watchdog-")
            section.add(
                Figure(
                    f"{context}, sidecar {case}: x capture floor",
                    own / capture,
                    "x",
                    1.3,
                    context=f"{own:,.0f} ns vs {capture:,.0f} ns marginal",
                )
            )
            section.add(
                Figure(
                    f"{context}, sidecar {case}: x SDK BatchTraceProcessor",
                    own / batch,
                    "x",
                    0.35,
                    context=f"{own:,.0f} ns vs {batch:,.0f} ns marginal; baseline {base:,.0f} ns",
                )
            )
            section.add(
                Figure(
                    f"{context}, sidecar {case}: x deque-append floor",
                    own / floor,
                    "x",
                    context=f"{own:,.0f} ns vs {floor:,.0f} ns marginal (for comparison)",
                )
            )
        section.add(
            Figure(
                f"{context}: capture floor x SDK BatchTraceProcessor",
                capture / batch,
                "x",
                context=f"{capture:,.0f} ns vs {batch:,.0f} ns marginal (for comparison)",
            )
        )
        if (context, BEFORE_CASE) in result.per_span:
            before = result.marginal(context, BEFORE_CASE)
            own = result.marginal(context, "watchdog-up")
            section.add(
                Figure(
                    f"{context}, sidecar up: after / before",
                    own / before,
                    "x",
                    context=f"{own:,.0f} ns after vs {before:,.0f} ns before "
                    f"(the processor at {baseline.BEFORE}), marginal",
                )
            )
        now_cpu = result.sender_per_span(context, "watchdog-up")
        then_cpu = result.sender_per_span(context, BEFORE_CASE)
        if now_cpu is not None and then_cpu:
            section.add(
                Figure(
                    f"{context}: sender CPU per short span, after / before",
                    now_cpu / then_cpu,
                    "x",
                    0.1,
                    context=f"{now_cpu:,.1f} ns vs {then_cpu:,.0f} ns of the sender thread's CPU "
                    f"per span lifecycle, medians of 3 runs of {sender_spans:,} spans",
                    digits=3,
                )
            )
    for name in WATCHDOG_CASES:
        p50, p99, p999 = result.percentiles[name]
        section.add(
            Figure(
                f"single call p99.9, sidecar {name.removeprefix('watchdog-')}",
                p999 / 1000,
                "us",
                20.0,
                context=f"p50 {p50:,.0f} ns, p99 {p99:,.0f} ns",
            )
        )
    for name in ("floor", "capture", "sdk-batch", BEFORE_CASE):
        if name not in result.percentiles:
            continue
        p50, p99, p999 = result.percentiles[name]
        section.add(
            Figure(
                f"single call p99.9, {name} (for comparison)",
                p999 / 1000,
                "us",
                context=f"p50 {p50:,.0f} ns, p99 {p99:,.0f} ns",
            )
        )
    steps = profile()
    section.notes.append(
        "Profile of the hot path, one step at a time (ns, outside a loop / in a running "
        "loop): "
        + "; ".join(f"{step} {a:,.0f} / {b:,.0f}" for step, a, b in steps)
        + ". The cache replaces asking asyncio; the rest is what a span costs."
    )
    section.notes.append(
        f"{spans:,} spans x {rounds} rounds per case, {calls:,} single calls, "
        f"{sender_spans:,} spans per sender-CPU run; "
        f"events dropped by the watchdog processors: {result.dropped}"
    )
    return section


# What the hot path does per span lifecycle, one statement at a time (see profile()).
PROFILE_STEPS: Final = (
    ("thread id", "get_ident()"),
    ("clock, start and end", "monotonic(); monotonic()"),
    ("running loop, as asyncio is asked (3.11: a getpid())", "_get_running_loop()"),
    ("running loop, from the per-thread cache", "loops.get(thread)._thread_id == thread"),
    ("running task of the loop", "task_of(loop)"),
    ("start record: tuple into the open-span dict, popped at end", "d[k] = (1.0, 2, t); d.pop(k)"),
    ("caps checked (open spans, parents)", "len(d) < 100_000; len(s) < 100_000"),
    ("announced? (dict membership)", "k in announced"),
    ("ring of short spans: append", "ring.append((k, t, 1.0))"),
    ("short spans counted", "count()"),
    ("parent marked active (slot reads, set add)", "s.add(k._parent_id or k._trace_id)"),
)


def profile() -> list[tuple[str, float, float]]:
    """(step, ns outside a loop, ns inside a running loop) for each hot-path step,
    timed with ``timeit`` on a real SDK span (1,000,000 runs, best of 5)."""
    import itertools
    import timeit

    with trace("profile"):
        span = custom_span("work")

    placeholder = asyncio.new_event_loop()  # outside a loop: the cache path, timed alike

    def timed() -> list[float]:
        loop = _get_running_loop()
        thread = get_ident()
        names = {
            "get_ident": get_ident,
            "monotonic": time.monotonic,
            "_get_running_loop": _get_running_loop,
            "loops": {thread: loop or placeholder},
            "thread": thread,
            "task_of": _task_of,
            "loop": loop or object(),
            "d": {},
            "k": span,
            "t": None,
            "s": set(),
            "announced": {},
            "ring": deque(maxlen=64),
            "count": itertools.count().__next__,
        }
        return [
            min(timeit.repeat(stmt, globals=names, number=1_000_000, repeat=5)) * 1e3
            for _, stmt in PROFILE_STEPS
        ]

    async def in_loop() -> list[float]:
        return timed()

    outside = timed()
    inside = asyncio.run(in_loop())
    placeholder.close()
    return [(step, a, b) for (step, _), a, b in zip(PROFILE_STEPS, outside, inside, strict=True)]


def print_details(result: Overhead) -> None:
    """The full table of marginal costs, as ratios to each reference."""
    print("per span lifecycle (start + end), fastest round; marginal = minus 'none'")
    for context in CONTEXTS:
        base = result.typical(context, "none")
        print(f"\n[{context}] baseline (no processor): {base:,.0f} ns per span")
        print(f"  {'processor':<15}{'marginal ns':>12}{'x sdk-batch':>13}{'x floor':>10}")
        batch, floor = result.marginal(context, "sdk-batch"), result.marginal(context, "floor")
        capture = result.marginal(context, "capture")
        print(f"  {'':<15}{'':>12}{'':>13}{'':>10}{'x capture':>11}{'sender ns':>11}")
        for name in ("floor", "capture", "sdk-batch", *WATCHDOG_CASES, BEFORE_CASE):
            if (context, name) not in result.per_span:
                continue
            own = result.marginal(context, name)
            cpu = result.sender_per_span(context, name)
            shown = "" if cpu is None else f"{cpu:,.1f}"
            print(
                f"  {name:<15}{own:>12,.0f}{own / batch:>13.2f}{own / floor:>10.2f}"
                f"{own / capture:>11.2f}{shown:>11}"
            )
    print("\nsingle hot-path calls (on_span_start and on_span_end), ns incl. ~timer cost:")
    print(f"  {'processor':<15}{'p50':>8}{'p99':>8}{'p99.9':>9}")
    for name, (p50, p99, p999) in result.percentiles.items():
        print(f"  {name:<15}{p50:>8,.0f}{p99:>8,.0f}{p999:>9,.0f}")
    print(f"\nevents dropped by watchdog processors: {result.dropped}")


def main(argv: list[str] | None = None) -> int:
    """Run this benchmark alone and print the full table (``python -m bench`` runs all)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print_details(run(*SIZES[args.quick]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
