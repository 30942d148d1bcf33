"""A probable cause and its fix in every hung span: from the real SDK's frames and the
app's own OpenAI client, through a real sidecar to ``/v1/spans``, the alert and the
incident."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents import Agent
from openai import AsyncOpenAI, Timeout

from tests.agents_app import AppRun, agent_with_tool, model, single_agent
from tests.conftest import spans, thresholds, wait_until
from tests.launcher import SidecarProcess
from tests.mcp_server import stdio_params
from tests.receivers import Receiver
from watchdog.processor import WatchdogProcessor
from watchdog.standin import StandInServer

Factory = Callable[..., SidecarProcess]
Watch = Callable[..., WatchdogProcessor]
QUICK = thresholds(response=1, function=1)


def hung_cause(sidecar: SidecarProcess, kind: str) -> str:
    span = wait_until(
        lambda: next((s for s in spans(sidecar, state="hung", kind=kind) if s["cause"]), None),
        within=15,
    )
    cause: str = span["cause"]
    return cause


def test_a_model_call_without_a_read_timeout_names_the_http_read_and_the_fix(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    with Receiver() as webhook:
        sidecar = sidecar_factory(QUICK + f'[[alerts]]\ntype = "webhook"\nurl = "{webhook.url}"\n')
        watch(sidecar.url)
        run = AppRun(standin, single_agent("hang")).start()
        cause = hung_cause(sidecar, "response")
        assert "waiting on the model's HTTP response" in cause
        assert "read timeout 600 s, connect 5 s, 0 retries (the client that made the call)" in cause
        assert "set a read timeout, e.g. httpx.Timeout(20, connect=5)" in cause
        fired = webhook.wait_for(bool)[0]
        assert fired["alerts"][0]["annotations"]["cause"] == cause
        standin.release()
        run.wait()
    incident = httpx.get(f"{sidecar.url}/v1/incidents").json()["incidents"][0]
    timeline = httpx.get(f"{sidecar.url}/v1/incidents/{incident['id']}").json()["timeline"]
    assert [e["detail"]["cause"] for e in timeline if e["event"] == "stacks"] == [cause]


def test_a_stalled_stream_is_told_from_a_response_that_never_began(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(QUICK)
    watch(sidecar.url)
    run = AppRun(standin, single_agent("hang"), streamed=True).start()
    cause = hung_cause(sidecar, "response")
    assert "the model's response stream stalled after it began" in cause
    assert "httpx.Timeout(20, connect=5)" in cause
    standin.release()
    run.wait()


@pytest.fixture
def silent_tls_port() -> Iterator[tuple[int, Callable[[], None]]]:
    """A TCP port that accepts connections and never says a word (a TLS handshake to it
    never completes), and a function that hangs up on them (so the handshake fails at
    once, cleanly, rather than being cancelled half-way)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    def hang_up() -> None:
        for connection in list(accepted):
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1], hang_up
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_handshake_that_never_completes_is_connecting(
    silent_tls_port: tuple[int, Callable[[], None]], sidecar_factory: Factory, watch: Watch
) -> None:
    port, hang_up = silent_tls_port
    sidecar = sidecar_factory(QUICK)
    watch(sidecar.url)
    outcome: list[BaseException] = []

    async def main() -> None:
        client = AsyncOpenAI(
            base_url=f"https://127.0.0.1:{port}/v1",
            api_key="x",
            max_retries=0,
            timeout=Timeout(30, connect=30),
        )
        agent = Agent(name="Solo", instructions="x", model=model(client, "reply=x"))
        from agents import Runner

        try:
            await asyncio.wait_for(Runner.run(agent, "Go."), 20)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            await client.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        cause = hung_cause(sidecar, "response")
    finally:
        hang_up()
    assert cause.startswith("connecting to the model's API"), cause
    assert "connect 30 s" in cause
    thread.join(30)
    assert outcome  # the run ended (the handshake timed out or was cut)


