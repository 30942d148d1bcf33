"""systemd: the sidecar's notify protocol against a real socket, and the unit file
checked by ``systemd-analyze``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import REPO, need_tool, wait_until
from tests.launcher import SidecarProcess
from watchdog.sidecar.app import Sidecar
from watchdog.sidecar.config import load_config
from watchdog.sidecar.notify import Notifier, notify_address

UNIT = REPO / "deploy" / "systemd" / "agents-watchdog.service"
EXAMPLE_CONFIG = REPO / "deploy" / "systemd" / "config.toml"
MAX_EXPOSURE = 2.5


class NotifySocket:
    """The receiving end systemd would hold: a bound datagram socket."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def receive(self, timeout: float) -> str | None:
        """The next message, or None if none arrives within ``timeout`` seconds."""
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            return None
        return self.sock.recv(4096).decode()

    def drain(self) -> list[str]:
        """Every message already queued."""
        messages = []
        while (message := self.receive(0)) is not None:
            messages.append(message)
        return messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_path() -> Iterator[str]:
    # Short on purpose: a socket path has a limit of 107 bytes.
    folder = tempfile.mkdtemp(prefix="aw-notify-")
    try:
        yield os.path.join(folder, "notify")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fields(message: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in message.splitlines() if "=" in line)


# -- the protocol ---------------------------------------------------------------------


def test_abstract_socket_address_and_environment() -> None:
    name = f"agents-watchdog-test-{uuid.uuid4().hex}"
    assert notify_address("@" + name) == b"\0" + name.encode()
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    for bad in ("relative/notify", "@", "vsock:2:1234"):
        with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
            notify_address(bad)
    receiver = NotifySocket(b"\0" + name.encode())
    environ = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "3000000", "PATH": "/usr/bin"}
    try:
        notifier = Notifier.from_environ(environ)
        assert notifier is not None
        assert notifier.watchdog_interval == 1.5
        # Taken out of the environment, so programs the sidecar runs cannot speak for it.
        assert environ == {"PATH": "/usr/bin"}
        notifier.ready("serving")
        assert receiver.receive(5) == "READY=1\nSTATUS=serving"
        notifier.status("serving")  # unchanged: not sent again
        notifier.status("3 open spans")
        assert receiver.receive(5) == "STATUS=3 open spans"
        notifier.close()
    finally:
        receiver.close()


def test_watchdog_pings_only_for_the_named_process(notify_path: str) -> None:
    def interval(**environ: str) -> float | None:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": notify_path, **environ})
        assert notifier is not None
        notifier.close()
        return notifier.watchdog_interval

    assert interval() is None
    assert interval(WATCHDOG_USEC="0") is None
    assert interval(WATCHDOG_USEC="2000000", WATCHDOG_PID=str(os.getpid())) == 1.0
    assert interval(WATCHDOG_USEC="2000000", WATCHDOG_PID=str(os.getppid())) is None
    assert Notifier.from_environ({"WATCHDOG_USEC": "2000000"}) is None


def test_a_vanished_socket_never_raises(notify_path: str) -> None:
    notifier = Notifier(notify_path, watchdog_interval=0.01)
    assert notifier.send("READY=1") is False
    notifier.stopping()  # still quiet
    notifier.close()


def test_a_problem_stops_the_pings_and_asks_for_a_restart(notify_path: str) -> None:
    receiver = NotifySocket(notify_path)
    notifier = Notifier(notify_path, watchdog_interval=0.01)
    checks = iter([None, None, "agents-watchdog-detector ended"])
    try:
        # Returns by itself once the problem shows: nothing pings after it.
        asyncio.run(asyncio.wait_for(notifier.keep_alive(lambda: next(checks)), 10))
        assert receiver.drain() == [
            "WATCHDOG=1",
            "WATCHDOG=1",
            "STATUS=agents-watchdog-detector ended\nWATCHDOG=trigger",
        ]
    finally:
        notifier.close()
        receiver.close()


def test_sidecar_reports_a_dead_detector(tmp_path: Path) -> None:
    sidecar = Sidecar(load_config(None, environ={"XDG_DATA_HOME": str(tmp_path)}))
    assert sidecar.problem() == "not started"

    async def scenario() -> str | None:
        async with sidecar.lifespan(sidecar.app()):
            assert sidecar.problem() is None
            detector = next(
                task
                for task in asyncio.all_tasks()
                if task.get_name() == "agents-watchdog-detector"
            )
            detector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await detector
            return sidecar.problem()

    assert asyncio.run(scenario()) == "agents-watchdog-detector ended"


