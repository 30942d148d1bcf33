"""The ``timeout`` action: the stuck await fails the way a read timeout would have, so
the client's and the SDK's own retries take over — with the real SDK, the real OpenAI
client, the loopback stand-in and a real sidecar."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from agents import Agent, ModelSettings
from agents.retry import ModelRetrySettings, retry_policies
from openai import AsyncOpenAI

from tests.agents_app import AppRun, agent_with_tool, model
from tests.conftest import metric, thresholds, wait_until
from tests.launcher import SidecarProcess
from watchdog.processor import RunAborted, WatchdogProcessor
from watchdog.standin import DEFAULT_REPLY, StandInServer

Factory = Callable[..., SidecarProcess]
Watch = Callable[..., WatchdogProcessor]


def rule(kind: str, grace: float = 30) -> str:
    return thresholds(**{kind: 1.5}) + (
        f'[abort]\ngrace_seconds = {grace}\n[[rules]]\nkind = "{kind}"\naction = "timeout"\n'
    )


def ladder(sidecar: SidecarProcess) -> list[tuple[str, str]]:
    return [(e["step"], e["outcome"]) for e in sidecar.logs if e.get("event") == "abort_step"]


def answering_once_hung(runner_retries: bool) -> Callable[[AsyncOpenAI], Agent[Any]]:
    """A model call that hangs the first time and answers its retry."""
    settings = ModelSettings()
    if runner_retries:
        settings = ModelSettings(
            retry=ModelRetrySettings(max_retries=2, policy=retry_policies.network_error())
        )

    def build(client: AsyncOpenAI) -> Agent[Any]:
        return Agent(
            name="Solo",
            instructions="x",
            model=model(client, "hang=once"),
            model_settings=settings,
        )

    return build


@pytest.mark.parametrize(
    ("streamed", "retries_by"),
    [(False, "client"), (False, "runner"), (True, "runner")],
)
def test_a_hung_model_call_heals_into_its_retry_and_the_run_answers(
    streamed: bool,
    retries_by: str,
    standin: StandInServer,
    sidecar_factory: Factory,
    watch: Watch,
) -> None:
    sidecar = sidecar_factory(rule("response"))
    watch(sidecar.url)
    run = AppRun(
        standin,
        answering_once_hung(runner_retries=retries_by == "runner"),
        max_retries=2 if retries_by == "client" else 0,
        streamed=streamed,
    ).start()
    assert run.wait(timeout=20) == DEFAULT_REPLY  # the retry's answer
    assert standin.requests == 2  # the hung one, then its retry
    wait_until(lambda: ("timeout", "succeeded") in ladder(sidecar))
    assert ladder(sidecar) == [("timeout", "requested"), ("timeout", "succeeded")]
    delivered = [e for e in sidecar.logs if e.get("event") == "abort_step_result"]
    assert delivered[0]["outcome"] == "delivered"
    assert "TimeoutError delivered to the await at" in delivered[0]["detail"]
    assert (
        metric(sidecar, "agents_watchdog_aborts_total", action="timeout", outcome="succeeded") == 1
    )


def test_a_streamed_call_without_runner_retries_fails_as_a_timeout_would(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    """The OpenAI client does not retry a stream that has begun: the run fails with the
    client's own timeout error, exactly as a read timeout would have made it."""
    sidecar = sidecar_factory(rule("response"))
    watch(sidecar.url)
    run = AppRun(
        standin, answering_once_hung(runner_retries=False), max_retries=2, streamed=True
    ).start()
    with pytest.raises(Exception, match="timed out") as raised:
        run.wait(timeout=20)
    assert type(raised.value).__name__ == "APITimeoutError"


def test_a_tool_awaiting_forever_fails_as_a_timeout_and_its_agent_is_told(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(rule("function"))
    watch(sidecar.url)

    async def never() -> str:
        await asyncio.Event().wait()
        return "never"

    run = AppRun(standin, agent_with_tool(("tool=fetch_report", "reply=Done"), never)).start()
    assert run.wait(timeout=20) == "Done"
    wait_until(lambda: ("timeout", "succeeded") in ladder(sidecar))
    assert len(standin.tool_outputs) == 1
    assert "error occurred while running the tool" in standin.tool_outputs[0]


def test_the_ladder_goes_on_when_the_timeout_does_not_help(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(rule("function", grace=1))
    watch(sidecar.url)

    async def stubborn() -> str:
        while True:
            try:
                await asyncio.Event().wait()
            except TimeoutError:
                continue  # shrugs the timeout off and waits again

    run = AppRun(standin, agent_with_tool(("tool=fetch_report", "reply=Done"), stubborn)).start()
    with pytest.raises(RunAborted, match="cancel requested by rule"):
        run.wait(timeout=20)
    try:
        wait_until(lambda: ("cancel", "succeeded") in ladder(sidecar))
    except BaseException:
        print([e for e in sidecar.logs if e.get("event") not in {"raw"}])  # the timeline
        raise
    assert ladder(sidecar) == [
        ("timeout", "requested"),
        ("timeout", "timed_out"),
        ("cancel", "requested"),
        ("cancel", "succeeded"),
    ]
