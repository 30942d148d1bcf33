"""A loopback stand-in for the OpenAI Responses API, scripted by the model name.

The stand-in answers ``POST /v1/responses`` (plain JSON and ``stream: true`` server-sent
events) well enough for the real openai-agents SDK to run agents, tools, agents-as-tools and
handoffs against it through an ordinary ``openai.AsyncOpenAI`` client::

    with StandInServer() as server:
        client = AsyncOpenAI(base_url=server.url + "/v1", api_key="standin")
        agents.set_default_openai_client(client, use_for_tracing=False)
        agents.set_default_openai_api("responses")
        agent = Agent(name="A", model="standin:tool=lookup*3;reply=Done")

Its rooms, in the order a request meets them:

- :mod:`~watchdog.standin.script`: the script language in the model name (``reply=``,
  ``tool=``, ``handoff=``, ``hang``, ``hang=once``, ``slow=``) and which step a request gets;
- :mod:`~watchdog.standin.examples`: example values for JSON schemas (tool arguments,
  structured replies);
- :mod:`~watchdog.standin.responses`: Responses API payloads and their SSE stream;
- :mod:`~watchdog.standin.app`: :class:`StandIn`, the state (counters, held requests) and
  its ASGI routes;
- :mod:`~watchdog.standin.server`: :class:`StandInServer` (a background thread) and
  ``python -m watchdog.standin`` (the foreground).

Nothing here runs, logs or binds anything at import time.
"""

from __future__ import annotations

from watchdog.standin.app import StandIn
from watchdog.standin.examples import example_value
from watchdog.standin.script import (
    DEFAULT_REPLY,
    MODEL_PREFIX,
    ScriptError,
    Step,
    count_tool_results,
    handoff_tool_name,
    parse_script,
    script,
    select_step,
)
from watchdog.standin.server import StandInServer, main

__all__ = [
    "DEFAULT_REPLY",
    "MODEL_PREFIX",
    "ScriptError",
    "StandIn",
    "StandInServer",
    "Step",
    "count_tool_results",
    "example_value",
    "handoff_tool_name",
    "main",
    "parse_script",
    "script",
    "select_step",
]