# -- a real sidecar process -----------------------------------------------------------


@pytest.mark.slow
def test_sidecar_speaks_sd_notify(notify_path: str) -> None:
    """READY=1 once it serves, pings from its loop (none while it is stopped), and
    STOPPING=1 on SIGTERM."""
    receiver = NotifySocket(notify_path)
    interval = 0.25
    sidecar = SidecarProcess(
        env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": str(int(interval * 2e6))}
    )
    pid: int | None = None
    try:
        sidecar.start()
        started = sidecar.wait_for("Application startup complete.", timeout=20)
        assert started is not None, f"the sidecar did not start: {sidecar.logs[-5:]}"
        first = receiver.receive(10)
        assert first is not None, "no READY=1 from the sidecar"
        # The first word it says is READY=1, and by then it answers requests.
        assert fields(first)["READY"] == "1"
        assert fields(first)["STATUS"].startswith("watching; serving on http://127.0.0.1:")
        ready = httpx.get(f"{sidecar.url}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text

        def pings(count: int) -> int:
            seen = 0
            while seen < count:
                message = receiver.receive(10)
                assert message is not None, f"the pings stopped after {seen}"
                seen += "WATCHDOG=1" in message.splitlines()
            return seen

        assert pings(3) == 3

        # A stopped process cannot ping: its loop is the one that pings.
        pid = sidecar.pid
        assert pid is not None
        stopped = psutil.Process(pid)
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: stopped.status() == psutil.STATUS_STOPPED)
        receiver.drain()  # sent before the stop took hold
        assert receiver.receive(4 * interval) is None
        os.kill(pid, signal.SIGCONT)
        assert pings(1) == 1

        assert sidecar.stop() == 0
        after = receiver.drain()
        stopping = [i for i, message in enumerate(after) if "STOPPING=1" in message]
        assert stopping, after
        # The pings ended with the stop.
        assert not any("WATCHDOG=1" in message for message in after[stopping[0] :])
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)  # so that close() can stop it
        sidecar.close()
        receiver.close()


# -- the unit file --------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's ``agents-watchdog``: the
    checks then judge the unit, not whether the program is installed system-wide."""
    program = shutil.which("agents-watchdog", path=str(Path(sys.executable).parent))
    assert program is not None, "agents-watchdog is not installed in this environment"
    text = UNIT.read_text(encoding="utf-8")
    assert "\nExecStart=agents-watchdog serve " in text
    copy = tmp_path / UNIT.name
    copy.write_text(
        text.replace("\nExecStart=agents-watchdog ", f"\nExecStart={program} "), encoding="utf-8"
    )
    return copy


def test_unit_is_a_notify_service_with_a_watchdog() -> None:
    settings = unit_settings()
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] and settings["Restart"] == ["on-failure"]
    assert settings["CapabilityBoundingSet"] == [""]


def test_example_config_fits_the_unit() -> None:
    """The example config loads, its socket is in the RuntimeDirectory and the incident
    database lands in the StateDirectory, given the XDG_DATA_HOME the unit sets."""
    settings = unit_settings()
    assert "XDG_DATA_HOME=%S" in settings["Environment"]
    config = load_config(EXAMPLE_CONFIG, environ={"XDG_DATA_HOME": "/var/lib"})
    (runtime,) = settings["RuntimeDirectory"]
    (state,) = settings["StateDirectory"]
    assert os.path.dirname(config.server.unix_socket) == f"/run/{runtime}"
    assert config.incidents.path == f"/var/lib/{state}/incidents.db"
    assert config.server.loopback


def test_unit_verifies(unit_copy: Path) -> None:
    analyze = need_tool("systemd-analyze", "checks the systemd unit")
    result = subprocess.run(
        [analyze, "verify", str(unit_copy)], capture_output=True, text=True, timeout=60
    )
    ours = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


def test_unit_security_exposure(unit_copy: Path) -> None:
    analyze = need_tool("systemd-analyze", "scores the unit's hardening")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit_copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", result.stdout)
    assert found, result.stdout
    score = float(found.group(1))
    print(f"systemd-analyze security: {score} {found.group(2)}")
    assert score <= MAX_EXPOSURE, result.stdout
