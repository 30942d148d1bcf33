"""What one app process may cost the sidecar: how many processes it keeps records of,
and how many events per second each process may send.

Open spans per process are bounded in the registry itself (``Registry.max_open_spans``);
connections and the time to send a request are bounded by the server (``server.py``).
Every refusal here is a 429 with a reason, counted in ``events_rejected_total{reason}``:
the processor keeps what it could not send and tries again with its next heartbeat, so
a refusal delays events but loses none.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from watchdog.protocol import Batch
from watchdog.sidecar.config import RATE_BURST_SECONDS, LimitsConfig
from watchdog.sidecar.registry import Registry

__all__ = ["Admission", "Refusal"]

# Buckets of processes the registry forgot are dropped once they outnumber the
# processes by this much: pruning stays rare and the dict stays bounded.
_PRUNE_SLACK: Final = 1024


class Refusal(NamedTuple):
    """Why a batch is refused: the metric label and a sentence for the client."""

    reason: str
    detail: str


class Admission:
    """Decides whether a decoded batch may be applied (see the module docstring).

    The event rate is a token bucket per process: ``max_events_per_second`` sustained,
    with up to ``RATE_BURST_SECONDS`` of it at once. Resync entries do not count: they
    restate what is open (bounded by ``max_open_spans``), and refusing them would keep
    a process from ever catching up.
    """

    def __init__(self, limits: LimitsConfig, registry: Registry) -> None:
        self.limits = limits
        self.registry = registry
        self.capacity = limits.max_events_per_second * RATE_BURST_SECONDS
        # instance id -> (tokens left, when last refilled)
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, batch: Batch, now: float) -> Refusal | None:
        """None when the batch may be applied; otherwise why not. Takes the batch's
        events from its process's allowance when it is admitted."""
        instance = batch.process.instance_id
        processes = self.registry.processes
        if instance not in processes and len(processes) >= self.limits.max_processes:
            return Refusal(
                "too_many_processes",
                f"the sidecar already keeps {len(processes)} processes "
                f"(limits.max_processes); try again later",
            )
        count = len(batch.events)
        if not count:
            return None
        rate = self.limits.max_events_per_second
        tokens, at = self._buckets.get(instance, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * rate)
        # A batch larger than the whole bucket passes when the bucket is full, and
        # leaves a debt: otherwise it could never pass at all.
        if tokens < min(count, self.capacity):
            self._buckets[instance] = (tokens, now)
            return Refusal(
                "rate_limited",
                f"{count} events exceed this process's allowance of {rate:g} events/s "
                f"(limits.max_events_per_second); send them again later",
            )
        self._buckets[instance] = (tokens - count, now)
        if len(self._buckets) > len(processes) + _PRUNE_SLACK:
            self._prune()
        return None

    def _prune(self) -> None:
        processes = self.registry.processes
        self._buckets = {k: v for k, v in self._buckets.items() if k in processes}
