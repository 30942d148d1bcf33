"""A blocked event loop: measured in the app, flagged by the sidecar with the line of
sync code that blocks it, resolved when the loop catches up."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time
from collections.abc import Callable

import pytest
from agents import custom_span, trace

from tests.conftest import metric, spans, wait_until
from tests.launcher import SidecarProcess
from tests.receivers import Receiver
from watchdog._control import LoopProbes
from watchdog.processor import WatchdogProcessor
from watchdog.standin import StandInServer

Factory = Callable[..., SidecarProcess]
Watch = Callable[..., WatchdogProcessor]


def test_sync_code_in_async_code_is_a_blocked_loop_with_its_line(
    sidecar_factory: Factory, watch: Watch
) -> None:
    release, done = threading.Event(), threading.Event()

    async def handler() -> None:
        with trace("request"), custom_span("handler"):
            await asyncio.sleep(0.5)  # the loop is probed while it is healthy
            release.wait(30)  # sync code in async code: blocks the whole loop
            await asyncio.to_thread(done.wait, 30)  # then the loop runs freely again

    with Receiver() as webhook:
        sidecar = sidecar_factory(
            "[thresholds]\ncustom = 60\n[processes]\nloop_blocked_after = 1.0\n"
            f'[[alerts]]\ntype = "webhook"\nurl = "{webhook.url}"\n'
        )
        watch(sidecar.url, service="api")
        app = threading.Thread(target=asyncio.run, args=(handler(),), name="api-loop")
        app.start()
        try:
            blocked = sidecar.wait_for("event_loop_blocked", timeout=10)
            assert blocked is not None and blocked["lag_seconds"] >= 1.0
            assert "release.wait(30)" in blocked["stack"]
            assert "in handler" in blocked["stack"]
            lag = metric(sidecar, "agents_watchdog_loop_lag_seconds", service="api")
            assert lag is not None and lag >= 1.0
            firing = webhook.wait_for(lambda b: len(b) == 1)[0]["alerts"][0]
            assert firing["labels"]["alertname"] == "AgentEventLoopBlocked"
            assert "release.wait(30)" in firing["annotations"]["stack"]
            release.set()
            # The loop catches up: the next probe runs on time.
            unblocked = sidecar.wait_for("event_loop_unblocked", timeout=10)
            assert unblocked is not None and unblocked["lag_seconds"] < 1.0
        finally:
            release.set()
            done.set()
            app.join(10)
        resolved = webhook.wait_for(lambda b: len(b) == 2)[1]
        assert resolved["status"] == "resolved"
        assert resolved["alerts"][0]["labels"]["alertname"] == "AgentEventLoopBlocked"


@pytest.mark.slow
def test_time_sleep_in_an_async_tool_of_an_app_process_names_its_line(
    standin: StandInServer, sidecar_factory: Factory, apps: Callable[..., subprocess.Popen[str]]
) -> None:
    with Receiver() as webhook:
        sidecar = sidecar_factory(
            "[thresholds]\nfunction = 60\n[processes]\nloop_blocked_after = 1.0\n"
            f'[[alerts]]\ntype = "webhook"\nurl = "{webhook.url}"\n'
        )
        app = apps("sleepy", sidecar.url, standin.url)
        wait_until(lambda: [s for s in spans(sidecar) if s["kind"] == "function"])
        firing = webhook.wait_for(lambda bodies: len(bodies) >= 1)[0]["alerts"][0]
    assert firing["labels"]["alertname"] == "AgentEventLoopBlocked"
    assert firing["labels"]["pid"] == str(app.pid)
    stack = firing["annotations"]["stack"]
    # Most recent call last: the innermost frame is the tool's own line.
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)\n\s+(.*)', stack)
    assert frames, stack
    path, _, function, source = frames[-1]
    assert (path.endswith("tests/app_process.py"), function, source) == (
        True,
        "nap",
        "time.sleep(30)  # noqa: ASYNC251 - the blocked event loop is what the test looks for",
    )


def test_an_idle_loop_between_run_sync_calls_is_not_blocked() -> None:
    probes = LoopProbes(blocked_after=1.0)
    loop = asyncio.new_event_loop()
    try:

        async def request() -> None:
            task = asyncio.current_task()
            assert task is not None
            probes.saw(task, threading.get_ident())
            await asyncio.sleep(0)

        loop.run_until_complete(request())  # as Runner.run_sync does per request
        first = probes.report(time.monotonic())  # queues a probe on the loop
        assert [(r.lag, r.stack) for r in first] == [(0.0, None)]
        # The loop now sits idle, not running, far longer than blocked_after.
        later = probes.report(time.monotonic() + 30)
        assert [(r.lag, r.stack) for r in later] == [(0.0, None)]
        loop.run_until_complete(request())  # the next request runs the stale probe
        again = probes.report(time.monotonic() + 60)
        assert [(r.lag, r.stack) for r in again] == [(0.0, None)]
    finally:
        loop.close()
