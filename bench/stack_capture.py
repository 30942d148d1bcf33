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
from typing import Any

from agents.tracing import set_trace_processors

from bench.processor_overhead import closed_port_url, hot_path_percentiles
from watchdog._control import capture
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


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    rounds, calls = (3, 20_000) if args.quick else (9, 100_000)

    loop, holder, thread, thread_id = hung_task(depth=60)
    info = (time.monotonic(), thread_id, holder["task"])
    sizes, costs = [], []
    for _ in range(200):
        t0 = time.perf_counter_ns()
        text = capture(None, info)
        costs.append(time.perf_counter_ns() - t0)
        sizes.append(len(text.encode()))

    logging.getLogger("watchdog.processor").setLevel(logging.ERROR)  # the sidecar is absent
    processor = WatchdogProcessor(closed_port_url(), service="bench")
    set_trace_processors([])
    stop = threading.Event()

    def capture_forever() -> None:
        while not stop.is_set():
            capture(None, info)

    quiet: list[tuple[float, float, float]] = []
    busy: list[tuple[float, float, float]] = []
    for _ in range(rounds):
        quiet.append(hot_path_percentiles(processor, calls))
        stop.clear()
        capturer = threading.Thread(target=capture_forever, name="capturer")
        capturer.start()
        busy.append(hot_path_percentiles(processor, calls))
        stop.set()
        capturer.join()
    processor.shutdown()
    loop.call_soon_threadsafe(holder["release"].set)
    thread.join(5)

    def median(results: list[tuple[float, float, float]], index: int) -> float:
        return statistics.median(r[index] for r in results)

    print(
        f"one capture of a task 60 coroutines deep plus its thread: "
        f"{statistics.median(costs) / 1000:,.0f} us median, {max(sizes):,} bytes "
        f"(bound {MAX_STACK_LENGTH:,})"
    )
    print("hot-path call (ns) while another thread captures stacks back to back:")
    print(f"  {'':<22}{'p50':>8}{'p99':>8}{'p99.9':>9}")
    for label, results in (("no capture", quiet), ("capturing", busy)):
        print(f"  {label:<22}" + "".join(f"{median(results, i):>8,.0f}" for i in range(3)))
    print(
        "  ratio capturing/none: "
        + " ".join(f"{median(busy, i) / median(quiet, i):.2f}" for i in range(3))
        + " (p50 p99 p99.9)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
