"""An agent app run as its own process for the abort tests.

    python -m tests.app_process SCENARIO SIDECAR_URL STANDIN_URL

Scenarios: ``blocking`` — a tool blocks the event loop with ``time.sleep`` (cancel
cannot work); ``stubborn`` — the same, and SIGTERM is ignored. Prints ``running`` once
the run has started, then never finishes on its own.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from agents import Agent, OpenAIResponsesModel, Runner, function_tool
from openai import AsyncOpenAI

from watchdog.processor import abortable, install


@function_tool
async def crunch(topic: str) -> str:
    """Crunch numbers (with sync code that blocks the event loop)."""
    print("running", flush=True)
    time.sleep(600)  # noqa: ASYNC251 - blocking the loop is the point of this scenario
    return "never"


async def main(scenario: str, sidecar: str, standin: str) -> None:
    if scenario == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    install(url=sidecar, service="worker", replace_default=True)
    client = AsyncOpenAI(base_url=f"{standin}/v1", api_key="test", max_retries=0)
    agent = Agent(
        name="Cruncher",
        instructions="Crunch.",
        model=OpenAIResponsesModel(model="standin:tool=crunch;reply=Done", openai_client=client),
        tools=[crunch],
    )
    async with abortable():
        await Runner.run(agent, "Go.")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
