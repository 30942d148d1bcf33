"""The sidecar on a Unix socket: owner-only, the processor connects to it, and the
kernel's peer credentials verify who the app is."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from agents import custom_span, trace

from tests.conftest import spans, wait_until
from tests.launcher import SidecarProcess
from watchdog.processor import WatchdogProcessor

Factory = Callable[..., SidecarProcess]
Watch = Callable[..., WatchdogProcessor]


def test_processor_over_unix_socket_is_verified_by_peer_credentials(
    sidecar_factory: Factory, watch: Watch, tmp_path: Path
) -> None:
    path = tmp_path / "watchdog.sock"
    path.write_bytes(b"")  # not a socket: refused below, then replaced by a real one
    result = subprocess.run(
        [sys.executable, "-m", "watchdog.cli", "serve", "--port", "0", "--unix-socket", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "exists and is not a socket" in result.stderr
    path.unlink()

    sidecar = sidecar_factory(f'[server]\nunix_socket = "{path}"\n')
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # owner only
    processor = watch(f"unix://{path}", service="over-uds")
    with trace("wf"), custom_span("inside"):
        processor.force_flush()
        listing = wait_until(lambda: [s for s in spans(sidecar) if s["name"] == "inside"])
        assert listing[0]["service"] == "over-uds"
    identity = sidecar.wait_for("process_identity", timeout=5)
    assert identity is not None and identity["verified"] is True
    processor.shutdown()
    sidecar.stop()
    assert not path.exists()  # removed on a clean stop
