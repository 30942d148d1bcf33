"""Part two of the demo: heal before stopping. A model call hangs once; its rule says
``timeout``, so the stuck read fails as a timeout would and the client's retry answers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from watchdog.demo.apps import ask_solo, watched
from watchdog.demo.narration import say

__all__ = ["HEAL_CONFIG", "heal_by_timeout"]

HEAL_CONFIG = """\
[thresholds]
response = 2

[abort]
grace_seconds = 5

[[rules]]                 # a stuck model call: fail it as a read timeout would, then retry
kind = "response"
action = "timeout"
"""


def heal_by_timeout(standin: Any) -> bool:
    """Part two: the gentlest rung. True when the hung call healed into its retry."""
    say("Part two: heal before stopping.")
    with watched(HEAL_CONFIG) as (sidecar, processor):
        say("8. A model call hangs once (its retry would answer); its rule says timeout ...")
        started = time.monotonic()
        # The OpenAI client's own retries (max_retries=2) take over after the timeout.
        answer = asyncio.run(ask_solo(standin.url, "Analyst", "standin:hang=once", max_retries=2))
        took = time.monotonic() - started
        processor.force_flush()
        sidecar.wait_for(
            "abort_step", timeout=5, where=lambda e: e.get("outcome") in ("succeeded", "timed_out")
        )
        processor.shutdown()
        hung = sidecar.wait_for("span_hung", timeout=5)
        cause = sidecar.wait_for("span_stack", timeout=5)
        steps = [e for e in sidecar.logs if e.get("event") == "abort_step"]
        if hung is not None and cause is not None and cause.get("cause"):
            say(f"   probable cause (in the alert): {cause['cause']}")
        for entry in steps:
            say(f"   ladder: {entry['step']:<12} {entry['outcome']:<10} {entry['detail']}")
        say(
            f"   the run answered {answer!r} after {took:.1f} s: the stuck read failed as a "
            "timeout, the client retried, nobody was paged for an error"
        )
        return (
            bool(steps) and steps[-1]["step"] == "timeout" and steps[-1]["outcome"] == "succeeded"
        )