def test_sync_code_that_blocks_the_event_loop_names_the_blocking_line(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(QUICK)
    watch(sidecar.url)
    release = threading.Event()

    async def blocking() -> str:
        release.wait(30)  # noqa: ASYNC101 - a sync wait inside async code is the point
        return "done"

    run = AppRun(standin, agent_with_tool(("tool=fetch_report", "reply=Done"), blocking)).start()
    try:
        cause = wait_until(
            lambda: next(
                (s["cause"] for s in spans(sidecar, kind="function") if s.get("cause")), None
            ),
            within=15,
        )
    finally:
        release.set()
    assert cause.startswith("the event loop is blocked by sync code at"), cause
    assert "test_causes.py" in cause and "in blocking" in cause
    assert run.wait() == "Done"


def test_an_asyncio_lock_that_is_never_released(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(QUICK)
    watch(sidecar.url)
    holders: list[asyncio.Event] = []

    async def locked() -> str:
        lock = asyncio.Lock()
        held = asyncio.Event()
        holders.append(held)

        async def hold() -> None:
            async with lock:
                await held.wait()

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0)
        async with lock:  # <- waits for the holder
            pass
        await holder
        return "done"

    run = AppRun(standin, agent_with_tool(("tool=fetch_report", "reply=Done"), locked)).start()
    cause = hung_cause(sidecar, "function")
    assert cause.startswith("waiting for an asyncio Lock at"), cause
    assert "in locked" in cause
    assert run.loop is not None
    run.loop.call_soon_threadsafe(holders[0].set)
    assert run.wait() == "Done"


def test_a_worker_thread_waiting_for_a_thread_lock(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(QUICK)
    watch(sidecar.url)
    shared = threading.Lock()
    shared.acquire()  # held by the test thread, as another request's thread would

    async def on_a_thread() -> str:
        await asyncio.to_thread(shared.acquire)
        shared.release()
        return "done"

    run = AppRun(standin, agent_with_tool(("tool=fetch_report", "reply=Done"), on_a_thread)).start()
    try:
        cause = hung_cause(sidecar, "function")
    finally:
        shared.release()
    assert cause.startswith("waiting for a worker thread called at"), cause
    assert "in on_a_thread" in cause
    assert run.wait() == "Done"


def test_user_code_awaiting_what_never_comes_names_its_line(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    sidecar = sidecar_factory(QUICK)
    watch(sidecar.url)
    events: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def never() -> str:
        event = asyncio.Event()
        events.append((asyncio.get_running_loop(), event))
        await event.wait()  # <- the line the cause names
        return "done"

    run = AppRun(standin, agent_with_tool(("tool=fetch_report", "reply=Done"), never)).start()
    cause = hung_cause(sidecar, "function")
    line = next(
        n
        for n, text in enumerate(Path(__file__).read_text().splitlines(), 1)
        if "<- the line the cause names" in text
    )
    assert f"test_causes.py:{line} in never" in cause, cause
    assert "asyncio.timeout" in cause
    loop, event = events[0]
    loop.call_soon_threadsafe(event.set)
    assert run.wait() == "Done"


def test_an_mcp_server_that_stopped_answering(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    from agents.mcp import MCPServerStdio

    sidecar = sidecar_factory(QUICK)
    watch(sidecar.url)
    stop = threading.Event()
    result: list[Any] = []

    async def main() -> None:
        client = AsyncOpenAI(base_url=f"{standin.url}/v1", api_key="x", max_retries=0)
        server = MCPServerStdio(
            params=stdio_params(),
            name="reports",
            client_session_timeout_seconds=60,
        )
        async with server:
            from agents import Runner

            agent = Agent(
                name="Librarian",
                instructions="x",
                model=model(client, "tool=stall", "reply=Done"),
                mcp_servers=[server],
            )
            run = asyncio.ensure_future(Runner.run(agent, "Go."))
            await asyncio.to_thread(stop.wait)
            run.cancel()
            result.append(await asyncio.gather(run, return_exceptions=True))
        await client.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        cause = hung_cause(sidecar, "function")
    finally:
        stop.set()
        thread.join(20)
    assert cause.startswith("the MCP server 'reports' stopped answering"), cause
    assert "client_session_timeout_seconds" in cause
    assert result


def test_a_process_that_died_is_the_cause_of_its_orphans(
    standin: StandInServer, sidecar_factory: Factory, apps: Callable[..., Any]
) -> None:
    sidecar = sidecar_factory(thresholds())
    app = apps("hang", sidecar.url, standin.url)
    wait_until(lambda: [s for s in spans(sidecar) if s["kind"] == "response"])
    # Only a process whose pid was proven its own can be known dead (see identity.py):
    # on a busy machine the proof may come a moment after its first spans.
    wait_until(
        lambda: any(
            e.get("event") == "process_identity" and e.get("verified") and e.get("pid") == app.pid
            for e in sidecar.logs
        )
    )
    app.kill()
    app.wait(10)
    try:
        orphan = wait_until(lambda: next(iter(spans(sidecar, state="orphaned")), None), within=15)
    except BaseException:
        # What the sidecar knew of the process: its identity and state say why not.
        listing = httpx.get(f"{sidecar.url}/v1/processes", timeout=5).text
        identity = [e for e in sidecar.logs if e.get("event") == "process_identity"]
        print(f"processes: {listing}\nidentity: {identity}")
        raise
    assert f"its process (pid {app.pid}) died with the span open" in orphan["cause"]


def test_a_rule_may_match_on_the_cause(
    standin: StandInServer, sidecar_factory: Factory, watch: Watch
) -> None:
    """No rule for the tool's kind takes action; a rule on the cause does, once the
    cause is known: the app's await fails as a timeout and its agent is told."""
    sidecar = sidecar_factory(
        QUICK + '[[rules]]\ncause = "*the app\'s code awaits*"\naction = "timeout"\n'
    )
    watch(sidecar.url)

    async def never() -> str:
        await asyncio.Event().wait()
        return "done"

    run = AppRun(standin, agent_with_tool(("tool=fetch_report", "reply=Done"), never)).start()
    assert run.wait(timeout=20) == "Done"
    steps = [e for e in sidecar.logs if e.get("event") == "abort_step"]
    assert steps and steps[0]["step"] == "timeout"
    assert "requested by rule rules[0] (cause)" in steps[0]["detail"]


def test_a_cause_rule_gives_an_action_only(tmp_path: Path) -> None:
    from watchdog.sidecar.config import ConfigError, load_config

    path = tmp_path / "watchdog.toml"
    path.write_text('[[rules]]\ncause = "*MCP*"\nthreshold = 5\naction = "cancel"\n')
    with pytest.raises(ConfigError, match=r"rules\[0\]\.cause.*action only"):
        load_config(path, environ={})
    path.write_text('[[rules]]\ncause = 5\naction = "cancel"\n')
    with pytest.raises(ConfigError, match=r"rules\[0\]\.cause"):
        load_config(path, environ={})
