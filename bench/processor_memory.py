"""Processor memory with the sidecar down: an app under load keeps bounded memory.

A child process installs ``WatchdogProcessor`` pointed at a port where nothing
listens and runs many concurrent agent-shaped runs (model calls that take a second or
so, instant tool calls) for the whole run. Every second it reports its RSS and the
processor's buffers. The figure that says "bounded" is the RSS growth over the last
third of the run, when the buffers have long been full.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from typing import Any, Final

import psutil

from bench.report import Figure, Section, render_console

__all__ = ["measure"]

ROOT: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METHOD: Final = """\
A child process with `WatchdogProcessor` sending to a loopback port where nothing
listens runs {concurrent:,} agent runs at once on one event loop for {seconds:g} s, with
the SDK's real span objects: each run is a trace and an agent span holding three model
calls of 0.8-1.6 s and two instant tool calls, and a new run starts as one ends. Once a
second the child samples its own RSS and the processor's buffers. What bounds them, by
default: the queue to the sender thread (65,536 events), the sender's backlog of
events not yet delivered (65,536; past it the oldest go and a resync follows), the
open-span record (100,000 spans) and the parents of summarised short spans kept for
the next batch (100,000 ids). The figure is the RSS growth over the last third of the
run, once these are full."""


CONCURRENT: Final = 2_000


def _child(seconds: float) -> None:
    from agents.tracing import agent_span, custom_span, function_span, set_trace_processors
    from agents.tracing import trace as open_trace

    from bench.processor_overhead import closed_port_url
    from watchdog.processor import WatchdogProcessor

    logging.getLogger("watchdog.processor").setLevel(logging.ERROR)
    processor = WatchdogProcessor(closed_port_url(), service="bench-down")
    set_trace_processors([processor])
    me = psutil.Process()
    stop = threading.Event()
    spans = [0]

    async def runs() -> None:
        async def one_after_another() -> None:
            while True:
                with open_trace("load"), agent_span("Analyst"):
                    for _ in range(3):
                        with custom_span("model"):
                            await asyncio.sleep(random.uniform(0.8, 1.6))
                    for _ in range(2):
                        with function_span("fetch_report"):
                            pass
                spans[0] += 7

        tasks = [asyncio.create_task(one_after_another()) for _ in range(CONCURRENT)]
        await asyncio.to_thread(stop.wait)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    worker = threading.Thread(target=asyncio.run, args=(runs(),), name="app")
    worker.start()
    begin = time.monotonic()
    for second in range(1, int(seconds) + 1):
        time.sleep(max(0.0, begin + second - time.monotonic()))
        # The sender's backlog, when its internals are where this version keeps them.
        pending = getattr(getattr(processor, "_sender", None), "_pending", None)
        sample = {
            "t": second,
            "rss": me.memory_info().rss,
            "queue": len(processor._queue),
            "pending": -1 if pending is None else len(pending),
            "open": processor.open_spans,
            "dropped": processor.dropped_events,
            "spans": spans[0],
        }
        print(json.dumps(sample), flush=True)
    stop.set()
    worker.join()
    set_trace_processors([])
    processor.shutdown(timeout=1.0)


def measure(quick: bool, seconds: float | None = None) -> Section:
    """The processor-memory section: ``seconds`` of load (20 quick, 600 full)."""
    seconds = seconds or (20.0 if quick else 600.0)
    section = Section(
        "processor_memory",
        "Processor memory with the sidecar down",
        METHOD.format(seconds=seconds, concurrent=CONCURRENT),
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    output = subprocess.run(
        [sys.executable, "-m", "bench.processor_memory", "--child", "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
        timeout=seconds + 60,
    ).stdout
    samples: list[dict[str, Any]] = [json.loads(line) for line in output.splitlines() if line]
    third = samples[len(samples) * 2 // 3 - 1]
    last = samples[-1]
    peak = max(s["rss"] for s in samples)
    growth = (last["rss"] - third["rss"]) / 2**20
    pending = "" if last["pending"] < 0 else f"sender backlog {last['pending']:,} events; "
    section.add(
        Figure(
            "RSS growth over the last third",
            growth,
            "MiB",
            4.0,
            context=f"{third['t']} s to {last['t']} s; RSS at 1 s "
            f"{samples[0]['rss'] / 2**20:,.1f} MiB, peak {peak / 2**20:,.1f} MiB",
            digits=1,
        )
    )
    section.add(
        Figure(
            "peak RSS of the app process",
            peak / 2**20,
            "MiB",
            context=f"{pending}queue {last['queue']:,} events; open-span record "
            f"{last['open']:,}; {last['dropped']:,} events dropped at the queue; "
            f"{last['spans'] / last['t']:,.0f} spans/s",
            digits=1,
        )
    )
    return section


def main(argv: list[str] | None = None) -> int:
    """Run this section alone (or, with ``--child``, be the app under load)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.seconds)
        return 0
    print(render_console(measure(args.quick, args.seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
