"""An agent app run as its own process for the abort tests.

    python -m tests.app_process SCENARIO SIDECAR_URL STANDIN_URL

Scenarios: ``blocking`` — a tool blocks the event loop with ``time.sleep`` (cancel
cannot work); ``stubborn`` — the same, and SIGTERM is ignored. Both print ``running``
once the run has started, then never finish on their own. ``cancel`` — two runs at
once, one whose model call hangs and one healthy; prints ``running``, then one line
per run (``aborted: …``, ``healthy: …``) and exits 0. ``quick`` — one short run, then
a normal exit (the SDK's exit handler shuts the processor down). ``hang`` — a
Coordinator asks a Researcher sub-agent (agent as tool) whose model call never returns.
``sleepy`` — an async tool calls ``time.sleep(30)``, blocking the event loop.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from agents import (
    Agent,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from watchdog.processor import RunAborted, abortable, install


@function_tool
async def crunch(topic: str) -> str:
    """Crunch numbers (with sync code that blocks the event loop)."""
    print("running", flush=True)
    time.sleep(600)  # noqa: ASYNC251 - blocking the loop is the point of this scenario
    return "never"


@function_tool
async def nap(topic: str) -> str:
    """Take a nap (sync sleep inside async code)."""
    print("running", flush=True)
    time.sleep(30)  # noqa: ASYNC251 - the blocked event loop is what the test looks for
    return "rested"


def model(client: AsyncOpenAI, script: str) -> OpenAIResponsesModel:
    """A stand-in model that follows ``script``."""
    return OpenAIResponsesModel(model=script, openai_client=client)


async def hung_model_call(client: AsyncOpenAI) -> None:
    """A Coordinator whose Researcher sub-agent's model call never returns."""
    researcher = Agent(name="Researcher", instructions="x", model=model(client, "standin:hang"))
    coordinator = Agent(
        name="Coordinator",
        instructions="x",
        model=model(client, "standin:tool=ask_researcher;reply=Briefing"),
        tools=[researcher.as_tool(tool_name="ask_researcher", tool_description="Ask.")],
    )
    print("running", flush=True)
    await Runner.run(coordinator, "Go.")


async def two_runs(client: AsyncOpenAI) -> None:
    """A hung run (aborted by the watchdog) beside a healthy one in the same loop."""

    @function_tool
    async def fetch(topic: str) -> str:
        """Fetch a chunk."""
        await asyncio.sleep(0.3)
        return "chunk"

    stuck = Agent(name="Stuck", instructions="x", model=model(client, "standin:hang"))
    healthy = Agent(
        name="Healthy",
        instructions="x",
        tools=[fetch],
        model=model(client, "standin:" + "tool=fetch;" * 10 + "reply=Healthy"),
    )

    async def guarded(agent: Agent[None], label: str) -> str:
        try:
            async with abortable():
                result = await Runner.run(agent, "Go.", max_turns=30)
            return f"{label}: {result.final_output}"
        except RunAborted as exc:
            return f"aborted: {exc}"

    print("running", flush=True)
    for line in await asyncio.gather(guarded(stuck, "stuck"), guarded(healthy, "healthy")):
        print(line, flush=True)


async def main(scenario: str, sidecar: str, standin: str) -> None:
    if scenario == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    install(url=sidecar, service="worker", replace_default=True)
    client = AsyncOpenAI(base_url=f"{standin}/v1", api_key="test", max_retries=0)
    if scenario == "cancel":
        await two_runs(client)
        await client.close()
        return
    if scenario == "hang":
        await hung_model_call(client)
        return
    if scenario.startswith("blind-"):
        # Tracing switched off the three ways users do it (blind-env: by the test's
        # OPENAI_AGENTS_DISABLE_TRACING=1); the model call then hangs unseen.
        if scenario == "blind-global":
            set_tracing_disabled(True)
        config = RunConfig(tracing_disabled=scenario == "blind-run")
        agent = Agent(name="Unseen", instructions="x", model=model(client, "standin:hang"))
        print("running", flush=True)
        await Runner.run(agent, "Go.", run_config=config)
        return
    if scenario == "quick":
        quick = Agent(
            name="Quick",
            instructions="x",
            model=model(client, "standin:reply=ok"),
        )
        print("running", flush=True)
        await Runner.run(quick, "Go.")
        await client.close()
        return
    tool = nap if scenario == "sleepy" else crunch
    agent = Agent(
        name="Cruncher",
        instructions="Crunch.",
        model=model(client, f"standin:tool={tool.name};reply=Done"),
        tools=[tool],
    )
    async with abortable():
        await Runner.run(agent, "Go.")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
