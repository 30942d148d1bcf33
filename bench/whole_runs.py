"""Whole agent runs: throughput of real ``Runner.run`` calls with and without the watchdog.

The runs are real openai-agents runs (an agent that calls a function tool twice, then
answers: three model calls, two tool calls, about ten spans) against the loopback
Responses stand-in, which runs in a subprocess of its own so that it does not share
this process's GIL. A round starts 100 runs at once on one event loop and times them
all; rounds without a processor, with ``WatchdogProcessor`` (sending to a real sidecar
process) and with the earlier processor are interleaved in an order reversed every
round, so that drift on a noisy machine falls on all alike.
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
from agents.tracing import TracingProcessor
from openai import AsyncOpenAI

from bench import baseline
from bench.report import Figure, Section, render_console
from watchdog._sidecar_process import SidecarProcess
from watchdog.processor import WatchdogProcessor

__all__ = ["measure"]

CONCURRENT: Final = 100
SCRIPT: Final = "standin:tool=fetch_report;tool=fetch_report;reply=Done"

METHOD: Final = f"""\
Real `Runner.run` calls of an agent that calls a function tool twice and then answers
(three model calls, two tool calls, about ten spans per run), against the loopback
Responses stand-in (`watchdog/standin/`) running in its own subprocess. A round starts
{CONCURRENT} runs at once on one event loop and times them until all have finished; runs
per second is {CONCURRENT} divided by that time. Rounds without any trace processor, with
`WatchdogProcessor` (sending to a real sidecar subprocess) and with the processor as it
was before its sender worked in bulk (`bench/baseline.py`) are interleaved in one
process, in an order reversed every round; the figure is the median over rounds of
(with / without). Both sides run the
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


Rates = tuple[float, float]


async def _rounds(
    url: str, processors: dict[str, TracingProcessor | None], rounds: int
) -> dict[str, list[Rates]]:
    """(runs/s, runs per CPU second) per configuration and round, interleaved in an
    order that reverses every round (A B C, C B A, ...)."""
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)
    agent = build_agent(client)
    try:
        for processor in processors.values():  # warm-up: connections, imports, caches
            set_trace_processors([processor] if processor else [])
            await _round(agent)
        found: dict[str, list[Rates]] = {name: [] for name in processors}
        names = list(processors)
        for index in range(rounds):
            for name in names if index % 2 == 0 else names[::-1]:
                processor = processors[name]
                set_trace_processors([processor] if processor else [])
                if processor is not None:
                    processor.force_flush(2.0)  # type: ignore[call-arg]
                found[name].append(await _round(agent))
        return found
    finally:
        set_trace_processors([])
        await client.close()


def _ratios(found: dict[str, list[Rates]], name: str, of: str, which: int) -> list[float]:
    return [a[which] / b[which] for a, b in zip(found[name], found[of], strict=True)]


def measure(quick: bool) -> Section:
    """The whole-runs section."""
    rounds = 5 if quick else 30
    section = Section("whole_runs", "Whole agent runs", METHOD)
    with SidecarProcess() as sidecar, standin_process() as url:
        processor = WatchdogProcessor(sidecar.url, service="bench-runs")
        processors: dict[str, TracingProcessor | None] = {"none": None, "after": processor}
        before = baseline.load()
        if before is not None:
            processors["before"] = before.WatchdogProcessor(sidecar.url, service="bench-before")
        try:
            found = asyncio.run(_rounds(url, processors, rounds))
        finally:
            for each in processors.values():
                if each is not None:
                    each.shutdown()
        dropped = processor.dropped_events
    ratios = _ratios(found, "after", "none", 0)
    bare = statistics.median(r[0] for r in found["none"])
    watched = statistics.median(r[0] for r in found["after"])
    quartiles = statistics.quantiles(ratios, n=4)
    section.add(
        Figure(
            f"runs/s with watchdog / without, {CONCURRENT} concurrent",
            statistics.median(ratios),
            "x",
            0.99,
            at_most=False,
            context=f"{watched:,.0f} vs {bare:,.0f} runs/s; ratio quartiles "
            f"{quartiles[0]:.3f}-{quartiles[2]:.3f} over {rounds} rounds",
            digits=3,
        )
    )
    section.add(
        Figure(
            "runs per CPU-second with watchdog / without",
            statistics.median(_ratios(found, "after", "none", 1)),
            "x",
            context="CPU time of the app process (all threads, the sender's included): "
            "steadier than wall time when other processes share the cores",
            digits=3,
        )
    )
    if "before" in found:
        section.add(
            Figure(
                "runs/s with the earlier processor / without (for comparison)",
                statistics.median(_ratios(found, "before", "none", 0)),
                "x",
                context=f"the processor at {baseline.BEFORE}, in the same rounds",
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
