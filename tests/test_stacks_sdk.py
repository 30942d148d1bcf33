"""Where is it stuck, in a real SDK app: the hung span's in-process stack, as the sidecar
reports it, reaches the line that waits — through streaming, MCP, guardrails, handoffs,
``run_sync`` in a pool thread, and a tool's ``asyncio.to_thread``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents import (
    Agent,
    GuardrailFunctionOutput,
    RunContextWrapper,
    Runner,
    TResponseInputItem,
    handoff,
    input_guardrail,
)
from agents.mcp import MCPServerStdio, MCPServerStdioParams
from openai import AsyncOpenAI

from tests.agents_app import AppRun, Gate, agent_with_tool, model, single_agent
from tests.conftest import spans, thresholds, wait_until
from tests.launcher import SidecarProcess
from watchdog.processor import WatchdogProcessor
from watchdog.standin import DEFAULT_REPLY, StandInServer

Factory = Callable[..., SidecarProcess]
Watch = Callable[..., WatchdogProcessor]
MCP_SERVER = Path(__file__).with_name("mcp_server.py")
TIMEOUT = 20.0


def hung_span(sidecar: SidecarProcess, kind: str) -> dict[str, Any]:
    """The first hung span of ``kind`` (``GET /v1/spans``), once the sidecar has its
    in-process stack."""
    span = wait_until(
        lambda: next((s for s in spans(sidecar, state="hung", kind=kind) if s["stack"]), None)
    )
    assert span["stack_source"] == "in-process", span
    return span


def hung_stack(sidecar: SidecarProcess, kind: str) -> str:
    """The in-process stack of the first hung span of ``kind``."""
    stack: str = hung_span(sidecar, kind)["stack"]
    return stack


def in_order(stack: str, *texts: str) -> None:
    """Each of ``texts`` appears in ``stack``, below the one before."""
    position = 0
    for text in texts:
        found = stack.find(text, position)
        assert found >= 0, f"{text!r} not found below position {position} in:\n{stack}"
        position = found + len(text)


def frame_shown(stack: str, function: str, source: str) -> None:
    """``stack`` has a frame of ``function`` whose source line is ``source``."""
    lines = stack.splitlines()
    assert any(
        line.endswith(f", in {function}") and following.strip() == source
        for line, following in zip(lines, lines[1:], strict=False)
    ), f"no frame of {function} at {source!r} in:\n{stack}"


class StreamedRun(AppRun):
    """``Runner.run_streamed`` consumed through ``stream_events()``, in its own thread."""

    async def _run(self) -> Any:
        self.loop = asyncio.get_running_loop()
        client = AsyncOpenAI(base_url=f"{self.standin.url}/v1", api_key="test", max_retries=0)
        try:
            result = Runner.run_streamed(self.build(client), self.prompt, max_turns=30)
            async for _event in result.stream_events():
                pass
            return result.final_output
        finally:
            await client.close()


class McpRun(AppRun):
    """A run whose agent uses the stdio MCP server of ``tests/mcp_server.py``, connected
    around the run. ``stop()`` cancels the run (a stalled MCP tool never returns), which
    closes the server."""

    def __init__(self, standin: StandInServer, *steps: str) -> None:
        super().__init__(standin, self._agent)
        self.steps = steps
        self.server: MCPServerStdio | None = None
        self.task: asyncio.Task[Any] | None = None

    def _agent(self, client: AsyncOpenAI) -> Agent[Any]:
        assert self.server is not None
        return Agent(
            name="Librarian",
            instructions="Look it up.",
            model=model(client, *self.steps),
            mcp_servers=[self.server],
        )

    async def _run(self) -> Any:
        self.task = asyncio.current_task()
        params = MCPServerStdioParams(command=sys.executable, args=[str(MCP_SERVER)])
        async with MCPServerStdio(
            params=params, name="reports", client_session_timeout_seconds=120
        ) as server:
            self.server = server
            return await super()._run()

    def stop(self) -> None:
        assert self.loop is not None and self.task is not None
        self.loop.call_soon_threadsafe(self.task.cancel)
        assert self.done.wait(TIMEOUT), "the MCP run did not end when cancelled"


def test_a_stream_stalled_mid_response_shows_the_socket_read(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(thresholds(response=1.5))
    watch(sidecar.url)
    run = StreamedRun(standin, single_agent("hang")).start()
    try:
        stack = hung_stack(sidecar, "response")
        # From the run loop's `async for` over the model's events, through the SDK's
        # and the OpenAI client's async generators, down to the read of the SSE body.
        in_order(
            stack,
            "in run_single_turn_streamed",
            "async for event in model_events:",
            "agents/models/openai_responses.py",
            "openai/_streaming.py",
            "http11.py",  # httpcore (or httpcore2, which this openai uses) reading the body
            "in _receive_event",
            "_backends/anyio.py",
            "in read",
            "anyio/_backends/_asyncio.py",
            "in receive",
        )
        frame_shown(stack, "run_single_turn_streamed", "async for event in model_events:")
    finally:
        standin.release()
    assert run.wait() == DEFAULT_REPLY


def test_a_stalled_mcp_tool_shows_the_sessions_wait_for_its_response(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(thresholds(function=1.5))
    watch(sidecar.url)
    run = McpRun(standin, "tool=lookup", "tool=stall", "reply=Done")
    run.start()
    try:
        span = hung_span(sidecar, "function")
        # The stand-in asks for `stall` only once `lookup`'s answer came back.
        assert span["name"] == "stall", span
        stack = span["stack"]
        # The SDK awaits asyncio.wait() on a task calling the MCP ClientSession; the
        # stack follows into that task and down to the session waiting for its answer.
        in_order(
            stack,
            "agents/mcp/util.py",
            "in invoke_mcp_tool",
            "await asyncio.wait(",
            "  -> awaiting 'Task-",
            "agents/mcp/server.py",
            "mcp/client/session.py",
            "in send_request",
            "mcp/shared/",
            "anyio/",
            "await fut",
        )
    finally:
        run.stop()
    assert isinstance(run.error, asyncio.CancelledError)


def test_a_hung_input_guardrail_shows_its_awaiting_line(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    gate = Gate()

    @input_guardrail
    async def screen(
        ctx: RunContextWrapper[Any], agent: Agent[Any], prompt: str | list[TResponseInputItem]
    ) -> GuardrailFunctionOutput:
        await gate.wait()  # the screening service never answers
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered=False)

    def build(client: AsyncOpenAI) -> Agent[Any]:
        return Agent(
            name="Screened",
            instructions="Answer.",
            model=model(client, "reply=Fine"),
            input_guardrails=[screen],
        )

    sidecar = sidecar_factory(thresholds(guardrail=1.5))
    watch(sidecar.url)
    run = AppRun(standin, build).start()
    try:
        stack = hung_stack(sidecar, "guardrail")
        frame_shown(stack, "screen", "await gate.wait()  # the screening service never answers")
        # Who waits on it: the run, through asyncio.wait and as_completed.
        in_order(
            stack,
            "in _run_impl",
            "in run_input_guardrails",
            "(the span's task):",
            "in screen",
            "tests/agents_app.py",
            "await self._event.wait()",
        )
    finally:
        gate.open()
    assert run.wait() == "Fine"


def test_a_hung_on_handoff_shows_its_awaiting_line(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    gate = Gate()

    async def on_handoff(ctx: RunContextWrapper[Any]) -> None:
        await gate.wait()  # loading the customer's account never finishes

    def build(client: AsyncOpenAI) -> Agent[Any]:
        billing = Agent(name="Billing", instructions="Bill.", model=model(client, "reply=Paid"))
        return Agent(
            name="Triage",
            instructions="Route.",
            model=model(client, "handoff=Billing"),
            handoffs=[handoff(billing, on_handoff=on_handoff)],
        )

    sidecar = sidecar_factory(thresholds(handoff=1.5))
    watch(sidecar.url)
    run = AppRun(standin, build).start()
    try:
        stack = hung_stack(sidecar, "handoff")
        frame_shown(
            stack,
            "on_handoff",
            "await gate.wait()  # loading the customer's account never finishes",
        )
        in_order(stack, "in on_handoff", "await self._event.wait()")
    finally:
        gate.open()
    assert run.wait() == "Paid"


def test_run_sync_in_a_pool_thread_names_the_thread(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(thresholds(response=1.5))
    watch(sidecar.url)

    def view() -> Any:
        """A sync web view: ``run_sync`` on a worker thread, with a loop of its own."""
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # run_sync runs on the thread's default loop
        client = AsyncOpenAI(base_url=f"{standin.url}/v1", api_key="test", max_retries=0)
        try:
            return Runner.run_sync(single_agent("hang")(client), "Go.").final_output
        finally:
            loop.run_until_complete(client.close())
            asyncio.set_event_loop(None)
            loop.close()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sync-view") as pool:
        answer = pool.submit(view)
        try:
            stack = hung_stack(sidecar, "response")
            in_order(
                stack,
                "Task ",
                "in run_single_turn",
                "_backends/anyio.py",
                "Thread 'sync-view_0' (now, most recent call last):",
                "concurrent/futures/thread.py",
                "in view",
                "in run_sync",
                "in run_until_complete",
            )
        finally:
            standin.release()
        assert answer.result(TIMEOUT) == DEFAULT_REPLY


def test_a_tool_blocked_in_to_thread_names_the_worker_and_its_line(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    release = threading.Event()

    def read_legacy_report() -> str:
        release.wait(TIMEOUT)  # the legacy client blocks
        return "report"

    async def body() -> str:
        return await asyncio.to_thread(read_legacy_report)

    sidecar = sidecar_factory(thresholds(function=1.5))
    watch(sidecar.url)
    run = AppRun(standin, agent_with_tool(("tool=fetch_report", "reply=Done"), body)).start()
    try:
        stack = hung_stack(sidecar, "function")
        in_order(
            stack,
            "in body",
            "in to_thread",
            "  -> running in thread 'asyncio_",
            "concurrent/futures/thread.py",
            "in read_legacy_report",
        )
        frame_shown(
            stack, "read_legacy_report", "release.wait(TIMEOUT)  # the legacy client blocks"
        )
    finally:
        release.set()
    assert run.wait() == "Done"
