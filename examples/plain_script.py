"""A plain script watched by agents-watchdog: one install() call, then agents as usual.

agents-watchdog serve &            # the sidecar, on 127.0.0.1:9750
python plain_script.py "hang detection"
"""

from __future__ import annotations

import asyncio
import os
import sys

from agents import Agent, Runner

from watchdog.processor import RunAborted, abortable, install


async def main(topic: str) -> int:
    """Run one agent; exit status 0 with its answer, 1 if the watchdog aborted it."""
    agent = Agent(
        name="Briefer",
        instructions="Brief the user on the topic in three sentences.",
        # With the local stand-in for the Responses API, "standin:hang" hangs.
        model=os.environ.get("AGENT_MODEL", "gpt-4.1-mini"),
    )
    try:
        async with abortable():
            result = await Runner.run(agent, f"Brief me on {topic}.")
    except RunAborted as exc:
        print(f"aborted: {exc}", file=sys.stderr)
        return 1
    print(result.final_output)
    return 0


if __name__ == "__main__":
    # Before the first run. The SDK shuts the processor down at exit, which tells the
    # sidecar this process left cleanly.
    install(service="plain-script", replace_default=True)
    sys.exit(asyncio.run(main(" ".join(sys.argv[1:]) or "hang detection")))
