"""Commands for app processes, waiting for their next batch, and who wants the answers."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

from watchdog.protocol import Command, CommandResult
from watchdog.sidecar.registry import OpenSpan, ProcessRecord, RegistryListener

__all__ = ["CommandQueue"]

logger = logging.getLogger("watchdog.sidecar")


class CommandQueue(RegistryListener):
    """Commands are handed over in the reply to a process's next batch; its results come
    back in a later batch and go to the callback given when the command was issued.
    A process that leaves or dies takes its undelivered commands with it."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[Command]] = {}
        self._handlers: dict[int, Callable[[CommandResult], None]] = {}
        self._on_taken: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count(1)

    def issue(
        self,
        instance_id: str,
        action: str,
        span_id: str,
        reason: str,
        on_result: Callable[[CommandResult], None],
        on_taken: Callable[[], None] | None = None,
    ) -> int:
        """Queue a command; returns its id. ``on_taken`` is called when the process
        takes it (the reply to its next batch)."""
        ident = next(self._ids)
        self._waiting.setdefault(instance_id, []).append(
            Command(id=ident, action=action, span_id=span_id, reason=reason)
        )
        self._handlers[ident] = on_result
        if on_taken is not None:
            self._on_taken[ident] = on_taken
        return ident

    def take(self, instance_id: str) -> list[Command]:
        """The commands waiting for this process, now handed over."""
        commands = self._waiting.pop(instance_id, [])
        for command in commands:
            taken = self._on_taken.pop(command.id, None)
            if taken is not None:
                taken()
        return commands

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

    def process_left(self, process: ProcessRecord, now: float) -> None:
        """Nothing will take this process's commands any more."""
        self.forget(process.info.instance_id)

    def process_died(self, process: ProcessRecord, orphans: list[OpenSpan], now: float) -> None:
        """Nothing will take this process's commands any more."""
        self.forget(process.info.instance_id)

    def forget(self, instance_id: str) -> None:
        """Drop the commands waiting for this process, and their callbacks."""
        for command in self._waiting.pop(instance_id, []):
            self._handlers.pop(command.id, None)
            self._on_taken.pop(command.id, None)

    def abandon(self, ident: int) -> None:
        """Stop waiting for a result (it will be ignored if it comes)."""
        self._handlers.pop(ident, None)
        self._on_taken.pop(ident, None)
