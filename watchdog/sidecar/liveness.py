"""Process liveness: which app processes stopped reporting, which died, which are gone.

Spans are judged by the detector; processes are judged here, once a second, from
their heartbeats. A process silent for ``processes.unresponsive_after`` heartbeat
intervals is unresponsive; one whose pid is gone is dead, and its open spans are
orphaned rather than hung. Whether a pid is gone can only be known for a process on
this host whose pid was proven to be the connection's own (see ``identity``).
"""

from __future__ import annotations

import asyncio
import socket

from watchdog.sidecar.config import Config
from watchdog.sidecar.identity import is_alive
from watchdog.sidecar.registry import ProcessRecord, Registry

__all__ = ["Liveness"]


class Liveness:
    """The liveness loop over the registry's processes, and the check it rests on."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.hostname = socket.gethostname()

    def alive(self, process: ProcessRecord) -> bool | None:
        """Whether the process is alive, where that can be known: its pid was proven
        to be the connection's own and it runs on this host; otherwise None."""
        if process.verified and process.info.host == self.hostname:
            return is_alive(process.info)
        return None

    async def run(self, registry: Registry) -> None:
        """Once a second, over processes (not spans): who stopped reporting, who died,
        whose orphans have been listed long enough. Runs until cancelled."""
        settings = self.config.processes
        while True:
            await asyncio.sleep(1.0)
            for process in list(registry.processes.values()):
                now = registry.clock()
                silent = process.silent_for(now)
                interval = process.heartbeat_interval
                if process.status == "dead":
                    if process.died_at is not None and now - process.died_at > (
                        settings.orphan_retention
                    ):
                        registry.forget(process.info.instance_id, now)
                    continue
                # Whether the pid is gone can only be known for a process on this host
                # whose pid was proven to be ours to see (same pid namespace).
                if (
                    silent > 2 * interval
                    and process.verified
                    and process.info.host == self.hostname
                ):
                    alive = await asyncio.to_thread(is_alive, process.info)
                    # Still silent after the check (mark_dead ignores the already dead).
                    if not alive and process.silent_for(registry.clock()) > 2 * interval:
                        registry.mark_dead(process, registry.clock())
                        continue
                if process.status == "live" and silent > settings.unresponsive_after * interval:
                    registry.mark_unresponsive(process, now)
                elif (
                    process.status == "unresponsive"
                    and not process.spans
                    and silent > settings.orphan_retention
                ):
                    # Gone without a goodbye, and nothing of it to watch: whether it died
                    # cannot be known (another host, or an unproven pid), so it is
                    # forgotten like the dead. If it speaks again, it simply rejoins.
                    registry.forget(process.info.instance_id, now)
