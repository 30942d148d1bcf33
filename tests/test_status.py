"""``agents-watchdog status`` against a live sidecar: its tables, its JSON, and its exit
codes (0 all well, 1 attention, 2 unknown)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, wait_until
from tests.launcher import SidecarProcess
from tests.wire_process import WireProcess, runs
from watchdog.cli import main
from watchdog.protocol import LoopReport

TOKEN = "status-token"
CONFIG = """
[thresholds]
response = 30
default = 600
"""


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Some runners (pytest-xdist workers among them) export a narrow COLUMNS; the tables
    # would then cut the names these tests look for.
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(scope="module")
def sidecar() -> Iterator[SidecarProcess]:
    with SidecarProcess(CONFIG, env={"AGENTS_WATCHDOG_TOKEN": TOKEN}) as process:
        yield process


def status(sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    """Run the command in-process: (exit code, stdout, stderr)."""
    code = main(["status", "--url", sidecar.url, "--token", TOKEN, *args])
    out, err = capsys.readouterr()
    return code, out, err


def process_state(sidecar: SidecarProcess, wire: WireProcess) -> dict[str, Any]:
    listed = httpx.get(
        sidecar.url + "/v1/processes", headers={"authorization": f"Bearer {TOKEN}"}
    ).json()["processes"]
    found: dict[str, Any] = next(p for p in listed if p["instance_id"] == wire.info.instance_id)
    return found


def test_all_well_exits_0_with_processes_and_spans(
    sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    wire = WireProcess(sidecar.url, TOKEN, service="calm")
    wire.send(runs(3, prefix="calm"))
    try:
        code, out, _ = status(sidecar, capsys, "--limit", "4")
        assert code == 0
        assert "calm" in out and "wire-host" in out and "999999" in out
        assert "Spans: 15 open, 0 hung, 0 orphaned (showing 4" in out
        assert "calm-run-0" in out  # the oldest open spans come first
        assert "OK: all processes live, nothing hung" in out
    finally:
        wire.goodbye()
    code, out, _ = status(sidecar, capsys)
    assert code == 0 and "no app process has reported" in out and "no open spans" in out


def test_a_hung_span_exits_1_and_is_listed_in_table_and_json(
    sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wire = WireProcess(sidecar.url, TOKEN, service="jammed")
    wire.send(runs(40, hung=[7], prefix="jam"))
    try:
        wait_until(lambda: process_state(sidecar, wire)["hung_spans"] == 1)
        code, out, _ = status(sidecar, capsys, "--limit", "0")
        assert code == 1
        assert "Spans: 200 open, 1 hung" in out
        assert "stuck" in out and "open too long" in out  # the hung one is listed anyway
        assert "ATTENTION: 1 problem(s)" in out
        assert "hung response span 'stuck' of agent 'Coordinator' in jammed (pid 999999)" in out
        # URL and token from the environment, as for the other commands.
        monkeypatch.setenv("AGENTS_WATCHDOG_URL", sidecar.url)
        monkeypatch.setenv("AGENTS_WATCHDOG_TOKEN", TOKEN)
        assert main(["status", "--json"]) == 1
        body = json.loads(capsys.readouterr().out)
        assert body["ok"] is False and body["exit_code"] == 1
        assert [s["name"] for s in body["spans"] if s["state"] == "hung"] == ["stuck"]
        assert len(body["spans"]) == 200
        assert body["processes"][0]["service"] == "jammed"
        assert body["processes"][0]["hung_spans"] == 1
    finally:
        wire.goodbye()


def test_a_blocked_loop_then_an_unresponsive_process_exit_1(
    sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    wire = WireProcess(sidecar.url, TOKEN, service="stalled", interval=0.2)
    try:
        wire.send(runs(1, prefix="stall"), loops=[LoopReport(thread_id=5, lag=3.0)])
        code, out, _ = status(sidecar, capsys)
        assert code == 1 and "loop blocked" in out
        assert "event loop of stalled (pid 999999 on wire-host) thread 5 is blocked" in out
        wire.send(loops=[LoopReport(thread_id=5, lag=0.01)])
        assert status(sidecar, capsys)[0] == 0
        # Heartbeats stop: after 5 intervals the process is unresponsive.
        wait_until(lambda: process_state(sidecar, wire)["state"] == "unresponsive")
        code, out, _ = status(sidecar, capsys)
        assert code == 1 and "process stalled (pid 999999 on wire-host) is unresponsive" in out
    finally:
        wire.goodbye()


def test_unknown_status_exits_2(
    sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTS_WATCHDOG_TOKEN", raising=False)
    assert main(["status", "--url", sidecar.url]) == 2
    assert "401" in capsys.readouterr().err
    assert main(["status", "--url", sidecar.url, "--token", "wrong"]) == 2
    assert "wrong bearer token" in capsys.readouterr().err
    assert main(["status", "--url", nobody_listening(), "--json"]) == 2
    body = json.loads(capsys.readouterr().out)
    assert body["exit_code"] == 2 and "cannot reach the sidecar" in body["error"]
    assert main(["status", "--url", sidecar.url, "--watch", "0"]) == 2
    with pytest.raises(SystemExit) as usage:
        main(["status", "--limit", "many"])
    assert usage.value.code == 2


def nobody_listening() -> str:
    """A loopback URL where nothing listens (a port bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_watch_refreshes_until_interrupted_and_exits_with_the_last_code(
    sidecar: SidecarProcess,
) -> None:
    wire = WireProcess(sidecar.url, TOKEN, service="watched")
    wire.send(runs(1, prefix="watch"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_WATCHDOG_")}
    env |= {"AGENTS_WATCHDOG_URL": sidecar.url, "AGENTS_WATCHDOG_TOKEN": TOKEN}
    command = [sys.executable, "-m", "watchdog.cli", "status", "--watch", "0.2", "--json"]
    watcher = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout is not None
        first = json.loads(watcher.stdout.readline())
        assert first["exit_code"] == 0 and first["processes"][0]["service"] == "watched"
        wire.send(runs(1, hung=[0], prefix="watch-late"))
        for _ in range(100):  # refreshes until the hung span shows (bounded)
            snapshot = json.loads(watcher.stdout.readline())
            if snapshot["exit_code"] == 1:
                break
        assert snapshot["exit_code"] == 1 and snapshot["problems"]
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(10) == 1
    finally:
        if watcher.poll() is None:
            watcher.kill()
        watcher.communicate(timeout=10)
        wire.goodbye()
