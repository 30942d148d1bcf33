"""The Responses API stand-in, driven by the real openai-agents SDK over a loopback socket."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import agents
import httpx
import openai
import pytest
from agents import Agent, Runner, RunResult, function_tool
from agents.items import ToolCallOutputItem
from openai import AsyncOpenAI

from watchdog.standin import (
    DEFAULT_REPLY,
    StandInServer,
    count_tool_results,
    example_value,
    parse_script,
    script,
    select_step,
)

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(standin: StandInServer) -> StandInServer:
    """The stand-in (SDK globals are restored by conftest's autouse fixture)."""
    return standin


def run_with_client(srv: StandInServer, body: Callable[[], Awaitable[T]]) -> T:
    """Run ``body`` in a fresh event loop with an AsyncOpenAI client pointed at ``srv``."""

    async def go() -> T:
        client = AsyncOpenAI(base_url=srv.url + "/v1", api_key="standin", max_retries=0)
        agents.set_default_openai_client(client, use_for_tracing=False)
        agents.set_default_openai_api("responses")
        try:
            return await asyncio.wait_for(body(), timeout=8)
        finally:
            await client.close()

    return asyncio.run(go())


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    for _ in range(int(within / 0.01) + 1):
        if predicate():
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def test_script_helpers() -> None:
    steps = parse_script(script("tool=a*3", "handoff=Billing Desk", "slow=0.5", "hang", "reply=ok"))
    assert [s.kind for s in steps] == ["tool", "handoff", "slow", "hang", "reply"]
    assert steps[0].count == 3
    assert select_step(steps, 0) == steps[0]
    assert select_step(steps, 3) == steps[1]
    assert select_step(steps, 6) == steps[4]
    assert select_step(steps, 7) is None
    assert parse_script("gpt-4.1") == []
    with pytest.raises(ValueError, match="unknown step"):
        parse_script("standin:dance")
    items: list[dict[str, Any]] = [
        {"type": "function_call", "call_id": "1", "name": "transfer_to_b"},
        {"type": "function_call_output", "call_id": "0"},
        {"type": "function_call_output", "call_id": "1"},
        {"type": "function_call_output", "call_id": "2"},
    ]
    assert count_tool_results(items) == 1
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "n": {"anyOf": [{"type": "null"}, {"type": "number"}]},
            "o": {"$ref": "#/$defs/O"},
            "skip": {"type": "string"},
        },
        "required": ["s", "n", "o"],
        "$defs": {
            "O": {"type": "object", "properties": {"b": {"type": "boolean"}}, "required": ["b"]}
        },
    }
    assert example_value(schema) == {"s": "x", "n": 1, "o": {"b": True}}


def test_plain_reply(server: StandInServer) -> None:
    agent = Agent(name="Plain", instructions="Say hi.", model=script("reply=Hello there"))
    result = run_with_client(server, lambda: Runner.run(agent, "hi"))
    assert result.final_output == "Hello there"
    assert server.requests == 1
    past_end = Agent(name="Plain", model="gpt-4.1")
    assert run_with_client(server, lambda: Runner.run(past_end, "hi")).final_output == DEFAULT_REPLY


def test_agent_as_tool(server: StandInServer) -> None:
    researcher = Agent(name="Researcher", model=script("reply=Research notes"))
    coordinator = Agent(
        name="Coordinator",
        model=script("tool=ask_researcher", "reply=Final answer"),
        tools=[
            researcher.as_tool(tool_name="ask_researcher", tool_description="Ask the researcher.")
        ],
    )
    result = run_with_client(server, lambda: Runner.run(coordinator, "question"))
    assert result.final_output == "Final answer"
    outputs = [item.output for item in result.new_items if isinstance(item, ToolCallOutputItem)]
    assert outputs == ["Research notes"]
    assert server.requests == 3


