"""An agent app, run as its own process, in which one kind of span hangs until the
watchdog cancels it — one row of the abort table in docs/abort.md each.

    python -m tests.abort_app ROW SIDECAR_URL STANDIN_URL

It prints ``running`` as it starts, then one JSON line: what the caller of
``Runner.run`` / ``Runner.run_sync`` / ``stream_events()`` saw (``outcome`` is the
exception's class name, or ``result``), and exits 0. No ``abortable()`` anywhere: the
promise is that a plain call sees ``RunAborted`` and never a bare ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sys
from typing import Any

from agents import (
    Agent,
    GuardrailFunctionOutput,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    handoff,
    input_guardrail,
)
from openai import AsyncOpenAI

from tests.mcp_server import stdio_params
from watchdog.processor import aborted, install

ROWS = (
    "response",
    "sub-agent",
    "function",
    "mcp",
    "guardrail",
    "handoff",
    "streamed-response",
    "streamed-function",
    "run-sync-pool",
    "container",
)


def model(client: AsyncOpenAI, *steps: str) -> OpenAIResponsesModel:
    return OpenAIResponsesModel(model="standin:" + ";".join(steps), openai_client=client)


async def forever() -> None:
    await asyncio.Event().wait()


@function_tool
async def fetch_report(topic: str) -> str:
    """Fetch a report (never comes back)."""
    await forever()
    return "never"


def agent_for(row: str, client: AsyncOpenAI) -> Agent[Any]:
    if row in ("response", "streamed-response", "run-sync-pool"):
        return Agent(name="Solo", instructions="x", model=model(client, "hang"))
    if row == "sub-agent":
        researcher = Agent(name="Researcher", instructions="x", model=model(client, "hang"))
        return Agent(
            name="Coordinator",
            instructions="x",
            model=model(client, "tool=ask_researcher", "reply=Briefing"),
            tools=[researcher.as_tool(tool_name="ask_researcher", tool_description="Ask.")],
        )
    if row in ("function", "streamed-function", "container"):
        return Agent(
            name="Analyst",
            instructions="x",
            model=model(client, "tool=fetch_report", "reply=Done"),
            tools=[fetch_report],
        )
    if row == "guardrail":

        @input_guardrail
        async def screen(ctx: Any, agent: Any, prompt: Any) -> GuardrailFunctionOutput:
            await forever()
            return GuardrailFunctionOutput(output_info=None, tripwire_triggered=False)

        return Agent(
            name="Screened",
            instructions="x",
            model=model(client, "reply=Fine"),
            input_guardrails=[screen],
        )
    if row == "handoff":

        async def on_handoff(ctx: Any) -> None:
            await forever()

        billing = Agent(name="Billing", instructions="x", model=model(client, "reply=Paid"))
        return Agent(
            name="Triage",
            instructions="x",
            model=model(client, "handoff=Billing"),
            handoffs=[handoff(billing, on_handoff=on_handoff)],
        )
    raise SystemExit(f"unknown row {row!r}; rows: {', '.join(ROWS)}")


def outcome(error: BaseException | None, **more: Any) -> str:
    seen = "result" if error is None else type(error).__name__
    return json.dumps({"outcome": seen, "detail": "" if error is None else str(error), **more})


async def run_row(row: str, standin: str) -> str:
    client = AsyncOpenAI(base_url=f"{standin}/v1", api_key="x", max_retries=0)
    if row == "mcp":
        return await run_mcp(client)
    agent = agent_for(row, client)
    if row.startswith("streamed"):
        result = Runner.run_streamed(agent, "Go.")
        try:
            async for _ in result.stream_events():
                pass
        except BaseException as exc:  # what the caller sees is the point
            return outcome(exc, on_result=str(aborted(result)))
        return outcome(None, on_result=str(aborted(result)), final=str(result.final_output))
    if row == "run-sync-pool":
        # A Django-style sync view: a worker thread of a pool calls run_sync and catches
        # what `except Exception` catches.
        def view() -> str:
            try:
                Runner.run_sync(agent, "Go.")
            except Exception as exc:
                return outcome(exc)
            return outcome(None)

        with concurrent.futures.ThreadPoolExecutor(thread_name_prefix="django-view") as pool:
            return await asyncio.wrap_future(pool.submit(view))
    try:
        finished = await Runner.run(agent, "Go.")
    except BaseException as exc:
        return outcome(exc)
    return outcome(None, final=str(finished.final_output))


async def run_mcp(client: AsyncOpenAI) -> str:
    from agents.mcp import MCPServerStdio

    server = MCPServerStdio(
        params=stdio_params(),
        name="reports",
        client_session_timeout_seconds=120,
    )
    async with server:
        agent = Agent(
            name="Librarian",
            instructions="x",
            model=model(client, "tool=stall", "reply=Done"),
            mcp_servers=[server],
        )
        try:
            result = await Runner.run(agent, "Go.")
        except BaseException as exc:
            return outcome(exc)
        return outcome(None, final=str(result.final_output))


def main() -> None:
    row, sidecar, standin = sys.argv[1:4]
    install(url=sidecar, service="abort-app", replace_default=True)
    print("running", flush=True)
    print(asyncio.run(run_row(row, standin)), flush=True)


if __name__ == "__main__":
    main()
