"""A worker process of the soak: SLOTS agent runs at a time, for SECONDS.

    python -m tests.soak_app SIDECAR_URL STANDIN_URL NAME SLOTS SECONDS PLAN

Each slot runs agent runs one after another. PLAN (JSON) names the faulty ones by
``"<slot>:<index>"``: ``hang`` (the model call never answers until the stand-in
releases it), ``stall`` (a tool awaits forever; its rule cancels it), ``wait`` (a tool
awaits forever; its rule only alerts) or ``block`` (a tool blocks the event loop with
``time.sleep(3.5)``). The others are healthy: a tool
call and a reply. Every run has the trace id ``trace_<NAME>s<slot>r<index>``, so the
checker can tell which run any finding is about.

Prints ``ready`` once the processor is installed, one JSON line per finished run
(``{"trace", "fault", "outcome", "started", "ended"}``, outcome ``ok``, ``aborted`` or
``error: ...``, times in epoch seconds),
and ``done`` when the last slot has finished. No slot starts a run after SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool
from openai import AsyncOpenAI

from watchdog.processor import RunAborted, abortable, install

STEPS = {
    "ok": "standin:tool=fetch;reply=done",
    "hang": "standin:hang",
    "stall": "standin:tool=stall_cancel;reply=done",
    "block": "standin:tool=crunch;reply=done",
    "wait": "standin:tool=wait_forever;reply=done",
}


@function_tool
async def fetch(topic: str) -> str:
    """Fetch a chunk of data."""
    await asyncio.sleep(0.05)
    return "chunk"


@function_tool
async def stall_cancel(topic: str) -> str:
    """A tool that never returns (its rule says: cancel)."""
    await asyncio.Event().wait()
    return "never"


@function_tool
async def wait_forever(topic: str) -> str:
    """A tool that never returns (its rule only alerts)."""
    await asyncio.Event().wait()
    return "never"


@function_tool
async def crunch(topic: str) -> str:
    """Sync code in an async tool: blocks the event loop."""
    time.sleep(3.5)  # noqa: ASYNC251 - the blocked loop is the injected fault
    return "crunched"


def trace_id(name: str, slot: int, index: int) -> str:
    """The trace id of one run."""
    return f"trace_{name}s{slot:03d}r{index:05d}"


async def run_one(client: AsyncOpenAI, name: str, slot: int, index: int, fault: str) -> None:
    agent: Agent[Any] = Agent(
        name="Worker",
        instructions="Work.",
        model=OpenAIResponsesModel(model=STEPS[fault], openai_client=client),
        tools=[fetch, stall_cancel, crunch, wait_forever],
    )
    outcome = "ok"
    started = time.time()
    try:
        async with abortable():
            await Runner.run(
                agent,
                "Go.",
                run_config=RunConfig(trace_id=trace_id(name, slot, index), workflow_name=fault),
            )
    except RunAborted:
        outcome = "aborted"
    except Exception as exc:
        outcome = f"error: {type(exc).__name__}: {exc}"[:200]
    record = {
        "trace": trace_id(name, slot, index),
        "fault": fault,
        "outcome": outcome,
        "started": started,
        "ended": time.time(),
    }
    print(json.dumps(record), flush=True)


async def main(
    sidecar: str, standin: str, name: str, slots: int, seconds: float, plan: str
) -> None:
    install(url=sidecar, service=f"soak-{name}", replace_default=True)
    faults: dict[str, str] = json.loads(plan)
    # Retries as apps do: a kept-alive connection the stand-in just closed is not a fault.
    client = AsyncOpenAI(base_url=f"{standin}/v1", api_key="test", max_retries=2)
    until = time.monotonic() + seconds
    print("ready", flush=True)

    async def slot(number: int) -> None:
        index = 0
        while time.monotonic() < until:
            fault = faults.get(f"{number}:{index}", "ok")
            await run_one(client, name, number, index, fault)
            index += 1

    await asyncio.gather(*(slot(number) for number in range(slots)))
    await client.close()
    print("done", flush=True)


if __name__ == "__main__":
    url, standin_url, worker, count, duration, faults_json = sys.argv[1:7]
    asyncio.run(main(url, standin_url, worker, int(count), float(duration), faults_json))
