"""A small openai-agents app for the end-to-end tests, run in a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from agents import Agent, OpenAIResponsesModel, Runner, function_tool
from openai import AsyncOpenAI

from watchdog.processor import abortable
from watchdog.standin import StandInServer


class AppRun:
    """One ``Runner.run`` (or any coroutine) in its own thread and event loop."""

    def __init__(
        self,
        standin: StandInServer,
        build: Callable[[AsyncOpenAI], Agent[Any]],
        prompt: str = "Go.",
        guarded: bool = False,
        max_retries: int = 0,
        streamed: bool = False,
    ) -> None:
        self.standin = standin
        self.build = build
        self.prompt = prompt
        self.guarded = guarded  # run inside watchdog.processor.abortable()
        self.max_retries = max_retries  # the OpenAI client's own retries
        self.streamed = streamed  # Runner.run_streamed, consumed to the end
        self.result: Any = None
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._main, name="agents-app", daemon=True)

    def start(self) -> AppRun:
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            self.result = asyncio.run(self._run())
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    async def _run(self) -> Any:
        self.loop = asyncio.get_running_loop()
        client = AsyncOpenAI(
            base_url=f"{self.standin.url}/v1", api_key="test", max_retries=self.max_retries
        )
        try:
            if self.streamed:
                streamed = Runner.run_streamed(self.build(client), self.prompt, max_turns=30)
                async for _ in streamed.stream_events():
                    pass
                return streamed.final_output
            if self.guarded:
                async with abortable():
                    result = await Runner.run(self.build(client), self.prompt, max_turns=30)
            else:
                result = await Runner.run(self.build(client), self.prompt, max_turns=30)
            return result.final_output
        finally:
            await client.close()

    def wait(self, timeout: float = 20.0) -> Any:
        """The run's final output; raises what the run raised."""
        if not self.done.wait(timeout):
            raise TimeoutError("the agent run did not finish")
        if self.error is not None:
            raise self.error
        return self.result


def model(client: AsyncOpenAI, *steps: str) -> OpenAIResponsesModel:
    """A model whose behaviour the stand-in takes from ``steps``."""
    return OpenAIResponsesModel(model="standin:" + ";".join(steps), openai_client=client)


class Gate:
    """An asyncio event that a test thread can open: a tool that hangs until told."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def wait(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self.entered.set()
        await self._event.wait()

    def open(self) -> None:
        assert self._loop is not None and self._event is not None
        self._loop.call_soon_threadsafe(self._event.set)


def coordinator_with_researcher(
    researcher_steps: tuple[str, ...], coordinator_steps: tuple[str, ...] = ()
) -> Callable[[AsyncOpenAI], Agent[Any]]:
    """A Coordinator that asks a Researcher sub-agent (as a tool)."""

    def build(client: AsyncOpenAI) -> Agent[Any]:
        researcher = Agent(
            name="Researcher", instructions="Research.", model=model(client, *researcher_steps)
        )
        return Agent(
            name="Coordinator",
            instructions="Coordinate.",
            model=model(client, *(coordinator_steps or ("tool=ask_researcher", "reply=Briefing"))),
            tools=[researcher.as_tool(tool_name="ask_researcher", tool_description="Ask.")],
        )

    return build


def agent_with_tool(
    steps: tuple[str, ...], body: Callable[[], Awaitable[str]], tool_name: str = "fetch_report"
) -> Callable[[AsyncOpenAI], Agent[Any]]:
    """An Analyst agent with one function tool whose body is ``body``."""

    async def tool_body(topic: str) -> str:
        return await body()

    tool = function_tool(tool_body, name_override=tool_name, description_override="Fetch.")

    def build(client: AsyncOpenAI) -> Agent[Any]:
        return Agent(
            name="Analyst", instructions="Analyse.", model=model(client, *steps), tools=[tool]
        )

    return build


def single_agent(*steps: str) -> Callable[[AsyncOpenAI], Agent[Any]]:
    """One agent, no tools: its own model call does what ``steps`` say."""

    def build(client: AsyncOpenAI) -> Agent[Any]:
        return Agent(name="Solo", instructions="Answer.", model=model(client, *steps))

    return build
