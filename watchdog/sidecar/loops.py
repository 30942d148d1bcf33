"""Blocked event loops: sync code (``time.sleep``, a Django ORM call) in an async app.

Each heartbeat carries, for every event loop that ran spans, how late a probe callback
ran (see ``watchdog/_control.py``). A loop late by more than ``blocked_after`` seconds
is a finding of its own — ``AgentEventLoopBlocked``, with the stack of the loop's
thread, which shows the line of sync code that blocks it — resolved once the loop
catches up. The largest lag per service is exported as ``loop_lag_seconds``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from watchdog.sidecar.logs import log_event
from watchdog.sidecar.registry import OpenSpan, ProcessRecord, RegistryListener

__all__ = ["LoopWatch"]

# (process, thread id, lag, stack or None, blocked): the alert book hears of changes.
LoopReportSink = Callable[[ProcessRecord, int, float, str | None, bool], None]


class LoopWatch(RegistryListener):
    """Turns loop-lag reports into blocked/unblocked findings."""

    def __init__(self, blocked_after: float, notify: LoopReportSink) -> None:
        self.blocked_after = blocked_after
        self.notify = notify
        self.blocked: set[tuple[str, int]] = set()

    def check(self, process: ProcessRecord) -> None:
        """Look at the loops reported in the process's latest heartbeat."""
        instance = process.info.instance_id
        reported = set()
        for report in process.loops:
            key = (instance, report.thread_id)
            reported.add(key)
            blocked = report.lag >= self.blocked_after
            if blocked and key not in self.blocked:
                self.blocked.add(key)
                log_event(
                    logging.WARNING,
                    "event_loop_blocked",
                    service=process.service,
                    pid=process.info.pid,
                    thread_id=report.thread_id,
                    lag_seconds=report.lag,
                    stack=report.stack,
                )
                self.notify(process, report.thread_id, report.lag, report.stack, True)
            elif not blocked and key in self.blocked:
                self._unblock(process, report.thread_id, report.lag, "the loop caught up")
        for key in [k for k in self.blocked if k[0] == instance and k not in reported]:
            self._unblock(process, key[1], None, "the loop was closed")

    def _unblock(
        self, process: ProcessRecord, thread_id: int, lag: float | None, note: str
    ) -> None:
        self.blocked.discard((process.info.instance_id, thread_id))
        log_event(
            logging.INFO,
            "event_loop_unblocked",
            service=process.service,
            pid=process.info.pid,
            thread_id=thread_id,
            lag_seconds=lag,
            note=note,
        )
        self.notify(process, thread_id, lag or 0.0, None, False)

    def process_left(self, process: ProcessRecord, now: float) -> None:
        """The process left: its loops' findings resolve."""
        self.forget(process)

    def process_died(self, process: ProcessRecord, orphans: list[OpenSpan], now: float) -> None:
        """The process died: its loops' findings resolve."""
        self.forget(process)

    def forget(self, process: ProcessRecord) -> None:
        """Resolve every finding about this process's loops."""
        instance = process.info.instance_id
        for key in [k for k in self.blocked if k[0] == instance]:
            self._unblock(process, key[1], None, "the process is gone")
