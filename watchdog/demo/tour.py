"""The whole demo, part by part, against one stand-in for the Responses API."""

from __future__ import annotations

from watchdog.demo.detection import detection
from watchdog.demo.healing import heal_by_timeout
from watchdog.demo.narration import say
from watchdog.demo.stopping import abort_ladder

__all__ = ["main"]


def main() -> int:
    """Run the demo; returns 0 when detection and recovery were both shown."""
    from watchdog.standin import StandInServer

    say("agents-watchdog demo: a multi-agent app hangs; the sidecar notices.")
    say()
    with StandInServer() as standin:
        if not detection(standin):
            return 1
        say()
        if not heal_by_timeout(standin):
            return 1
        say()
        if not abort_ladder(standin):
            return 1
    say()
    say(
        "Demo complete: detection, stacks, metrics, alerts, recovery, a learned threshold, "
        "incident history, a call healed by timeout, the abort ladder, a blocked-loop "
        "finding and a blind process shown."
    )
    return 0
