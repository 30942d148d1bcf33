"""The sidecar as a process: start, probes, graceful SIGTERM, bind failure, version."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.launcher import SidecarProcess


def test_probes_and_graceful_sigterm(sidecar_factory: Callable[..., SidecarProcess]) -> None:
    sidecar = sidecar_factory()
    health = httpx.get(f"{sidecar.url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = httpx.get(f"{sidecar.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert "agents-watchdog" in httpx.get(f"{sidecar.url}/").text
    text = httpx.get(f"{sidecar.url}/metrics").text
    assert 'agents_watchdog_build_info{python="' in text
    assert "agents_watchdog_processes" in text
    listening = sidecar.wait_for("listening", timeout=1)
    assert listening is not None and listening["auth"] is False
    assert sidecar.stop() == 0  # SIGTERM: a clean exit, status 0
    assert sidecar.wait_for("stopped", timeout=1) is not None


def test_port_in_use_is_a_clear_failure() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "watchdog.cli", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert '"event": "bind_failed"' in result.stderr
    assert "Address already in use" in result.stderr


def test_console_script_prints_version() -> None:
    script = Path(sys.executable).parent / "agents-watchdog"
    result = subprocess.run([str(script), "version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip()[0].isdigit()
