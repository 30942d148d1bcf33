"""Commands for app processes, waiting for their next batch, and who wants the answers."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

from watchdog.protocol import Command, CommandResult

__all__ = ["CommandQueue"]

logger = logging.getLogger("watchdog.sidecar")


class CommandQueue:
    """Commands are handed over in the reply to a process's next batch; its results come
    back in a later batch and go to the callback given when the command was issued."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[Command]] = {}
        self._handlers: dict[int, Callable[[CommandResult], None]] = {}
        self._ids = itertools.count(1)

    def issue(
        self,
        instance_id: str,
        action: str,
        span_id: str,
        reason: str,
        on_result: Callable[[CommandResult], None],
    ) -> int:
        """Queue a command; returns its id."""
        ident = next(self._ids)
        self._waiting.setdefault(instance_id, []).append(
            Command(id=ident, action=action, span_id=span_id, reason=reason)
        )
        self._handlers[ident] = on_result
        return ident

    def take(self, instance_id: str) -> list[Command]:
        """The commands waiting for this process, now handed over."""
        return self._waiting.pop(instance_id, [])

    def deliver(self, results: list[CommandResult]) -> None:
        """Pass each result to whoever issued its command."""
        for result in results:
            handler = self._handlers.pop(result.id, None)
            if handler is None:
                continue
            try:
                handler(result)
            except Exception:
                logger.exception("command_result_failed")

    def pending(self, ident: int) -> bool:
        """True while no result has come back for command ``ident``."""
        return ident in self._handlers

    def abandon(self, ident: int) -> None:
        """Stop waiting for a result (it will be ignored if it comes)."""
        self._handlers.pop(ident, None)
