"""The agent apps the demo runs: the Coordinator and its Researcher (in the demo's own
process), and the two app processes of part three (``worker``, ``untraced``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from watchdog._sidecar_process import SidecarProcess
    from watchdog.processor import WatchdogProcessor

__all__ = [
    "COORDINATOR_SCRIPT",
    "RESEARCHER_SCRIPT",
    "ask_solo",
    "build_app",
    "solo_agent",
    "untraced",
    "watched",
    "worker",
]

RESEARCHER_SCRIPT = "standin:hang"
COORDINATOR_SCRIPT = "standin:tool=check_facts*6;tool=ask_researcher;reply=Here is your briefing."


def build_app(model_client: Any, researcher_script: str = RESEARCHER_SCRIPT) -> Any:
    """The demo's agents: a Coordinator using a Researcher sub-agent and a tool. The
    Researcher's model follows ``researcher_script`` (by default: it hangs)."""
    from agents import Agent, OpenAIResponsesModel, function_tool

    def model(script: str) -> OpenAIResponsesModel:
        return OpenAIResponsesModel(model=script, openai_client=model_client)

    @function_tool
    async def check_facts(claim: str) -> str:
        """Check a claim against the fact base."""
        await asyncio.sleep(0.05)
        return "confirmed"

    researcher = Agent(
        name="Researcher",
        instructions="Research the question thoroughly.",
        model=model(researcher_script),
    )
    return Agent(
        name="Coordinator",
        instructions="Answer with help from your researcher.",
        model=model(COORDINATOR_SCRIPT),
        tools=[
            check_facts,
            researcher.as_tool(
                tool_name="ask_researcher", tool_description="Ask the Researcher a question."
            ),
        ],
    )


def solo_agent(name: str, script: str, model_client: Any) -> Any:
    """An agent with no tools whose model follows the stand-in's ``script``."""
    from agents import Agent, OpenAIResponsesModel

    return Agent(
        name=name,
        instructions="Answer.",
        model=OpenAIResponsesModel(model=script, openai_client=model_client),
    )


async def ask_solo(standin_url: str, name: str, script: str, max_retries: int = 0) -> str:
    """Ask a :func:`solo_agent` on the stand-in at ``standin_url`` to summarise the
    backlog; returns its answer (raises what the run raises)."""
    from agents import Runner
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{standin_url}/v1", api_key="demo", max_retries=max_retries)
    try:
        result = await Runner.run(solo_agent(name, script, client), "Summarise the backlog.")
        return str(result.final_output)
    finally:
        await client.close()


@contextmanager
def watched(config: str) -> Iterator[tuple[SidecarProcess, WatchdogProcessor]]:
    """A sidecar started with ``config``, and this process's runs traced to it alone
    (the processor replaces the SDK's own), as service ``demo-app``."""
    from agents.tracing import set_trace_processors

    from watchdog._sidecar_process import SidecarProcess
    from watchdog.processor import WatchdogProcessor

    with SidecarProcess(config) as sidecar:
        processor = WatchdogProcessor(sidecar.url, service="demo-app")
        set_trace_processors([processor])
        yield sidecar, processor


def untraced(sidecar_url: str, standin_url: str) -> None:
    """The process of step 10: tracing off (by the environment), a model call that hangs."""
    from agents import Runner
    from openai import AsyncOpenAI

    from watchdog.processor import install

    async def run() -> None:
        install(url=sidecar_url, service="demo-untraced")
        client = AsyncOpenAI(base_url=f"{standin_url}/v1", api_key="demo", max_retries=0)
        await Runner.run(solo_agent("Unseen", "standin:hang", client), "Summarise the backlog.")

    asyncio.run(run())


def worker(sidecar_url: str, standin_url: str) -> None:
    """The process of part two's step 9: its only tool blocks the event loop."""
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool
    from openai import AsyncOpenAI

    from watchdog.processor import install

    @function_tool
    async def crunch_numbers(quarter: str) -> str:
        """Crunch the quarter's numbers."""
        time.sleep(600)  # noqa: ASYNC251 - sync code in an async tool: the bug shown here
        return "done"

    async def run() -> None:
        install(url=sidecar_url, service="demo-worker", replace_default=True)
        client = AsyncOpenAI(base_url=f"{standin_url}/v1", api_key="demo", max_retries=0)
        agent = Agent(
            name="Cruncher",
            instructions="Crunch.",
            model=OpenAIResponsesModel(
                model="standin:tool=crunch_numbers;reply=Done", openai_client=client
            ),
            tools=[crunch_numbers],
        )
        await Runner.run(agent, "Crunch Q3.")

    asyncio.run(run())
