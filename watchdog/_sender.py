"""The processor's background thread: collect, batch, send, heartbeat, resync.

What the app's threads record and how it becomes events is ``_collect.py``; this thread
owns the rest: the connection to the sidecar, the backlog, resyncs and commands.

Delivery rules:
- A span open at a collection is announced (a start event) in the send that follows
  at once; its end is sent with the time the app recorded. Collections run every
  ``flush_interval`` whether or not the sidecar answers, so the app's buffers stay
  small; an idle process sends one heartbeat per ``heartbeat_interval``.
- After any failed send, or when the sidecar's id changes (it restarted), or when the
  sidecar asks, the next batch carries a *resync*: every span open right now, from the
  app threads' own record. The sidecar treats it as the truth, so events lost in an
  outage can neither leave a phantom span nor hide a real one.
- While the sidecar cannot be reached, events wait in a backlog of at most
  ``max_pending``; past it the oldest go (counted as dropped) and a resync follows.

Why one module (over 400 lines): the loop, its sends and its recovery from failures
share the backlog and the resync flags, which are only right when read together.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Final

import msgspec

from watchdog._clients import default_client_timeouts
from watchdog._collect import Collector, Record
from watchdog._control import LoopProbes, execute
from watchdog._transport import Transport
from watchdog.protocol import (
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    PROTOCOL_VERSION,
    Batch,
    ClientTimeoutsInfo,
    CommandResult,
    Event,
    Heartbeat,
    ProcessInfo,
    SpanStart,
    decode_reply,
    encode,
)

# Bound once: test suites patch ``time.monotonic`` for the whole process for a moment
# (returning a constant, say), which must not stall heartbeats or time spans wrongly.
# The hot path reads the same clock (``from time import monotonic`` in processor.py).
_monotonic: Final = time.monotonic


logger = logging.getLogger("watchdog.processor")
THREAD_NAME: Final = "agents-watchdog-sender"


@dataclass(frozen=True)
class SenderSettings:
    """Validated settings of one processor (see ``WatchdogProcessor``)."""

    url: str
    service: str
    token: str | None
    max_batch: int
    flush_interval: float
    heartbeat_interval: float
    request_timeout: float

    max_queue: int = 65_536

    @property
    def max_pending(self) -> int:
        """Events kept for delivery while the sidecar is unreachable: at least a whole
        queue, so that one collection never drops what the app recorded."""
        return max(10 * self.max_batch, self.max_queue)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _client_timeouts() -> ClientTimeoutsInfo | None:
    """The SDK's default OpenAI client's timeouts, in wire form; None when they cannot
    be read or would not fit the wire (a batch the sidecar rejects would unregister the
    process: the figures are worth less than being watched)."""
    try:
        found = default_client_timeouts()
        # An infinite (or absurdly long, or NaN) wait is no limit at all.
        connect, read = (
            None if value is None or not value < 1e9 else value
            for value in (found.connect, found.read)
        )
        return msgspec.convert(
            {
                "connect": connect,
                "read": read,
                "max_retries": found.max_retries,
                "source": found.source[:64],
            },
            ClientTimeoutsInfo,
        )
    except Exception:  # whatever an SDK or a client does here, the app never sees it
        return None


_warned: set[str] = set()


def warn_blind(reason: str) -> None:
    """Tell the app's log (stderr, when it configured none) once per reason that its
    agent runs cannot be watched, naming the setting and the fix."""
    if reason in _warned:
        return
    _warned.add(reason)
    logger.warning("agents-watchdog cannot watch this process's agent runs: %s", reason)


class Sender:
    """Owns the connection to the sidecar for one processor in one process."""

    def __init__(self, settings: SenderSettings, record: Record) -> None:
        self.settings = settings
        self.max_batch = settings.max_batch
        self._record = record
        self._event = threading.Event()
        # Set by news() until the next send: more ends wait for that send quietly.
        self._news = False
        self._pending: list[Event] = []
        self._next_leak_check = 0.0
        self._results: list[CommandResult] = []
        self._probes = LoopProbes()
        self.collector = Collector(record, self._pending, self._probes)
        self._lost = 0
        self._dropped_seen = 0
        self._seq = 0
        self._need_resync = True
        self._resync_now = False
        self._sidecar_id: str | None = None
        self._failing = False
        # Failures raised on this thread and recovered from (see _watch).
        self._errors = 0
        self._error_streak = 0
        self._stopping = False
        self._flush_lock = threading.Lock()
        self._flush_waiters: list[threading.Event] = []
        # Taken by the thread and not yet released: kept across a recovered failure.
        self._waiting: list[threading.Event] = []
        self._process: ProcessInfo | None = None
        self._stop_deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        # Set once the thread has made its first exchange, and with it any import made
        # lazily on the way (ssl for https, the codecs of an error message). A fork
        # while it imports would leave the child an import lock held by a thread the
        # child does not have. See processor.py.
        self.warm = threading.Event()

    # -- called from the app's threads ----------------------------------------------

    def start(self) -> None:
        """Start the thread (once)."""
        self._thread.start()

    def wake(self) -> None:
        """Wake the thread now (a flush or a stop; the hot path never calls this)."""
        self._event.set()

    def news(self) -> None:
        """A span the sidecar knows of ended: its end leaves with the next send, without
        waiting for the interval's collection. Wakes the thread at most once per send
        (the Event's short lock, never per span)."""
        if not self._news:
            self._news = True
            self._event.set()

    def flush(self, timeout: float) -> bool:
        """Block until what was recorded before this call was sent; False on timeout."""
        done = threading.Event()
        with self._flush_lock:
            self._flush_waiters.append(done)
        self.wake()
        return done.wait(timeout)

    def stop(self, timeout: float) -> None:
        """Send what is pending plus a goodbye, then end the thread; wait at most ``timeout``."""
        self._stop_deadline = _monotonic() + timeout
        self._stopping = True
        self.wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._watch():
                pass
        finally:
            self.warm.set()
            self._release_waiters(self._waiting + self._take_waiters())
            self._waiting = []

    def _watch(self) -> bool:
        """One supervised stretch of watching; True once the sender stopped as asked.

        Whatever is raised on this thread — by this module, by the HTTP client, by a
        library patched for a moment — ends only this stretch, never the watching: it
        is counted (``sender_errors`` in the heartbeat), logged once per streak, and
        the next stretch starts with a resync, so nothing that was open is lost."""
        transport: Transport | None = None
        try:
            transport = Transport(self.settings.url, self.settings.token)
            if self._process is None:
                self._process = self._identity()
            self._loop(transport)
            return True
        except BaseException as exc:  # supervised: see the docstring
            if self._stopping:
                return True
            self._errors += 1
            self._error_streak += 1
            self._need_resync = True
            if self._error_streak == 1:
                logger.warning(
                    "[non-fatal] agents-watchdog sender hit %s: %s; it goes on watching "
                    "(resync follows; logged once until it recovers)",
                    type(exc).__name__,
                    exc,
                    exc_info=exc,
                )
            # Backing off keeps a failure that repeats at once from spinning the thread;
            # stop() wakes it.
            self._event.clear()
            self._event.wait(min(self.settings.heartbeat_interval, 0.05 * 2**self._error_streak))
            return False
        finally:
            if transport is not None:
                transport.close()

    def _identity(self) -> ProcessInfo:
        # Imported here, on this thread: an app pays for psutil only once it is watched,
        # and never on its own threads.
        import psutil

        pid = os.getpid()
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.Error:
            create_time = 0.0
        return ProcessInfo(
            instance_id=uuid.uuid4().hex,
            pid=pid,
            host=socket.gethostname()[:MAX_NAME_LENGTH],
            create_time=create_time,
            service=self.settings.service[:MAX_NAME_LENGTH],
            sdk_version=_version("openai-agents")[:64],
            watchdog_version=_version("agents-watchdog")[:64],
            # Read here, once, on this thread: the hot path never pays for it.
            client_timeouts=_client_timeouts(),
        )

    def _loop(self, transport: Transport) -> None:
        settings = self.settings
        now = _monotonic()
        next_heartbeat = now  # the first exchange registers the process
        next_flush = next_collect = now
        backing_off = False
        while True:
            # Cleared before looking: a wake from here on ends the wait below at once.
            self._event.clear()
            self._waiting += self._take_waiters()
            waiters = self._waiting
            now = _monotonic()
            if now >= next_collect or waiters or self._stopping:
                self._collect()
                next_collect = now + settings.flush_interval
            else:
                # Woken by news: the ends the app recorded, without the whole collection
                # (whose cost grows with the open spans, so it keeps its pace).
                self.collector.take_ends()
            now = _monotonic()
            stopping = self._stopping
            if (
                stopping
                or waiters
                or now >= next_heartbeat
                or (
                    not backing_off
                    and (self._resync_now or (bool(self._pending) and now >= next_flush))
                )
            ):
                self._news = False
                ok = self._send_all(transport, goodbye=stopping)
                self.warm.set()
                self._waiting = []
                self._release_waiters(waiters)
                if stopping:
                    return
                now = _monotonic()
                next_heartbeat = now + settings.heartbeat_interval
                next_flush = now + settings.flush_interval
                # After a failure, nothing but the next heartbeat (or an explicit flush)
                # tries again: a sidecar that is down must not be hammered, and a full
                # batch that cannot leave must not spin this thread.
                backing_off = not ok
                continue
            # Collections go on every interval, sent or not: the app's buffers stay
            # small whatever the sidecar does; what is pending leaves at next_flush.
            wake_at = min(next_heartbeat, next_collect)
            if self._pending and not backing_off:
                wake_at = min(wake_at, next_flush)
            self._event.wait(max(0.0, wake_at - now))

    def _take_waiters(self) -> list[threading.Event]:
        with self._flush_lock:
            waiters, self._flush_waiters = self._flush_waiters, []
        return waiters

    @staticmethod
    def _release_waiters(waiters: list[threading.Event]) -> None:
        for waiter in waiters:
            waiter.set()

    def _collect(self) -> None:
        """Bring pending events up to date with the app's record; keep them bounded."""
        self.collector.collect()
        dropped = self._record._dropped
        if dropped != self._dropped_seen:
            # Ends (or starts, past the open-span cap) the app could not record: only a
            # resync can make up for them.
            self._dropped_seen = dropped
            self._need_resync = True
        excess = len(self._pending) - self.settings.max_pending
        if excess > 0:
            # The resync that follows restores the open set exactly; what is lost here
            # is only the timing of spans that started and ended meanwhile.
            del self._pending[:excess]
            self._lost += excess
            self._need_resync = True

    def _snapshot(self) -> list[SpanStart]:
        """Every span open right now (the resync), each announced from now on."""
        return self.collector.snapshot()

    # -- sending ------------------------------------------------------------------------

    def _send_all(self, transport: Transport, goodbye: bool) -> bool:
        """Send pending events in chunks of ``max_batch``; True when all were taken."""
        self._resync_now = False
        while True:
            last = len(self._pending) <= self.max_batch
            chunk = self._pending[: self.max_batch]
            # The resync rides on the last chunk, so that it describes the state after
            # every event the sidecar has been given.
            resync = self._need_resync and last
            if not self._post(transport, chunk, resync, goodbye and last):
                return False
            del self._pending[: len(chunk)]
            if last:
                return True

    def _post(self, transport: Transport, events: list[Event], resync: bool, goodbye: bool) -> bool:
        assert self._process is not None
        record = self._record
        self._seq += 1
        now = _monotonic()
        if now >= self._next_leak_check:
            self._next_leak_check = now + self.settings.heartbeat_interval
            self.collector.find_leaks()
        blind_setting, blind = record._blind()
        if blind_setting is not None:
            warn_blind(blind_setting)  # once per setting: it remembers
        batch = Batch(
            v=PROTOCOL_VERSION,
            process=self._process,
            seq=self._seq,
            sent_at=now,
            heartbeat=Heartbeat(
                interval=self.settings.heartbeat_interval,
                open_spans=len(record._open),
                dropped_events=record._dropped + self._lost,
                wall_minus_mono=time.time() - now,
                loops=self._probes.report(now),
                summarised=self.collector.short_summarised(),
                sender_errors=self._errors,
                blind=blind,
            ),
            events=events,
            resync=self._snapshot() if resync else None,
            goodbye=goodbye,
            results=self._results,
            active=[key[:MAX_ID_LENGTH] for key in self.collector.active],
            leaked=self.collector.leaked,
        )
        timeout = self.settings.request_timeout
        if self._stopping:
            timeout = max(0.05, min(timeout, self._stop_deadline - now))
        try:
            status, body = transport.post("/v1/events", encode(batch), timeout)
            if status != 200:
                text = body[:300].decode("utf-8", "replace")
                self._drop_unknown_to_sidecar(status, text)
                return self._failed(f"HTTP {status}: {text}")
            reply = decode_reply(body)
        except (http.client.HTTPException, msgspec.MsgspecError, OSError) as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        if self._failing:
            self._failing = False
            logger.warning("agents-watchdog: sidecar at %s reachable again", self.settings.url)
        self._error_streak = 0
        self._results = []
        self.collector.active.clear()  # delivered
        self.collector.leaked = []
        for command in reply.commands:
            self._results.append(execute(command, record._open))
        restarted = self._sidecar_id is not None and reply.sidecar_id != self._sidecar_id
        self._sidecar_id = reply.sidecar_id
        if resync:
            self._need_resync = reply.resync
        elif reply.resync or restarted:
            self._need_resync = True
        # Results (and a resync the sidecar asked for) go back at once, not in a second.
        self._resync_now = self._need_resync or bool(self._results)
        return True

    def _drop_unknown_to_sidecar(self, status: int, text: str) -> None:
        """A sidecar older than this app refuses the client timeouts as an unknown field:
        the next try goes without them, so the process is watched all the same."""
        process = self._process
        if (
            status == 422
            and process is not None
            and process.client_timeouts is not None
            and "client_timeouts" in text
        ):
            self._process = msgspec.structs.replace(process, client_timeouts=None)

    def _failed(self, reason: str) -> bool:
        self._need_resync = True
        if not self._failing:
            # Once per streak of failures, not once per try.
            self._failing = True
            logger.warning(
                "[non-fatal] agents-watchdog: cannot reach sidecar at %s (%s); "
                "spans are kept and will be resent",
                self.settings.url,
                reason,
            )
        return False
