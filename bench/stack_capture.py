"""Stack capture: what one capture costs, how big it gets, and what it does to the hot path.

A hung span's stacks are captured on the processor's sender thread, never on the app's.
This measures the worst case for the app: a thread capturing stacks back to back (a real
process captures once per hung span) while the app's thread runs span starts and ends.
Both cases run interleaved in one process, so the ratio is meaningful on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import threading
import time
from typing import Any, Final

from agents.tracing import set_trace_processors

from bench.processor_overhead import closed_port_url, hot_path_percentiles
from bench.report import Figure, Section
from watchdog._stacks import capture
from watchdog.processor import WatchdogProcessor
from watchdog.protocol import MAX_STACK_LENGTH


def hung_task(depth: int) -> tuple[asyncio.AbstractEventLoop, Any, threading.Thread, int]:
    """A loop in its own thread with a task suspended ``depth`` coroutines deep."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def level(n: int, release: asyncio.Event) -> None:
        if n == 0:
            await release.wait()
        else:
            await level(n - 1, release)

    async def main() -> None:
        release = asyncio.Event()
        holder["release"] = release
        holder["loop"] = asyncio.get_running_loop()
        holder["task"] = asyncio.create_task(level(depth, release), name="hung")
        ready.set()
        await holder["task"]

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="app-loop", daemon=True)
    thread.start()
    ready.wait(5)
    holder["thread_id"] = thread.ident
    return holder["loop"], holder, thread, holder["thread_id"]


class Capture:
    """What one capture costs and weighs, and hot-path percentiles with and without a
    thread capturing stacks back to back."""

    def __init__(self) -> None:
        self.costs: list[int] = []
        self.sizes: list[int] = []
        self.quiet: list[tuple[float, float, float]] = []
        self.busy: list[tuple[float, float, float]] = []

    def median(self, busy: bool, index: int) -> float:
        """Median over rounds of one percentile (0: p50, 1: p99, 2: p99.9), in ns."""
        return statistics.median(r[index] for r in (self.busy if busy else self.quiet))


def run(rounds: int, calls: int) -> Capture:
    """Measure: 200 captures alone, then ``rounds`` of hot-path calls without and with
    a capturing thread."""
    result = Capture()
    loop, holder, thread, thread_id = hung_task(depth=60)
    info = (time.monotonic(), thread_id, holder["task"])
    for _ in range(200):
        t0 = time.perf_counter_ns()
        text = capture(None, info)
        result.costs.append(time.perf_counter_ns() - t0)
        result.sizes.append(len(text.encode()))

    logging.getLogger("watchdog.processor").setLevel(logging.ERROR)  # the sidecar is absent
    processor = WatchdogProcessor(closed_port_url(), service="bench")
    set_trace_processors([])
    stop = threading.Event()

    def capture_forever() -> None:
        while not stop.is_set():
            capture(None, info)

    for _ in range(rounds):
        result.quiet.append(hot_path_percentiles(processor, calls))
        stop.clear()
        capturer = threading.Thread(target=capture_forever, name="capturer")
        capturer.start()
        result.busy.append(hot_path_percentiles(processor, calls))
        stop.set()
        capturer.join()
    processor.shutdown(timeout=0.5)  # nothing listens: no goodbye to wait for
    loop.call_soon_threadsafe(holder["release"].set)
    thread.join(5)
    return result


METHOD: Final = """\
A hung span's stacks are captured on the processor's sender thread, never on the
app's. One capture of an asyncio task suspended 60 coroutines deep, plus its thread,
is timed 200 times. Then the worst case for the app: a thread capturing stacks back to
back (a real process captures once per hung span) while the app's thread makes
single hot-path calls, against the same calls with no capture, interleaved round by
round (medians over rounds)."""


def measure(quick: bool) -> Section:
    """The stack-capture section."""
    # A thread capturing back to back slows each span the app's thread makes from
    # microseconds to a few hundred (span creation gives up the GIL in uuid4, and
    # getting it back waits on the capturer): fewer calls keep the run short.
    rounds, calls = (2, 6_000) if quick else (9, 30_000)
    result = run(rounds, calls)
    section = Section("stack_capture", "Stack capture", METHOD)
    section.add(
        Figure(
            "one capture, 60 coroutines deep",
            statistics.median(result.costs) / 1000,
            "us",
            context=f"{max(result.sizes):,} bytes (bound {MAX_STACK_LENGTH:,})",
            digits=0,
        )
    )
    section.add(
        Figure(
            "hot-path call p99.9 while capturing back to back",
            result.median(True, 2) / 1000,
            "us",
            50.0,
            context=f"without capture {result.median(False, 2) / 1000:.1f} us; p50 "
            f"{result.median(True, 0):,.0f} vs {result.median(False, 0):,.0f} ns",
        )
    )
    return section


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    rounds, calls = (2, 6_000) if args.quick else (9, 30_000)
    result = run(rounds, calls)
    print(
        f"one capture of a task 60 coroutines deep plus its thread: "
        f"{statistics.median(result.costs) / 1000:,.0f} us median, {max(result.sizes):,} bytes "
        f"(bound {MAX_STACK_LENGTH:,})"
    )
    print("hot-path call (ns) while another thread captures stacks back to back:")
    print(f"  {'':<22}{'p50':>8}{'p99':>8}{'p99.9':>9}")
    for label, busy in (("no capture", False), ("capturing", True)):
        print(f"  {label:<22}" + "".join(f"{result.median(busy, i):>8,.0f}" for i in range(3)))
    print(
        "  ratio capturing/none: "
        + " ".join(f"{result.median(True, i) / result.median(False, i):.2f}" for i in range(3))
        + " (p50 p99 p99.9)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
