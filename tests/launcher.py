"""The sidecar child process as the tests drive it.

The demo's launcher (``watchdog._sidecar_process``), plus what only failure scenarios
need: a sidecar that dies without any shutdown, and one that comes back on its port.
"""

from __future__ import annotations

from typing import Self

from watchdog._sidecar_process import LogEntry
from watchdog._sidecar_process import SidecarProcess as _SidecarProcess

__all__ = ["LogEntry", "SidecarProcess"]


class SidecarProcess(_SidecarProcess):
    """A sidecar child process on loopback that a test may also kill or restart."""

    def kill(self) -> None:
        """SIGKILL: the sidecar dies without any shutdown."""
        process = self._process
        if process is not None:
            process.kill()
        self.stop()

    def restart(self) -> Self:
        """Stop and start again on the same port."""
        self.stop()
        return self.start()