def test_parallel_function_tool(server: StandInServer) -> None:
    calls: list[tuple[str, int]] = []

    @function_tool
    def lookup(city: str, days: int) -> str:
        """Look up the weather for a city."""
        calls.append((city, days))
        return f"sunny in {city}"

    agent = Agent(
        name="Weather", model=script("tool=lookup*3", "reply=All looked up"), tools=[lookup]
    )
    result: RunResult = run_with_client(server, lambda: Runner.run(agent, "weather?"))
    assert result.final_output == "All looked up"
    assert calls == [("x", 1)] * 3
    first = result.raw_responses[0].output
    assert [getattr(item, "type", None) for item in first] == ["function_call"] * 3
    assert server.requests == 2


def test_handoff(server: StandInServer) -> None:
    billing = Agent(name="Billing Desk", model=script("reply=Billing here"))
    triage = Agent(name="Triage", model=script("handoff=Billing Desk"), handoffs=[billing])
    result = run_with_client(server, lambda: Runner.run(triage, "my invoice"))
    assert result.last_agent is billing
    assert result.final_output == "Billing here"


def test_streaming_run(server: StandInServer) -> None:
    @function_tool
    def ping(target: str) -> str:
        """Ping a target."""
        return "pong"

    agent = Agent(name="Streamer", model=script("tool=ping", "reply=Streamed reply"), tools=[ping])

    async def body() -> tuple[Any, list[str]]:
        streamed = Runner.run_streamed(agent, "go")
        kinds: list[str] = [
            event.data.type
            async for event in streamed.stream_events()
            if event.type == "raw_response_event"
        ]
        return streamed.final_output, kinds

    final_output, kinds = run_with_client(server, body)
    assert final_output == "Streamed reply"
    assert kinds.count("response.completed") == 2
    assert "response.function_call_arguments.done" in kinds
    assert "response.output_text.delta" in kinds


def test_hang_until_release(server: StandInServer) -> None:
    agent = Agent(name="Stuck", model=script("hang"))

    async def body() -> Any:
        task = asyncio.ensure_future(Runner.run(agent, "hello"))
        await wait_until(lambda: server.hanging == 1)
        done, _ = await asyncio.wait({task}, timeout=0.3)
        assert not done
        assert server.hanging == 1
        assert server.release() == 1
        assert server.hanging == 0
        return (await task).final_output

    assert run_with_client(server, body) == DEFAULT_REPLY


def test_streamed_hang_released_over_http(server: StandInServer) -> None:
    agent = Agent(name="Stuck", model=script("hang", "reply=unused"))

    async def body() -> Any:
        streamed = Runner.run_streamed(agent, "hello")

        async def consume() -> None:
            async for _ in streamed.stream_events():
                pass

        task = asyncio.ensure_future(consume())
        await wait_until(lambda: server.hanging == 1)
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/control/stats")).json() == {"requests": 1, "hanging": 1}
            assert (await http.post("/control/release")).json() == {"released": 1}
            await task
            assert (await http.get("/control/stats")).json() == {"requests": 1, "hanging": 0}
        return streamed.final_output

    assert run_with_client(server, body) == DEFAULT_REPLY


def test_bad_script_is_a_400(server: StandInServer) -> None:
    agent = Agent(name="Typo", model=script("repyl=oops"))
    with pytest.raises(openai.BadRequestError, match="unknown step"):
        run_with_client(server, lambda: Runner.run(agent, "hi"))


def test_exit_while_hanging() -> None:
    agent = Agent(name="Stuck", model=script("hang"))
    srv = StandInServer()
    srv.start()

    async def body() -> Any:
        task = asyncio.ensure_future(Runner.run(agent, "hello"))
        await wait_until(lambda: srv.hanging == 1)
        started = time.monotonic()
        srv.stop()  # blocks this loop; the server thread answers and shuts down meanwhile
        assert time.monotonic() - started < 3
        return (await task).final_output

    assert run_with_client(srv, body) == DEFAULT_REPLY
    assert srv.hanging == 0
    assert srv.standin.closed


def test_main_runs_in_foreground() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    with subprocess.Popen(
        [sys.executable, "-m", "watchdog.standin", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            assert httpx.get(url + "/control/stats").json() == {"requests": 0, "hanging": 0}
        finally:
            proc.terminate()
            assert proc.wait(timeout=5) == 0
            if proc.stdout is not None:
                proc.stdout.close()
