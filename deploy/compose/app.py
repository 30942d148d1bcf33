"""The compose example's app: the demo's agents, run over and over, one run in each
cycle hanging long enough to turn into an alert.

Each cycle runs a few healthy briefings (so the duration histograms have data), then
one whose Researcher's model call hangs for ``DEMO_HANG_SECONDS`` — long enough for the
sidecar to flag it and push ``AgentSpanHung`` to Alertmanager, and for Prometheus to
fire ``AgentsWatchdogSpansHung`` — and then releases it, so every alert resolves. The
Responses API stand-in runs inside this process: no API key, no network.

Settings (environment): ``AGENTS_WATCHDOG_URL``, ``AGENTS_WATCHDOG_SERVICE`` and
``AGENTS_WATCHDOG_TOKEN`` as for any watched app; ``DEMO_HANG_SECONDS`` (180),
``DEMO_PAUSE_SECONDS`` (60) between cycles, ``DEMO_HEALTHY_RUNS`` (3) per cycle.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

from watchdog.demo import build_app


def _setting(name: str, default: float) -> float:
    value = float(os.environ.get(name, default))
    if value < 0:
        raise SystemExit(f"{name} must be >= 0, got {value}")
    return value


async def cycle(standin: Any, hang: float, healthy: int) -> None:
    """Healthy runs, then one that hangs for ``hang`` seconds before it is released."""
    from agents import Runner
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{standin.url}/v1", api_key="demo", max_retries=0)
    try:
        for _ in range(healthy):
            result = await Runner.run(
                build_app(client, "standin:reply=All quiet."), "Brief me on the numbers."
            )
            print(f"healthy run answered: {result.final_output!r}", flush=True)
        print(f"next run: the Researcher's model call hangs for {hang:.0f} s", flush=True)

        async def release_later() -> None:
            await asyncio.sleep(hang)
            standin.release()

        releaser = asyncio.create_task(release_later())
        result = await Runner.run(
            build_app(client, "standin:hang"), "Brief me on the quarterly numbers."
        )
        await releaser
        print(f"the stuck run recovered and answered: {result.final_output!r}", flush=True)
    finally:
        await client.close()


def main() -> int:
    """Run cycles until SIGTERM; returns the exit code."""
    from watchdog.processor import install
    from watchdog.standin import StandInServer

    hang = _setting("DEMO_HANG_SECONDS", 180)
    pause = _setting("DEMO_PAUSE_SECONDS", 60)
    healthy = int(_setting("DEMO_HEALTHY_RUNS", 3))
    # `docker compose down` sends SIGTERM: leave through the normal exit path, so the
    # processor's shutdown tells the sidecar this was a clean exit, not a death.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    install(replace_default=True)
    with StandInServer() as standin:
        while True:
            asyncio.run(cycle(standin, hang, healthy))
            time.sleep(pause)


if __name__ == "__main__":
    sys.exit(main())
