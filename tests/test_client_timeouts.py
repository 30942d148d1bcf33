"""The SDK's default OpenAI client's timeouts, reported as a process registers: the
sidecar warns — in its log once, in ``/v1/processes``, in ``status`` and on the page —
when a model call could outlast the ``response`` threshold before the client gives up."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from agents import set_default_openai_client, trace
from agents.models import _openai_shared
from openai import AsyncOpenAI

import watchdog._sender as sender_module
from tests.conftest import thresholds, wait_until
from tests.launcher import SidecarProcess
from tests.receivers import LoopbackServer, QuietHandler
from tests.wire_process import WireProcess
from watchdog.cli import main
from watchdog.processor import WatchdogProcessor
from watchdog.protocol import (
    PROTOCOL_VERSION,
    Batch,
    ClientTimeoutsInfo,
    Heartbeat,
    ProcessInfo,
    Reply,
    SpanStart,
    decode_batch,
    encode,
)
from watchdog.sidecar.config import Rule, Thresholds
from watchdog.sidecar.registry import Registry, client_timeout_warning

Watch = Callable[..., WatchdogProcessor]
CONFIG = thresholds(response=30)
FIX = "Set a read timeout, e.g. AsyncOpenAI(timeout=httpx.Timeout(20, connect=5))"


@pytest.fixture
def default_client() -> Iterator[Callable[[AsyncOpenAI], None]]:
    """Set the SDK's default OpenAI client for this test; the SDK's own is back after."""
    before = _openai_shared.get_default_openai_client()
    try:
        yield lambda client: set_default_openai_client(client, use_for_tracing=False)
    finally:
        _openai_shared._default_openai_client = before


def register(sidecar: SidecarProcess, watch: Watch) -> dict[str, Any]:
    """Run one trace in this process, watched, and return its ``/v1/processes`` entry."""
    processor = watch(sidecar.url, heartbeat_interval=0.2, flush_interval=0.05)
    with trace("registers"):
        pass
    processor.force_flush()
    listed = wait_until(
        lambda: httpx.get(f"{sidecar.url}/v1/processes", timeout=5).json()["processes"]
    )
    assert len(listed) == 1 and listed[0]["pid"] == os.getpid()
    # More batches from the same process: none of them may warn again.
    for _ in range(3):
        processor.force_flush()
    process: dict[str, Any] = listed[0]
    return process


def logged_until_now(sidecar: SidecarProcess, event: str) -> list[dict[str, Any]]:
    """The ``event`` entries the sidecar logged before this call: a rejected request is
    logged after whatever the batches applied before it logged, so once its line is
    read, every earlier line has been too."""
    seen = len(sidecar.logs)
    marker = httpx.post(
        f"{sidecar.url}/v1/events",
        content=b"{",
        headers={"content-type": "application/json"},
        timeout=5,
    )
    assert marker.status_code == 400
    barrier = sidecar.wait_for("request_rejected", timeout=5, since=seen)
    assert barrier is not None
    entries = sidecar.logs[: sidecar.logs.index(barrier)]
    return [entry for entry in entries if entry.get("event") == event]


def status(sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    """``agents-watchdog status`` in-process: (exit code, stdout with its wrapping undone)."""
    code = main(["status", "--url", sidecar.url, *args])
    out = capsys.readouterr().out
    return code, out if "--json" in args else " ".join(out.split())


@pytest.mark.parametrize(
    ("client", "source"),
    [
        # Nothing set: the SDK makes a plain AsyncOpenAI() of its own.
        (None, "openai default"),
        (lambda: AsyncOpenAI(api_key="x"), "the SDK's default client"),
    ],
    ids=["sdk-own-client", "set-AsyncOpenAI()"],
)
def test_the_openai_default_read_timeout_is_warned_about_everywhere(
    sidecar_factory: Callable[..., SidecarProcess],
    watch: Watch,
    default_client: Callable[[AsyncOpenAI], None],
    capsys: pytest.CaptureFixture[str],
    client: Callable[[], AsyncOpenAI] | None,
    source: str,
) -> None:
    if client is not None:
        default_client(client())
    sidecar = sidecar_factory(CONFIG)
    process = register(sidecar, watch)
    assert process["client_timeouts"] == {
        "connect": 5.0,
        "read": 600.0,
        "max_retries": 2,
        "source": source,
    }
    warning = process["timeout_warning"]
    assert warning.startswith(
        f"the SDK's default OpenAI client waits 600 s for a read ({source}), longer than "
        "the response threshold of 30 s: a hung model call holds its run that long."
    )
    assert FIX in warning and "set_default_openai_client" in warning

    [logged] = logged_until_now(sidecar, "client_timeout_too_long")
    assert logged["level"] == "warning"
    assert (logged["service"], logged["pid"]) == ("tests", os.getpid())
    assert (logged["read"], logged["threshold"]) == (600.0, 30.0)
    assert logged["detail"] == warning and FIX in logged["fix"]

    # A warning, not a problem: nothing is stuck, so the exit code stays 0.
    code, out = status(sidecar, capsys)
    assert code == 0
    assert f"WARNING: tests (pid {os.getpid()} on {socket.gethostname()}): {warning}" in out
    assert "OK: all processes live, nothing hung" in out
    code, out = status(sidecar, capsys, "--json")
    body = json.loads(out)
    assert code == 0 and body["ok"] is True and len(body["warnings"]) == 1
    assert body["warnings"][0].endswith(warning)


def test_a_read_timeout_within_the_threshold_gives_no_warning(
    sidecar_factory: Callable[..., SidecarProcess],
    watch: Watch,
    default_client: Callable[[AsyncOpenAI], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The fix as the warning words it. This openai is typed for httpx2's Timeout, and
    # takes httpx's all the same (it reads the same attributes).
    advised = httpx.Timeout(20, connect=5)
    default_client(AsyncOpenAI(api_key="x", timeout=advised))  # type: ignore[arg-type]
    sidecar = sidecar_factory(CONFIG)
    process = register(sidecar, watch)
    assert process["client_timeouts"] == {
        "connect": 5.0,
        "read": 20.0,
        "max_retries": 2,
        "source": "the SDK's default client",
    }
    assert process["timeout_warning"] is None
    assert logged_until_now(sidecar, "client_timeout_too_long") == []
    code, out = status(sidecar, capsys)
    assert code == 0 and "WARNING" not in out


def test_no_read_timeout_at_all_is_warned_about_as_no_limit(
    sidecar_factory: Callable[..., SidecarProcess],
    watch: Watch,
    default_client: Callable[[AsyncOpenAI], None],
) -> None:
    default_client(AsyncOpenAI(api_key="x", timeout=None, max_retries=0))
    sidecar = sidecar_factory(CONFIG)
    process = register(sidecar, watch)
    assert process["client_timeouts"] == {
        "connect": None,
        "read": None,
        "max_retries": 0,
        "source": "the SDK's default client",
    }
    warning = process["timeout_warning"]
    assert warning.startswith(
        "the SDK's default OpenAI client has no read limit (the SDK's default client): a "
        "hung model call holds its run past the response threshold of 30 s"
    )
    assert FIX in warning
    [logged] = logged_until_now(sidecar, "client_timeout_too_long")
    assert logged["read"] is None and logged["threshold"] == 30.0


def test_timeouts_that_cannot_be_read_are_sent_as_none_and_the_app_is_watched(
    sidecar_factory: Callable[..., SidecarProcess],
    watch: Watch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> Any:
        raise RuntimeError("an SDK that changed under us")

    monkeypatch.setattr(sender_module, "default_client_timeouts", broken)
    sidecar = sidecar_factory(CONFIG)
    process = register(sidecar, watch)
    assert process["state"] == "live" and process["sender_errors"] == 0
    assert process["client_timeouts"] is None and process["timeout_warning"] is None
    assert logged_until_now(sidecar, "client_timeout_too_long") == []


@pytest.mark.parametrize(
    ("read", "connect", "expected"),
    [
        (float("inf"), 5.0, {"read": None, "connect": 5.0}),  # waits for ever: no limit
        (float("nan"), 5.0, {"read": None, "connect": 5.0}),
        (1e12, 1e12, {"read": None, "connect": None}),  # past the wire's bound: no limit
        (-1.0, 5.0, None),  # nonsense: nothing claimed rather than a rejected batch
    ],
    ids=["inf", "nan", "huge", "negative"],
)
def test_figures_the_wire_cannot_carry_never_cost_the_registration(
    monkeypatch: pytest.MonkeyPatch,
    read: float,
    connect: float,
    expected: dict[str, float | None] | None,
) -> None:
    from watchdog._clients import ClientTimeouts

    monkeypatch.setattr(
        sender_module,
        "default_client_timeouts",
        lambda: ClientTimeouts(connect, read, 2, "client"),
    )
    found = sender_module._client_timeouts()
    if expected is None:
        assert found is None
    else:
        assert found == ClientTimeoutsInfo(max_retries=2, source="client", **expected)


# -- the comparison ---------------------------------------------------------------------


def figures(read: float | None, connect: float | None = 5.0) -> ClientTimeoutsInfo:
    return ClientTimeoutsInfo(connect=connect, read=read, max_retries=2, source="client")


@pytest.mark.parametrize(
    ("timeouts", "threshold", "words"),
    [
        (None, 30.0, None),  # not reported (an older app): nothing is claimed
        (figures(20.0), 30.0, None),
        (figures(30.0), 30.0, None),  # gives up exactly as the span is flagged
        (figures(30.5), 30.0, "waits 30.5 s for a read (client), longer than"),
        (figures(600.0), 0.5, "the response threshold of 0.5 s"),
        (figures(None, None), 30.0, "has no read limit (client)"),
        (figures(None, None), 1e6, "has no read limit"),  # no threshold is long enough
    ],
)
def test_the_warning_says_read_is_absent_or_longer_than_the_threshold(
    timeouts: ClientTimeoutsInfo | None, threshold: float, words: str | None
) -> None:
    warning = client_timeout_warning(timeouts, threshold)
    if words is None:
        assert warning is None
    else:
        assert warning is not None and words in warning and FIX in warning


def apply(registry: Registry, read: float | None) -> str | None:
    info = ProcessInfo(
        instance_id=f"p-{read}",
        pid=1234,
        host="h",
        create_time=1.0,
        service="svc",
        client_timeouts=figures(read),
    )
    heartbeat = Heartbeat(interval=1.0, open_spans=0, dropped_events=0, wall_minus_mono=0.0)
    batch = Batch(v=PROTOCOL_VERSION, process=info, seq=1, sent_at=1.0, heartbeat=heartbeat)
    registry.apply(batch, now=1.0)
    return registry.processes[info.instance_id].timeout_warning


def test_the_registry_compares_with_the_configured_response_threshold() -> None:
    by_kind = {"response": 60.0, "default": 300.0}
    plain = Registry(Thresholds(by_kind=by_kind))
    assert plain.response_threshold() == 60.0
    assert apply(plain, 45.0) is None
    assert "threshold of 60 s" in (apply(plain, 90.0) or "")
    # A rule for every model call is the threshold in force; one for some names is not.
    ruled = Registry(
        Thresholds(
            by_kind=by_kind,
            rules=(
                Rule(kind="response", name="gpt-*", threshold=5.0),
                Rule(kind="response", name="*", threshold=20.0),
            ),
        )
    )
    assert ruled.response_threshold() == 20.0
    assert "threshold of 20 s" in (apply(ruled, 45.0) or "")
    assert ruled.seen_names() == []  # asking lists no span name as seen


def test_status_gives_one_warning_line_per_service_and_warning() -> None:
    from watchdog.status_cli import warnings_of

    def process(pid: int, service: str = "api", warning: str | None = "waits 600 s") -> Any:
        return {"service": service, "pid": pid, "host": "h", "timeout_warning": warning}

    listed = [process(1), process(2), process(3, warning=None), process(4, service="jobs")]
    listed.append({"service": "old", "pid": 5, "host": "h"})  # from an older sidecar
    assert warnings_of(listed) == [
        "api (pid 1 on h, 2 on h): waits 600 s",
        "jobs (pid 4 on h): waits 600 s",
    ]


# -- bad input and an older sidecar -----------------------------------------------------


def raw_batch(client_timeouts: object) -> bytes:
    wire = WireProcess("unused")
    process = msgspec.to_builtins(wire.info)
    process["client_timeouts"] = client_timeouts
    body = {
        "v": PROTOCOL_VERSION,
        "process": process,
        "seq": 1,
        "sent_at": 100.0,
        "heartbeat": {"interval": 1.0, "open_spans": 0, "dropped_events": 0, "wall_minus_mono": 0},
    }
    return json.dumps(body).encode()


GOOD = {"connect": 5, "read": 600, "max_retries": 2, "source": "openai default"}


@pytest.mark.parametrize(
    ("client_timeouts", "words"),
    [
        (
            {**GOOD, "read": "600"},
            "Expected `float | null`, got `str` - at `$.process.client_timeouts.read`",
        ),
        ({**GOOD, "max_retries": 2.5}, "$.process.client_timeouts.max_retries"),
        ({**GOOD, "connect": -1}, "$.process.client_timeouts.connect"),
        ({**GOOD, "source": "x" * 65}, "$.process.client_timeouts.source"),
        ({**GOOD, "proxy": "http://..."}, "unknown field `proxy` - at `$.process.client_timeouts`"),
        ("600", "$.process.client_timeouts"),
    ],
    ids=[
        "read-as-text",
        "fractional-retries",
        "negative",
        "long-source",
        "unknown-field",
        "not-an-object",
    ],
)
def test_bad_client_timeouts_get_a_4xx_naming_the_field_and_the_sidecar_stays_up(
    sidecar_factory: Callable[..., SidecarProcess], client_timeouts: object, words: str
) -> None:
    sidecar = sidecar_factory(CONFIG)
    headers = {"content-type": "application/json"}
    url = f"{sidecar.url}/v1/events"
    refused = httpx.post(url, content=raw_batch(client_timeouts), headers=headers, timeout=5)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "invalid_batch"
    assert words in refused.json()["detail"]
    assert httpx.get(f"{sidecar.url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{sidecar.url}/v1/processes", timeout=5).json()["processes"] == []
    # Good figures from the next process are taken, and judged.
    taken = httpx.post(url, content=raw_batch(GOOD), headers=headers, timeout=5)
    assert taken.status_code == 200, taken.text
    [process] = httpx.get(f"{sidecar.url}/v1/processes", timeout=5).json()["processes"]
    assert process["client_timeouts"] == GOOD and "waits 600 s" in process["timeout_warning"]


class _OldProcessInfo(msgspec.Struct, forbid_unknown_fields=True):
    """ProcessInfo as a sidecar from before ``client_timeouts`` decodes it."""

    instance_id: str
    pid: int
    host: str
    create_time: float
    service: str
    sdk_version: str = ""
    watchdog_version: str = ""


class _OldBatch(msgspec.Struct):
    process: _OldProcessInfo


class OldSidecar:
    """A loopback sidecar that refuses ``client_timeouts`` as an older one does (422,
    unknown field); records the batches it accepts."""

    def __init__(self) -> None:
        self.refused = 0
        self.accepted: list[Batch] = []
        self.lock = threading.Lock()
        old = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    msgspec.json.decode(body, type=_OldBatch)
                except msgspec.ValidationError as exc:
                    status = 422
                    payload = json.dumps(
                        {"error": "invalid_batch", "detail": f"invalid batch: {exc}"}
                    ).encode()
                    with old.lock:
                        old.refused += 1
                else:
                    status = 200
                    payload = encode(Reply(v=PROTOCOL_VERSION, sidecar_id="old"))
                    with old.lock:
                        old.accepted.append(decode_batch(body))
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = LoopbackServer(Handler)
        self.url = self.server.url


def test_an_older_sidecar_gets_the_process_without_its_client_timeouts(watch: Watch) -> None:
    old = OldSidecar()
    old.server.start()
    try:
        processor = watch(old.url, heartbeat_interval=0.2, flush_interval=0.05)
        with trace("registers"):
            pass
        wait_until(lambda: old.accepted)
        processor.force_flush()
        assert old.refused >= 1  # the first try carried them
        assert all(batch.process.client_timeouts is None for batch in old.accepted)
        # Nothing was lost to the refusal: the trace's events went with the retry.
        names = [e.name for b in old.accepted for e in b.events if isinstance(e, SpanStart)]
        assert names == ["registers"]
    finally:
        old.server.stop()


# -- the live page ----------------------------------------------------------------------


def test_the_page_shows_the_warning_in_the_process_row_and_the_figures_in_its_detail(
    sidecar_factory: Callable[..., SidecarProcess],
) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.conftest import need_tool
    from tests.test_page import CHROMIUM_ARGS

    chromium = need_tool("chromium", "the page test drives a real headless browser")
    sidecar = sidecar_factory(CONFIG)
    warned, calm = WireProcess(sidecar.url, service="warned"), WireProcess(sidecar.url)
    warned.info = msgspec.structs.replace(warned.info, client_timeouts=figures(600.0))
    calm.info = msgspec.structs.replace(calm.info, client_timeouts=figures(20.0))
    warned.send()
    calm.send()
    listed = httpx.get(f"{sidecar.url}/v1/processes", timeout=5).json()["processes"]
    warning = next(p["timeout_warning"] for p in listed if p["service"] == "warned")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(sidecar.url)
            row = page.locator(f'#processes tr[data-key="process:{warned.info.instance_id}"]')
            expect(row.locator(".timeout-warning")).to_have_text("⚠ " + warning)
            expect(row.locator(".timeout-warning")).to_be_visible()
            other = page.locator(f'#processes tr[data-key="process:{calm.info.instance_id}"]')
            expect(other).to_have_count(1)
            expect(other.locator(".timeout-warning")).to_have_count(0)
            row.click()
            expect(page.locator('#detail dd[data-field="client timeouts"]')).to_have_text(
                "read 600 s · connect 5 s · 2 retries (client)"
            )
            expect(page.locator("#detail .timeout-warning")).to_have_text("⚠ " + warning)
            assert errors == [], errors
        finally:
            browser.close()
