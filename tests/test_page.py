"""The live page in a real headless Chromium: a real app hangs, the page shows it, its
stack and its incident, and aborts it; 5,000 open spans stay usable.

Set ``AGENTS_WATCHDOG_SCREENSHOT=PATH`` to also write the screenshot there (the README's
docs/page.png is made this way); every run saves one under pytest's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from tests.agents_app import AppRun, Gate, agent_with_tool, coordinator_with_researcher
from tests.conftest import need_tool, thresholds, wait_until
from tests.launcher import SidecarProcess
from tests.wire_process import WireProcess, runs
from watchdog.processor import RunAborted, WatchdogProcessor
from watchdog.sidecar.web import STATIC, static_files
from watchdog.standin import StandInServer

TOKEN = "page-token"
THRESHOLD = 1.5
CONFIG = (
    thresholds(response=THRESHOLD)
    + """
[abort]
grace_seconds = 3
# The 5,000 spans of the load test: open, not hung.
[[rules]]
kind = "response"
name = "bulk-model"
threshold = 600
"""
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def sidecar() -> Iterator[SidecarProcess]:
    with SidecarProcess(CONFIG, env={"AGENTS_WATCHDOG_TOKEN": TOKEN}) as process:
        yield process


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = need_tool("chromium", "the page tests drive a real headless browser")
    with sync_playwright() as playwright:
        # Debian's Chromium: Playwright's own browser download is not used.
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], errors


def test_page_shell_is_served_with_its_files_and_no_data(sidecar: SidecarProcess) -> None:
    shell = httpx.get(sidecar.url + "/")
    assert shell.status_code == 200 and "text/html" in shell.headers["content-type"]
    assert "default-src 'self'" in shell.headers["content-security-policy"]
    assert '<script src="/static/page.js"' in shell.text and "{{version}}" not in shell.text
    for name, kind in (("page.js", "javascript"), ("page.css", "text/css")):
        static = httpx.get(f"{sidecar.url}/static/{name}")
        assert static.status_code == 200 and kind in static.headers["content-type"]
    assert httpx.get(sidecar.url + "/static/nope.js").status_code == 404
    # The data is behind the token, like every /v1 read on a sidecar that has one.
    assert httpx.get(sidecar.url + "/v1/processes").status_code == 401
    assert httpx.get(sidecar.url + "/v1/spans/span_x").status_code == 401


# `import ... from "./x.js"`, `import "./x.js"` and `export ... from "./x.js"`, over lines.
MODULE_SPECIFIER = re.compile(
    r"""\b(?:import|export)\s*(?:[\w$*{}\s,]*?\bfrom\s*)?["']([^"']+)["']"""
)
SCRIPT_TAG = re.compile(r"<script\b([^>]*)>")
SCRIPT_SRC = re.compile(r'\bsrc="([^"]+)"')


def test_every_module_the_page_imports_is_served_as_javascript_and_none_is_orphaned(
    sidecar: SidecarProcess,
) -> None:
    shell = httpx.get(sidecar.url + "/").text
    tags = SCRIPT_TAG.findall(shell)
    # Every script is a module the page loads from its own files (no inline script).
    assert tags and all('type="module"' in tag and SCRIPT_SRC.search(tag) for tag in tags), tags
    pending = [urljoin(sidecar.url + "/", src) for tag in tags for src in SCRIPT_SRC.findall(tag)]
    served: set[str] = set()
    while pending:
        url = pending.pop()
        path = urlsplit(url).path
        if path in served:
            continue
        module = httpx.get(url)
        assert module.status_code == 200, path
        # Browsers refuse an ES module served under any type that is not JavaScript.
        assert module.headers["content-type"].startswith("text/javascript"), (path, module.headers)
        served.add(path)
        for specifier in MODULE_SPECIFIER.findall(module.text):
            assert specifier.startswith("./") or specifier.startswith("../"), (path, specifier)
            assert specifier.endswith(".js"), (path, specifier)  # no bare names: no build step
            pending.append(urljoin(url, specifier))
    shipped = {"/static/" + p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*.js")}
    assert len(served) > 1
    assert shipped - served == set(), "modules that nothing imports"
    assert served - shipped == set()


def test_scripts_are_javascript_whatever_the_hosts_mime_table_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A host whose MIME table knows no script type (as a Windows registry may say).
    monkeypatch.setattr("starlette.responses.guess_type", lambda _path: ("text/plain", None))
    app = Starlette(routes=[Mount("/static", app=static_files())])
    with TestClient(app) as client:
        script = client.get("/static/js/model.js")
        assert script.status_code == 200
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        # Only scripts are relabelled; a revalidated script is still a plain 304.
        assert client.get("/static/page.css").headers["content-type"].startswith("text/plain")
        again = client.get("/static/js/model.js", headers={"if-none-match": script.headers["etag"]})
        assert again.status_code == 304 and "content-type" not in again.headers


def test_processes_and_single_span_endpoints(sidecar: SidecarProcess) -> None:
    from watchdog.protocol import LoopReport

    wire = WireProcess(sidecar.url, TOKEN, service="api-check")
    try:
        wire.send(
            runs(2, hung=[1], prefix="api"),
            loops=[LoopReport(thread_id=7, lag=4.0, stack="File 'app.py', line 3, in handler")],
        )
        listed = httpx.get(sidecar.url + "/v1/processes", headers=AUTH).json()["processes"]
        mine = next(p for p in listed if p["instance_id"] == wire.info.instance_id)
        assert mine["service"] == "api-check" and mine["state"] == "live"
        assert mine["pid"] == wire.info.pid and mine["host"] == "wire-host"
        assert mine["open_spans"] == 10 and mine["verified"] is not True
        assert mine["loops"] == [
            {
                "thread_id": 7,
                "lag_seconds": 4.0,
                "blocked": True,
                "stack": mine["loops"][0]["stack"],
            }
        ]
        assert mine["loop_lag_seconds"] == 4.0 and "handler" in mine["loops"][0]["stack"]
        assert 0 <= mine["heartbeat_age_seconds"] < 60
        # The stuck model call is flagged at once (open 100 s, threshold 1.5 s).
        wait_until(
            lambda: (
                next(
                    p["hung_spans"]
                    for p in httpx.get(sidecar.url + "/v1/processes", headers=AUTH).json()[
                        "processes"
                    ]
                    if p["instance_id"] == wire.info.instance_id
                )
                == 1
            )
        )
        one = httpx.get(
            f"{sidecar.url}/v1/spans/span_api_r1",
            params={"instance_id": wire.info.instance_id},
            headers=AUTH,
        ).json()
        assert one["state"] == "hung" and one["name"] == "stuck"
        incident_id = wait_until(
            lambda: httpx.get(f"{sidecar.url}/v1/spans/span_api_r1", headers=AUTH).json()[
                "incident_id"
            ]
        )
        incident = httpx.get(f"{sidecar.url}/v1/incidents/{incident_id}", headers=AUTH).json()
        assert incident["span_id"] == "span_api_r1"
        missing = httpx.get(f"{sidecar.url}/v1/spans/span_none", headers=AUTH)
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    finally:
        wire.goodbye()


def _started(sidecar: SidecarProcess, span_id: str) -> float:
    listed = httpx.get(sidecar.url + "/v1/spans", headers=AUTH).json()["spans"]
    found = next(s for s in listed if s["span_id"] == span_id)
    return datetime.fromisoformat(found["started_at"].replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
def test_hung_span_shows_highlighted_with_stack_and_the_abort_button_ends_it(
    sidecar: SidecarProcess,
    page: Page,
    standin: StandInServer,
    watch: Callable[..., WatchdogProcessor],
    tmp_path: Path,
) -> None:
    page.goto(sidecar.url)
    # The sidecar has a token: the page asks for it before showing anything.
    expect(page.locator("#token-dialog")).to_be_visible()
    page.fill("#token-input", TOKEN)
    page.click("#token-save")
    expect(page.locator("#conn")).to_have_class("conn ok")
    page.evaluate("window.loadedOnce = true")  # gone if the page ever reloads

    processor = watch(sidecar.url, token=TOKEN, service="briefings")
    gate = Gate()

    async def slow_report() -> str:
        await gate.wait()  # a tool still at work, well within its threshold
        return "report"

    healthy = AppRun(standin, agent_with_tool(("tool=fetch_report", "reply=Done"), slow_report))
    healthy.start()
    stuck = AppRun(standin, coordinator_with_researcher(("hang",)), guarded=True).start()

    hung_row = page.locator('.row.state-hung[data-kind="response"]')
    hung_row.wait_for(timeout=15_000)
    seen_at = time.time()
    assert page.evaluate("window.loadedOnce") is True
    hung = httpx.get(sidecar.url + "/v1/spans?state=hung", headers=AUTH).json()["spans"]
    assert len(hung) == 1 and hung[0]["agent"] == "Researcher"
    span_id = hung[0]["span_id"]
    # Shown without a reload within threshold + 2 s of the span's start.
    print(f"\nhung row shown {seen_at - _started(sidecar, span_id):.2f} s after the span started")
    assert seen_at - _started(sidecar, span_id) <= THRESHOLD + 2.0
    expect(page.locator("#count-hung")).to_have_attribute("data-count", "1")
    expect(hung_row).to_have_count(1)
    assert hung_row.get_attribute("data-key") == f"{hung[0]['instance_id']}/{span_id}"

    hung_row.click()
    expect(page.locator("#detail .title")).to_have_text("response of Researcher")
    stack = page.locator("#detail-stack")
    expect(stack).to_contain_text("Task ", timeout=10_000)
    expect(stack).to_contain_text("Thread 'agents-app'")
    expect(page.locator("#span-cause")).to_contain_text(
        "Probable cause: waiting on the model's HTTP response"
    )
    timeline = page.locator("#detail-timeline")
    expect(timeline.locator('li[data-event="detected"]')).to_have_count(1, timeout=5_000)
    expect(timeline.locator('li[data-event="stacks"]')).to_have_count(1, timeout=5_000)
    expect(page.locator("#incidents li", has_text="response of Researcher")).to_have_count(1)

    shot = tmp_path / "page.png"
    page.screenshot(path=shot)
    assert shot.stat().st_size > 10_000
    if os.environ.get("AGENTS_WATCHDOG_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["AGENTS_WATCHDOG_SCREENSHOT"])
    print(f"\nscreenshot: {shot}")

    # Abort: the token field is filled from this tab's session; a confirm step first.
    expect(page.locator("#abort-token")).to_have_value(TOKEN)
    page.click("#abort-cancel")
    confirm = page.locator("#abort-confirm")
    expect(confirm).to_be_visible()
    assert standin.hanging == 1  # nothing was sent before the confirmation
    confirm.click()
    expect(page.locator("#abort-result")).to_have_text("Abort started: cancel → cancel_trace")
    # The hung call is cancelled: its row leaves, and its run ends with RunAborted.
    expect(hung_row).to_have_count(0, timeout=10_000)
    expect(page.locator("#detail .gone")).to_be_visible()
    with pytest.raises(RunAborted, match="requested by operator"):
        stuck.wait(timeout=15)
    assert standin.hanging == 0
    gate.open()
    assert healthy.wait(timeout=15) == "Done"
    processor.shutdown(timeout=5)


def test_blocked_loop_marks_its_process_and_the_spans_on_it(
    sidecar: SidecarProcess, page: Page
) -> None:
    from watchdog.protocol import LoopReport

    wire = WireProcess(sidecar.url, TOKEN, service="sync-in-async")
    blocked = LoopReport(thread_id=1, lag=3.2, stack='  File "views.py", line 9, in report\n')
    try:
        wire.send(runs(1, prefix="blk"), loops=[blocked])
        page.context.add_init_script(
            f"sessionStorage.setItem('agents-watchdog-token', {json.dumps(TOKEN)})"
        )
        page.goto(sidecar.url)
        expect(page.locator("#count-blocked")).to_have_attribute("data-count", "1")
        process_row = page.locator(f'#processes tr[data-key="process:{wire.info.instance_id}"]')
        expect(process_row).to_have_class("state-live blocked")
        # Every open span whose code runs on the blocked loop's thread.
        expect(page.locator(".row.blocked")).to_have_count(5)
        process_row.click()
        expect(page.locator("#detail pre.stack")).to_contain_text('"views.py", line 9')
    finally:
        wire.goodbye()


def test_a_blind_process_is_marked_with_its_reason(sidecar: SidecarProcess, page: Page) -> None:
    wire = WireProcess(sidecar.url, TOKEN, service="untraced")
    reason = "tracing is off: OPENAI_AGENTS_DISABLE_TRACING=1; fix: unset it"
    try:
        wire.send(blind=reason)
        page.context.add_init_script(
            f"sessionStorage.setItem('agents-watchdog-token', {json.dumps(TOKEN)})"
        )
        page.goto(sidecar.url)
        process_row = page.locator(f'#processes tr[data-key="process:{wire.info.instance_id}"]')
        expect(process_row).to_have_class("state-blind")
        expect(process_row.locator(".blind-reason")).to_have_text(reason)
    finally:
        wire.goodbye()


@pytest.mark.slow
def test_five_thousand_open_spans_render_and_the_page_stays_responsive(
    sidecar: SidecarProcess, page: Page
) -> None:
    total_runs, hung = 1000, [3, 150, 400, 401, 402, 650, 777, 800, 901, 999]
    wire = WireProcess(sidecar.url, TOKEN, service="bulk")
    wire.send(runs(total_runs, hung=hung))
    try:
        wait_until(
            lambda: (
                len(httpx.get(sidecar.url + "/v1/spans?state=hung", headers=AUTH).json()["spans"])
                == len(hung)
            )
        )
        page.context.add_init_script(
            f"sessionStorage.setItem('agents-watchdog-token', {json.dumps(TOKEN)})"
        )
        started = time.monotonic()
        page.goto(sidecar.url)
        expect(page.locator("#count-spans")).to_have_attribute("data-count", "5000")
        first_seen = time.monotonic() - started
        expect(page.locator("#count-hung")).to_have_attribute("data-count", str(len(hung)))
        tree = page.locator("#tree")
        # Big lists open only the troubled runs: 1 process row, 10 runs of 5 rows, 990 closed.
        expect(tree).to_have_attribute("data-rows", str(1 + 5 * len(hung) + total_runs - len(hung)))
        expect(page.locator('.row.state-hung[data-kind="response"]').first).to_be_visible()
        # Only the rows in view exist as elements.
        assert page.locator("#tree .row:not([hidden])").count() < 100

        def stats() -> dict[str, Any]:
            result: dict[str, Any] = page.evaluate("window.watchdogPage.stats")
            return result

        clicked = time.monotonic()
        page.click("#expand-all")
        expect(tree).to_have_attribute("data-rows", str(1 + 5 * total_runs))
        expand_all = time.monotonic() - clicked

        # Scrolled to the end, the last of the 5,001 rows is drawn, and it answers a click.
        tree.evaluate("element => { element.scrollTop = element.scrollHeight; }")
        last_row = page.locator(f'#tree .row[data-index="{5 * total_runs}"]')
        expect(last_row).to_be_visible()
        key = last_row.get_attribute("data-key")
        assert key is not None and key.startswith(wire.info.instance_id + "/span_bulk_")
        name = last_row.locator(".name").inner_text()
        clicked = time.monotonic()
        last_row.click()
        expect(page.locator("#detail .title")).to_have_text(name)
        detail_shown = time.monotonic() - clicked
        span_field = page.locator('#detail dd[data-field="span"]')
        expect(span_field).to_have_text(key.split("/", 1)[1])

        page.fill("#filter", "stuck")
        # Each stuck call with the path down to it: trace, agent, turn, response.
        expect(tree).to_have_attribute("data-rows", str(1 + 4 * len(hung)))
        page.fill("#filter", "")
        wait_until(lambda: stats()["renders"] >= 6, within=20)

        measured = stats()
        refreshes = measured["renderMs"][1:]
        print(
            "\n5,000 open spans: first render {:.0f} ms after navigation (page clock: {} ms; "
            "its render {:.1f} ms), per-refresh render median {:.1f} ms / max {:.1f} ms over {} "
            "refreshes, fetch median {:.0f} ms; expand all {:.0f} ms, click to detail {:.0f} ms".format(
                first_seen * 1000,
                measured["firstRenderMs"],
                measured["renderMs"][0],
                statistics.median(refreshes),
                max(refreshes),
                len(refreshes),
                statistics.median(measured["fetchMs"]),
                expand_all * 1000,
                detail_shown * 1000,
            )
        )
        assert measured["spans"] == 5000
    finally:
        wire.goodbye()
