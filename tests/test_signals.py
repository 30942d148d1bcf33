"""The signal steps of the abort ladder, with real app processes and real signals —
and the guarantees that keep them away from processes that did not prove who they are."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import thresholds, wait_until
from tests.launcher import SidecarProcess
from tests.receivers import Receiver
from watchdog.protocol import PROTOCOL_VERSION
from watchdog.standin import StandInServer

Factory = Callable[..., SidecarProcess]

KILL_BLOCKING_TOOLS = (
    thresholds(function=1.5)
    + """
[abort]
grace_seconds = 1.5
{extra}
[[rules]]
kind = "function"
action = "kill"
"""
)

pytestmark = pytest.mark.slow


def steps(sidecar: SidecarProcess) -> list[tuple[str, str]]:
    return [(e["step"], e["outcome"]) for e in sidecar.logs if e.get("event") == "abort_step"]


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_blocked_loop_escalates_from_cancel_to_sigterm(
    standin: StandInServer,
    sidecar_factory: Factory,
    apps: Callable[..., subprocess.Popen[str]],
    transport: str,
    tmp_path: Path,
) -> None:
    socket_path = tmp_path / "watchdog.sock"
    server = f'[server]\nunix_socket = "{socket_path}"\n' if transport == "unix" else ""
    sidecar = sidecar_factory(server + KILL_BLOCKING_TOOLS.format(extra=""))
    app = apps(
        "blocking", sidecar.url if transport == "tcp" else f"unix://{socket_path}", standin.url
    )
    assert app.wait(20) == -15  # ended by SIGTERM
    wait_until(lambda: ("terminate", "succeeded") in steps(sidecar))
    assert steps(sidecar) == [
        ("cancel", "requested"),
        ("cancel", "timed_out"),
        ("cancel_trace", "requested"),
        ("cancel_trace", "timed_out"),
        ("terminate", "sent"),
        ("terminate", "succeeded"),
    ]
    identity = sidecar.wait_for("process_identity", timeout=1)
    assert identity is not None and identity["verified"] is True
    sent = next(
        e for e in sidecar.logs if e.get("event") == "abort_step" and e["outcome"] == "sent"
    )
    assert f"SIGTERM sent to pid {app.pid}" in sent["detail"]
    # The process's spans left with it; its alert and incident resolved.
    wait_until(lambda: httpx.get(f"{sidecar.url}/v1/spans").json()["spans"] == [])


def test_cancel_rule_aborts_the_hung_run_and_the_process_serves_on(
    standin: StandInServer, sidecar_factory: Factory, apps: Callable[..., subprocess.Popen[str]]
) -> None:
    with Receiver() as webhook:
        sidecar = sidecar_factory(
            KILL_BLOCKING_TOOLS.format(extra="")
            .replace('kind = "function"', 'kind = "response"')
            .replace('action = "kill"', 'action = "cancel"')
            .replace("response = 60", "response = 1.5")
            .replace("function = 1.5", "function = 60")
            + f'[[alerts]]\ntype = "webhook"\nurl = "{webhook.url}"\n'
        )
        app = apps("cancel", sidecar.url, standin.url)
        out, _ = app.communicate(timeout=30)
        assert app.returncode == 0
        lines = out.strip().splitlines()
        assert lines[0].startswith("aborted: agents-watchdog: response span")
        assert lines[1] == "healthy: Healthy"  # the other run in the process, undisturbed
        assert steps(sidecar) == [("cancel", "requested"), ("cancel", "succeeded")]
        assert not [s for s in steps(sidecar) if s[0] in ("terminate", "kill")]
        resolved = webhook.wait_for(lambda b: len(b) == 2)[1]
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["annotations"]["abort"].startswith("cancel: delivered")


def test_process_ignoring_sigterm_gets_sigkill(
    standin: StandInServer, sidecar_factory: Factory, apps: Callable[..., subprocess.Popen[str]]
) -> None:
    sidecar = sidecar_factory(KILL_BLOCKING_TOOLS.format(extra=""))
    app = apps("stubborn", sidecar.url, standin.url)
    assert app.wait(25) == -9
    wait_until(lambda: ("kill", "succeeded") in steps(sidecar))
    assert [s for s in steps(sidecar) if s[0] in ("terminate", "kill")] == [
        ("terminate", "sent"),
        ("terminate", "timed_out"),
        ("kill", "sent"),
        ("kill", "succeeded"),
    ]


def test_dry_run_and_the_rate_limit(
    standin: StandInServer, sidecar_factory: Factory, apps: Callable[..., subprocess.Popen[str]]
) -> None:
    sidecar = sidecar_factory(KILL_BLOCKING_TOOLS.format(extra="dry_run = true\nmax_signals = 1"))
    first = apps("blocking", sidecar.url, standin.url)
    second = apps("blocking", sidecar.url, standin.url)
    wait_until(lambda: ("terminate", "rate_limited") in steps(sidecar), within=20)
    wait_until(lambda: ("terminate", "dry_run") in steps(sidecar), within=20)
    assert steps(sidecar).count(("terminate", "dry_run")) == 1
    assert not [s for s in steps(sidecar) if s[1] in ("sent", "requested")]
    assert first.poll() is None and second.poll() is None  # nothing was signalled


def fake_batch(pid: int, create_time: float, instance: str, seq: int, start: bool) -> bytes:
    now = time.monotonic()
    events = [["s", "span_fake", "trace_fake", None, "function", "crunch", now - 5.0, 1, None]]
    return json.dumps(
        {
            "v": PROTOCOL_VERSION,
            "process": {
                "instance_id": instance,
                "pid": pid,
                "host": "h",
                "create_time": create_time,
                "service": "impostor",
            },
            "seq": seq,
            "sent_at": now,
            "heartbeat": {
                "interval": 1.0,
                "open_spans": 1,
                "dropped_events": 0,
                "wall_minus_mono": time.time() - now,
            },
            "events": events if start else [],
            "resync": [events[0]] if start else None,
        }
    ).encode()


@pytest.mark.parametrize("case", ["someone-elses-pid", "reused-pid"])
def test_unverified_processes_are_never_signalled(sidecar_factory: Factory, case: str) -> None:
    sidecar = sidecar_factory(KILL_BLOCKING_TOOLS.format(extra=""))
    bystander = subprocess.Popen(["sleep", "120"])
    try:
        if case == "someone-elses-pid":
            # Claims the bystander's pid and its true create time.
            pid, created = bystander.pid, psutil.Process(bystander.pid).create_time()
        else:
            # Our own pid, but the create time of an earlier process that had it.
            pid, created = os.getpid(), psutil.Process().create_time() - 1000
        with httpx.Client() as client:
            for seq in range(1, 200):
                reply = client.post(
                    f"{sidecar.url}/v1/events",
                    content=fake_batch(pid, created, f"fake-{case}", seq, start=seq == 1),
                    headers={"content-type": "application/json"},
                )
                assert reply.status_code == 200
                if ("terminate", "refused") in steps(sidecar):
                    break
                time.sleep(0.2)  # an app's heartbeat pace, not synchronisation
        refused = next(
            e for e in sidecar.logs if e.get("event") == "abort_step" and e["outcome"] == "refused"
        )
        expected = "not the claimed pid" if case == "someone-elses-pid" else "create time differs"
        assert expected in refused["detail"]
        assert not [s for s in steps(sidecar) if s[1] == "sent"]
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_never_pid_1_nor_the_sidecar_itself() -> None:
    from watchdog.protocol import ProcessInfo
    from watchdog.sidecar.identity import send_signal

    me = psutil.Process()
    for pid, created in ((1, psutil.Process(1).create_time()), (me.pid, me.create_time())):
        sent, why = send_signal(ProcessInfo("x", pid, "h", created, "s"), 15)
        assert not sent and f"refusing to signal pid {pid}" in why
