"""The processor's background thread: open-span state to the sidecar, in bulk.

The app's threads keep the state (see ``processor.py``): the exact set of open spans
(one dict store and one pop per span, atomic under the GIL), the ends of spans the
sidecar was told about, a few of the spans that came and went, and the parents those
ran under. This thread never replays the app's events one by one. Once per
``flush_interval`` it *collects*: a set difference in C between the open spans and
those already announced gives the spans to announce; the ends the app recorded for
announced spans give their end events; the rest of what started and ended meanwhile
was never news to anyone. So its cost grows with the spans that stay open across a
send, not with the spans that come and go.

Delivery rules:
- A span open at a collection is announced (a start event) in the send that follows
  at once; its end is sent with the time the app recorded. Collections run every
  ``flush_interval``; an idle process sends one heartbeat per ``heartbeat_interval``.
- After any failed send, or when the sidecar's id changes (it restarted), or when the
  sidecar asks, the next batch carries a *resync*: every span open right now, from the
  app threads' own record. The sidecar treats it as the truth, so events lost in an
  outage can neither leave a phantom span nor hide a real one.
- A span that begins and ends between two collections is *short*. The app keeps the
  last ``SHORT_SAMPLE`` of them in a ring (a bounded deque): those are sent in full,
  start and end, for durations and learned thresholds; the rest are counted
  (``summarised`` in the heartbeat). Whenever at most ``SHORT_SAMPLE`` short spans end
  between two collections (256 a second at the default interval), every one is sent.
  Beyond that the sample is the last ``SHORT_SAMPLE`` to end in each interval: its
  durations are those of the spans that ended in the interval's tail, which differ from
  the whole interval's only if the mix of spans changes within one interval.
- The parent of every short span (its span, or its trace) is recorded by the app, so a
  container whose children churn is reported active and never looks idle. The set is
  capped (``MAX_ACTIVE`` ids per interval); past the cap every announced span is
  reported active for that interval — never a false alarm, at worst an idle container
  noticed one interval late.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgspec

from watchdog._clients import default_client_timeouts
from watchdog._control import LoopProbes, execute
from watchdog._describe import OpenInfo, describe_start, failed, parent_of, span_id_of
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
    SpanEnd,
    SpanStart,
    decode_reply,
    encode,
)

# Bound once: test suites patch ``time.monotonic`` for the whole process for a moment
# (returning a constant, say), which must not stall heartbeats or time spans wrongly.
# The hot path reads the same clock (``from time import monotonic`` in processor.py).
_monotonic: Final = time.monotonic

# Short spans the app keeps per collection, sent in full (see the module docstring).
SHORT_SAMPLE: Final = 64
# Bound on the parents of short spans the app records per collection, and on the
# active ids kept for delivery across an outage.
MAX_ACTIVE: Final = 100_000

logger = logging.getLogger("watchdog.processor")
THREAD_NAME: Final = "agents-watchdog-sender"


class Record(Protocol):
    """What the app's threads keep for the sender (``WatchdogProcessor`` is one).

    Written by the app's threads with single atomic operations, read and emptied here.
    """

    # span -> (start time, thread id, task): every span open right now.
    _open: dict[Any, OpenInfo]
    # span -> when it was announced: the app records the end of these in ``_queue``.
    _announced: dict[Any, float]
    _queue: deque[tuple[Any, float]]
    # (span, its start record, end time) of the last short spans to end.
    _short: deque[tuple[Any, OpenInfo, float]]
    # Ids of the spans (or traces) that short spans ran under; swapped out here.
    _active: set[str]
    _max_active: int
    _dropped: int

    def _short_ended(self) -> int:
        """Counts one short span; returns the count before (``itertools.count``)."""
        ...

    def _blind(self) -> tuple[str | None, str | None]:
        """(the setting that hides runs, what to report now), see ``processor.py``."""
        ...


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


def _event_time(event: Event) -> float:
    return event.started if isinstance(event, SpanStart) else event.ended


_warned: set[str] = set()


def warn_blind(reason: str) -> None:
    """Tell the app's log (stderr, when it configured none) once per reason that its
    agent runs cannot be watched, naming the setting and the fix."""
    if reason in _warned:
        return
    _warned.add(reason)
    logger.warning("agents-watchdog cannot watch this process's agent runs: %s", reason)


def _skipped() -> None:
    # A span object that cannot be read is skipped, never fatal.
    logger.debug("[non-fatal] agents-watchdog skipped an unreadable span", exc_info=True)


class Sender:
    """Owns the connection to the sidecar for one processor in one process."""

    def __init__(self, settings: SenderSettings, record: Record) -> None:
        self.settings = settings
        self.max_batch = settings.max_batch
        self._record = record
        self._event = threading.Event()
        self._pending: list[Event] = []
        # Announced spans that were described: their wire ids, for their end events.
        self._ids: dict[Any, str] = {}
        # Announced spans gone from the open record with no end recorded yet: when
        # first seen so. An end still on its way arrives within a collection.
        self._unended: dict[Any, float] = {}
        # The parents' set swapped out at the last collection, and its size then: an
        # app thread that read it just before the swap may still add to it.
        self._retired: set[str] = set()
        self._retired_size = 0
        self._active: set[str] = set()
        # Short spans counted by the app, read through its counter (whose every read
        # counts one too), and those sent in full.
        self._count_reads = 0
        self._short_sent = 0
        self._short_seen = 0
        self._summarised = 0
        # Leaks found and not yet delivered; candidates seen by the last check.
        self._leaked: list[str] = []
        self._leak_candidates: set[Any] = set()
        self._next_leak_check = 0.0
        self._results: list[CommandResult] = []
        self._probes = LoopProbes()
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
        transport = Transport(self.settings.url, self.settings.token)
        try:
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
        next_flush = now
        backing_off = False
        while True:
            # Cleared before looking: a wake from here on ends the wait below at once.
            self._event.clear()
            self._waiting += self._take_waiters()
            waiters = self._waiting
            self._collect()
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
            # small whatever the sidecar does.
            wake_at = min(next_heartbeat, now + settings.flush_interval)
            self._event.wait(max(0.0, wake_at - now))

    def _take_waiters(self) -> list[threading.Event]:
        with self._flush_lock:
            waiters, self._flush_waiters = self._flush_waiters, []
        return waiters

    @staticmethod
    def _release_waiters(waiters: list[threading.Event]) -> None:
        for waiter in waiters:
            waiter.set()

    # -- collecting the app's record ----------------------------------------------------

    def _collect(self) -> None:
        """Turn what changed in the app's record since the last collection into events:
        starts of spans open now and not yet announced, ends of announced spans, the
        short spans the app kept, and the parents of short spans (activity)."""
        record = self._record
        pending = self._pending
        before = len(pending)
        announced = record._announced
        # dict.copy() runs in C without releasing the GIL: a consistent view of what is
        # open, with each span's start record, even while the app's threads go on.
        opened = record._open.copy()
        fresh = opened.keys() - announced.keys()
        if fresh:
            now = _monotonic()
            # From here on the app records the ends of these spans for this thread.
            announced.update(dict.fromkeys(fresh, now))
            self._announce(fresh, opened)
        self._take_ends(record._queue)
        self._take_short(record._short)
        self._take_activity(record)
        self._ends_never_recorded(record)
        dropped = record._dropped
        if dropped != self._dropped_seen:
            # Ends (or starts, past the open-span cap) the app could not record: only a
            # resync can make up for them.
            self._dropped_seen = dropped
            self._need_resync = True
        excess = len(pending) - self.settings.max_pending
        if excess > 0:
            # The resync that follows restores the open set exactly; what is lost here
            # is only the timing of spans that started and ended meanwhile.
            del pending[:excess]
            self._lost += excess
            self._need_resync = True
        if len(pending) > before + 1:
            # Order matters when ids repeat (apps choose trace ids, retries reuse them):
            # a span that started and ended, then another with its id that is still
            # open, must reach the sidecar as start, end, start. Only this collection's
            # events need it: a backlog kept through an outage is in order already.
            pending[before:] = sorted(pending[before:], key=_event_time)

    def _announce(self, spans: set[Any], opened: dict[Any, OpenInfo]) -> None:
        pending, ids, probes = self._pending, self._ids, self._probes
        for obj in spans:
            info = opened[obj]
            try:
                start = describe_start(obj, info)
            except Exception:
                _skipped()  # stays announced, never described: its end is not news
                continue
            ids[obj] = start.span_id
            pending.append(start)
            if info[2] is not None:
                probes.saw(info[2], info[1])

    def _end(self, obj: Any, ended: float) -> None:
        """An announced span ended at ``ended``: its end event, once."""
        if self._record._announced.pop(obj, None) is None:
            return  # ended already, or handed over as a leak
        self._unended.pop(obj, None)
        span_id = self._ids.pop(obj, None)
        if span_id is not None:
            self._pending.append(SpanEnd(span_id, ended, failed(obj)))

    def _take_ends(self, queue: deque[tuple[Any, float]]) -> None:
        popleft = queue.popleft
        # len() first: the app's threads append meanwhile, and what they add now is
        # taken at the next collection.
        for _ in range(len(queue)):
            obj, ended = popleft()
            self._end(obj, ended)

    def _take_short(self, short: deque[tuple[Any, OpenInfo, float]]) -> None:
        announced, pending, probes = self._record._announced, self._pending, self._probes
        popleft = short.popleft
        for _ in range(len(short)):
            obj, info, ended = popleft()
            self._short_seen += 1
            if obj in announced:
                # It ended while this thread announced it: the app took it for short.
                self._end(obj, ended)
                self._short_sent += 1
                continue
            try:
                start = describe_start(obj, info)
                pending += (start, SpanEnd(start.span_id, ended, failed(obj)))
            except Exception:
                _skipped()
                continue
            self._short_sent += 1
            if info[2] is not None:
                probes.saw(info[2], info[1])

    def _take_activity(self, record: Record) -> None:
        """Report the announced spans that short spans ran under as active."""
        current = record._active
        record._active = set()
        marks = current
        if len(self._retired) != self._retired_size:
            # Parents added by app threads that read the set just before the last swap.
            marks = current | self._retired
        self._retired, self._retired_size = current, len(current)
        if not marks:
            return
        announced = set(self._ids.values())
        # Past the cap, too many to tell apart in this interval: every announced span
        # counts as active, so no container is taken for idle (it is judged a step later).
        found = announced if len(current) >= record._max_active else marks & announced
        room = MAX_ACTIVE - len(self._active)
        if room > 0:
            self._active |= found if len(found) <= room else set(list(found)[:room])

    def _ends_never_recorded(self, record: Record) -> None:
        """Announced spans gone from the open record whose end the app did not record.

        The app records an end right after removing the span from its record, so one
        collection later it has arrived — unless it was lost (the queue was full: a
        drop, counted, followed by a resync). Such a span ends at the time it was first
        seen gone: at most one ``flush_interval`` late."""
        gone = record._announced.keys() - record._open.keys()
        if not gone and not self._unended:
            return
        now = _monotonic()
        unended = self._unended
        for obj in gone:
            first_seen = unended.get(obj)
            if first_seen is None:
                unended[obj] = now
            else:
                self._end(obj, first_seen)
        for obj in [obj for obj in unended if obj not in gone]:
            del unended[obj]  # back in the record (a key reused by an app), or ended

    def short_summarised(self) -> int:
        """Short spans the app counted and this thread did not send in full: a running
        count that never goes back (the sidecar adds its increments up). Exact once the
        app is quiet; while it runs, a span counted but not yet taken (or taken but not
        yet counted) moves a unit between this report and the next."""
        counted = self._record._short_ended() - self._count_reads
        self._count_reads += 1
        self._summarised = max(self._summarised, counted - self._short_sent)
        return self._summarised

    def _snapshot(self) -> list[SpanStart]:
        """Every span open right now, from the app threads' own record; each becomes
        announced, so its end is sent whenever it comes."""
        record = self._record
        opened = record._open.copy()
        now = _monotonic()
        announced = record._announced
        fresh = opened.keys() - announced.keys()
        announced.update(dict.fromkeys(fresh, now))
        snapshot = []
        for obj, info in opened.items():
            try:
                start = describe_start(obj, info)
            except Exception:
                _skipped()
                continue
            self._ids[obj] = start.span_id
            snapshot.append(start)
        return snapshot

    def _find_leaks(self) -> None:
        """Find open spans that can never end, and stop reporting them as open.

        A span whose owning task is done (or whose thread has exited) was left open by
        code that will never run again — an SDK cleanup path that was cancelled, a
        span started by hand and forgotten. Reported open, it would be flagged hung
        for ever. It is a leak when its owner is gone, no open span beneath it has a
        live owner (a run it started may go on in another task), and the last check
        found the same (a span being ended right now is not mistaken for one)."""
        record = self._record
        opened = record._open.copy()
        threads = sys._current_frames().keys()
        gone = set()
        for obj, info in opened.items():
            task = info[2]
            if task.done() if task is not None else info[1] not in threads:
                gone.add(obj)
        if not gone:
            self._leak_candidates = set()
            return
        keys = {span_id_of(obj): obj for obj in opened}
        protected: set[Any] = set()
        for obj in opened:
            if obj in gone:
                continue
            parent = parent_of(obj)
            for _ in range(64):
                ancestor = keys.get(parent) if parent is not None else None
                if ancestor is None or ancestor in protected:
                    break
                protected.add(ancestor)
                parent = parent_of(ancestor)
        candidates = gone - protected
        leaked = candidates & self._leak_candidates
        self._leak_candidates = candidates - leaked
        for obj in leaked:
            if record._open.pop(obj, None) is not None:
                # Reported as a leak, not as an end.
                record._announced.pop(obj, None)
                self._ids.pop(obj, None)
                self._unended.pop(obj, None)
                # Bounded while undelivered: past it, the resync that follows a failed
                # send removes them at the sidecar all the same (as ended, time unknown).
                if len(self._leaked) < MAX_ACTIVE:
                    self._leaked.append(span_id_of(obj))

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
            self._find_leaks()
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
                summarised=self.short_summarised(),
                sender_errors=self._errors,
                blind=blind,
            ),
            events=events,
            resync=self._snapshot() if resync else None,
            goodbye=goodbye,
            results=self._results,
            active=[key[:MAX_ID_LENGTH] for key in self._active],
            leaked=self._leaked,
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
        self._active.clear()  # delivered
        self._leaked = []
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
