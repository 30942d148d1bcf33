"""A view that runs an agent for each request."""

from __future__ import annotations

import os

from agents import Agent, Runner
from django.http import HttpRequest, JsonResponse

# AGENT_MODEL picks the model; with the local stand-in for the Responses API
# (OPENAI_BASE_URL=http://127.0.0.1:8787/v1), "standin:hang" makes every call hang.
briefer = Agent(
    name="Briefer",
    instructions="Brief the user on the topic in three sentences.",
    model=os.environ.get("AGENT_MODEL", "gpt-4.1-mini"),
)


def brief(request: HttpRequest) -> JsonResponse:
    """``GET /brief?topic=...``: the agent's answer, and which worker gave it."""
    topic = request.GET.get("topic", "hang detection")
    # A sync view in a sync worker: run_sync drives the run on this thread's own loop.
    result = Runner.run_sync(briefer, f"Brief me on {topic}.")
    return JsonResponse({"answer": str(result.final_output), "pid": os.getpid()})
