"""A FastAPI app whose endpoint runs an agent, watched by agents-watchdog.

uvicorn main:app --port 8000
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agents import Agent, Runner
from fastapi import FastAPI, HTTPException

from watchdog.processor import RunAborted, abortable, install

# AGENT_MODEL picks the model; with the local stand-in for the Responses API
# (OPENAI_BASE_URL=http://127.0.0.1:8787/v1), "standin:hang" makes every call hang.
briefer = Agent(
    name="Briefer",
    instructions="Brief the user on the topic in three sentences.",
    model=os.environ.get("AGENT_MODEL", "gpt-4.1-mini"),
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Install the watchdog's processor once per worker process, before any request."""
    # AGENTS_WATCHDOG_URL / AGENTS_WATCHDOG_SERVICE set the sidecar and the service name.
    # replace_default=True watches spans without also exporting traces to OpenAI.
    install(service="fastapi-example", replace_default=True)
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/brief")
async def brief(topic: str = "hang detection") -> dict[str, object]:
    """The agent's answer; 503 when the watchdog aborted the stuck run."""
    try:
        # abortable(): a cancel from the watchdog (a rule with action = "cancel")
        # arrives as RunAborted here, not as a bare CancelledError.
        async with abortable():
            result = await Runner.run(briefer, f"Brief me on {topic}.")
    except RunAborted as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from None
    return {"answer": str(result.final_output), "pid": os.getpid()}
