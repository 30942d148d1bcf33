"""Whole agent runs: throughput of real ``Runner.run`` calls with and without the watchdog.

The runs are real openai-agents runs (an agent that calls a function tool twice, then
answers: three model calls, two tool calls, about ten spans) against the loopback
Responses stand-in, which runs in a subprocess of its own so that it does not share
this process's GIL. A round starts 100 runs at once on one event loop and times them
all; rounds with and without ``WatchdogProcessor`` (sending to a real sidecar process)
alternate A B B A, so that drift on a noisy machine falls on both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_trace_processors
from openai import AsyncOpenAI

from bench.report import Figure, Section, render_console
from watchdog._sidecar_process import SidecarProcess
from watchdog.processor import WatchdogProcessor

__all__ = ["measure"]

CONCURRENT: Final = 100
SCRIPT: Final = "standin:tool=fetch_report;tool=fetch_report;reply=Done"

METHOD: Final = f"""\
Real `Runner.run` calls of an agent that calls a function tool twice and then answers
(three model calls, two tool calls, about ten spans per run), against the loopback
Responses stand-in (`watchdog/standin.py`) running in its own subprocess. A round starts
{CONCURRENT} runs at once on one event loop and times them until all have finished; runs
per second is {CONCURRENT} divided by that time. Rounds without any trace processor and
with `WatchdogProcessor` (sending to a real sidecar subprocess) alternate A B B A in one
process; the figure is the median over pairs of (with / without). Both sides run the
SDK's own span creation; the difference is what the watchdog adds."""


@contextmanager
def standin_process() -> Iterator[str]:
    """The Responses stand-in in a subprocess; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "watchdog.standin", "--port", "0"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the stand-in did not start: {url!r}")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def build_agent(client: AsyncOpenAI) -> Agent[Any]:
    """An Analyst with one function tool; the stand-in makes it call the tool twice."""

    async def fetch_report(topic: str) -> str:
        return f"report on {topic}"

    tool = function_tool(fetch_report, description_override="Fetch a report.")
    model = OpenAIResponsesModel(model=SCRIPT, openai_client=client)
    return Agent(name="Analyst", instructions="Analyse.", model=model, tools=[tool])


async def _round(agent: Agent[Any]) -> tuple[float, float]:
    """(runs per second, runs per CPU second of this process, all its threads)."""
    begin, cpu = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(Runner.run(agent, "Go.") for _ in range(CONCURRENT)))
    elapsed, used = time.perf_counter() - begin, time.process_time() - cpu
    if any(result.final_output != "Done" for result in results):
        raise RuntimeError("a run did not finish as scripted")
    return CONCURRENT / elapsed, CONCURRENT / used


Pair = tuple[tuple[float, float], tuple[float, float]]


async def _rounds(url: str, processor: WatchdogProcessor, pairs: int) -> list[Pair]:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)
    agent = build_agent(client)
    try:
        set_trace_processors([])
        await _round(agent)  # warm-up: connections, imports, caches
        set_trace_processors([processor])
        await _round(agent)
        found: list[Pair] = []
        for index in range(pairs):
            order = (False, True) if index % 2 == 0 else (True, False)
            rates: dict[bool, tuple[float, float]] = {}
            for watched in order:
                set_trace_processors([processor] if watched else [])
                processor.force_flush(2.0)
                rates[watched] = await _round(agent)
            found.append((rates[False], rates[True]))
        return found
    finally:
        set_trace_processors([])
        await client.close()


def measure(quick: bool) -> Section:
    """The whole-runs section."""
    pairs = 5 if quick else 30
    section = Section("whole_runs", "Whole agent runs", METHOD)
    with SidecarProcess() as sidecar, standin_process() as url:
        processor = WatchdogProcessor(sidecar.url, service="bench-runs")
        try:
            found = asyncio.run(_rounds(url, processor, pairs))
        finally:
            processor.shutdown()
        dropped = processor.dropped_events
    ratios = [watched[0] / bare[0] for bare, watched in found]
    cpu_ratios = [watched[1] / bare[1] for bare, watched in found]
    bare = statistics.median(b[0] for b, _ in found)
    watched = statistics.median(w[0] for _, w in found)
    quartiles = statistics.quantiles(ratios, n=4)
    section.add(
        Figure(
            f"runs/s with watchdog / without, {CONCURRENT} concurrent",
            statistics.median(ratios),
            "x",
            0.99,
            at_most=False,
            context=f"{watched:,.0f} vs {bare:,.0f} runs/s; ratio quartiles "
            f"{quartiles[0]:.3f}-{quartiles[2]:.3f} over {pairs} pairs",
            digits=3,
        )
    )
    section.add(
        Figure(
            "runs per CPU-second with watchdog / without",
            statistics.median(cpu_ratios),
            "x",
            context="CPU time of the app process (all threads, the sender's included): "
            "steadier than wall time when other processes share the cores",
            digits=3,
        )
    )
    section.notes.append(f"events dropped by the processor: {dropped}")
    return section


def main(argv: list[str] | None = None) -> int:
    """Run this section alone."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("openai.agents").setLevel(logging.ERROR)
    print(render_console(measure(args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
