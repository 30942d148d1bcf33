"""The processor's background thread: batches, heartbeats, open-span state and resync.

The app's threads only append to a deque (see ``processor.py``). This thread owns
everything else: it turns raw SDK objects into wire events (reading only ids, kinds
and names), keeps the set of spans this process has open, and talks to the sidecar.

Delivery rules:
- Pending events leave at most ``flush_interval`` after the first of them arrived,
  or at once when a full batch is waiting; an idle process sends one heartbeat per
  ``heartbeat_interval``.
- After any failed send, or when the sidecar's id changes (it restarted), or when the
  sidecar asks, the next batch carries a *resync*: every span open right now. The
  sidecar treats it as the truth, so events lost in an outage can neither leave a
  phantom span nor hide a real one.
- A span that begins and ends between two sends is *short*: nothing about it needs
  watching, so it is not turned into wire events one by one. Up to ``SHORT_SAMPLE``
  short spans per send (a uniform sample when there are more) still go out in full, for
  durations and learned thresholds; the rest are counted (``summarised`` in the
  heartbeat), and the spans they ran under are reported as active, so their containers
  never look idle. At ordinary rates every span is sent; under a flood of tiny spans
  this thread's cost per span stays a few dict operations.
- The set of open spans is kept by the app's threads themselves (one dict store and
  one pop per span, atomic under the GIL), not rebuilt here from the queue: so when
  events are dropped — queue full while this thread waited on a slow sidecar, or the
  pending cap hit during an outage — the next resync is still exact. Drops are
  counted, reported in the heartbeat, and trigger that resync.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import random
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx
import msgspec
import psutil
from agents.tracing import Span

from watchdog._clients import default_client_timeouts
from watchdog._control import LoopProbes, execute
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

START: Final = "start"
END: Final = "end"
# Short spans sent in full per send; beyond this they are sampled (see the docstring).
SHORT_SAMPLE: Final = 64
# Bound on the spans reported active per batch (kept across an outage until delivered).
MAX_ACTIVE: Final = 100_000

logger = logging.getLogger("watchdog.processor")


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
        queue, so that draining a burst never drops what the queue accepted."""
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


def _span_name(data: Any) -> str:
    """The human name of a span: agent, tool, guardrail or workflow — never its input."""
    kind = data.type
    if kind == "turn":
        name = data.agent_name
    elif kind == "handoff":
        name = f"{data.from_agent or '?'} -> {data.to_agent or '?'}"
    elif kind == "mcp_tools":
        name = data.server
    elif kind in ("generation", "transcription", "speech"):
        name = data.model
    else:
        name = getattr(data, "name", None)
    return str(name)[:MAX_NAME_LENGTH] if name else ""


_IS_SPAN: dict[type, bool] = {}


def _is_span(obj: Any) -> bool:
    # isinstance against the SDK's abstract base class is slow (ABC machinery); the
    # concrete types are few, so remember the answer per type.
    kind = type(obj)
    answer = _IS_SPAN.get(kind)
    if answer is None:
        answer = _IS_SPAN[kind] = isinstance(obj, Span)
    return answer


OpenInfo = tuple[float, int, Any]
"""What the hot path records when a span starts: (monotonic time, thread id, task)."""


def describe_start(obj: Any, info: OpenInfo) -> SpanStart:
    """Turn an SDK ``Span`` or ``Trace`` that started into a wire event."""
    started, thread_id, task = info
    task_id = id(task) if task is not None else None
    if _is_span(obj):
        data = obj.span_data
        return SpanStart(
            span_id=obj.span_id[:MAX_ID_LENGTH],
            trace_id=obj.trace_id[:MAX_ID_LENGTH],
            parent_id=obj.parent_id[:MAX_ID_LENGTH] if obj.parent_id else None,
            kind=str(data.type)[:64],
            name=_span_name(data),
            started=started,
            thread_id=thread_id,
            task_id=task_id,
        )
    trace_id = obj.trace_id[:MAX_ID_LENGTH]
    return SpanStart(
        span_id=trace_id,
        trace_id=trace_id,
        parent_id=None,
        kind="trace",
        name=str(obj.name or "")[:MAX_NAME_LENGTH],
        started=started,
        thread_id=thread_id,
        task_id=task_id,
    )


def _event_time(event: Event) -> float:
    return event.started if isinstance(event, SpanStart) else event.ended


def _parent_of(obj: Any) -> str | None:
    """The id of the span or trace a span runs under (None for a trace)."""
    if not _is_span(obj):
        return None
    return str(obj.parent_id or obj.trace_id)[:MAX_ID_LENGTH]


def _span_id_of(obj: Any) -> str:
    key = obj.span_id if _is_span(obj) else obj.trace_id
    return str(key)[:MAX_ID_LENGTH]


def _never_blind() -> tuple[str | None, str | None]:
    return None, None


_warned: set[str] = set()


def warn_blind(reason: str) -> None:
    """Tell the app's log (stderr, when it configured none) once per reason that its
    agent runs cannot be watched, naming the setting and the fix."""
    if reason in _warned:
        return
    _warned.add(reason)
    logger.warning("agents-watchdog cannot watch this process's agent runs: %s", reason)


class _QuietSenderRequests(logging.Filter):
    """Keeps httpx's per-request INFO lines out of the app's log for the sender's own
    requests (one a second); the app's other httpx traffic logs as it did."""

    def filter(self, record: logging.LogRecord) -> bool:
        return threading.current_thread().name != THREAD_NAME


THREAD_NAME: Final = "agents-watchdog-sender"
_QUIET = _QuietSenderRequests()


class Sender:
    """Owns the connection to the sidecar for one processor in one process."""

    def __init__(
        self,
        settings: SenderSettings,
        queue: deque[tuple[Any, ...]],
        open_spans: dict[Any, OpenInfo],
        dropped: Callable[[], int],
        blind: Callable[[], tuple[str | None, str | None]] | None = None,
    ) -> None:
        self.settings = settings
        # (the setting that hides runs, what to report now): see WatchdogProcessor.
        self._blind = blind or _never_blind
        self.max_batch = settings.max_batch
        # Read lock-free by the app's threads: True while the sender sleeps with
        # nothing pending, so the first new event wakes it (one Event.set per window).
        self.armed = False
        # Set when woken, cleared when the thread goes back to sleep: while set, a
        # growing queue does not make every span call wake() again.
        self.woken = False
        self._queue = queue
        self._dropped = dropped
        self._event = threading.Event()
        # Owned by the app's threads (see the module docstring); read by atomic copy.
        self._open = open_spans
        self._dropped_seen = 0
        self._pending: list[Event] = []
        # Started since the last send and not sent yet; short ones (ended too) sampled.
        self._fresh: dict[Any, OpenInfo] = {}
        self._short: list[tuple[Any, OpenInfo, float]] = []
        self._short_seen = 0
        self._summarised = 0
        # Spans the last resync told the sidecar about: whenever they end, the end is
        # news, even for those started too recently to have been sent as started.
        self._resynced: set[Any] = set()
        self._active: set[str] = set()
        # Leaks found and not yet delivered; candidates seen by the last check.
        self._leaked: list[str] = []
        self._leak_candidates: set[Any] = set()
        self._next_leak_check = 0.0
        self._results: list[CommandResult] = []
        self._probes = LoopProbes()
        self._lost = 0
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
        self._endpoint = f"{settings.url}/v1/events"
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        # Set once the thread has made its first exchange, and with it the imports the
        # HTTP client makes lazily (httpcore, h11, certifi, ...). A fork while it imports
        # would leave the child an import lock held by a thread the child does not have:
        # the child's own sender would wait on it forever. See processor.py.
        self.warm = threading.Event()

    # -- called from the app's threads ----------------------------------------------

    def start(self) -> None:
        """Start the thread (once)."""
        self._thread.start()

    def wake(self) -> None:
        """Wake the thread now. The app's threads call this at most once per wake-up
        (they check ``armed`` and ``woken`` first), so the Event's short internal lock
        is taken rarely, never per span."""
        self.armed = False
        self.woken = True
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
        httpx_logger = logging.getLogger("httpx")
        if _QUIET not in httpx_logger.filters:
            httpx_logger.addFilter(_QUIET)
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
        try:
            if self._process is None:
                self._process = self._identity()
            with self._client() as client:
                self._loop(client)
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

    def _client(self) -> httpx.Client:
        headers = {"content-type": "application/json"}
        if self.settings.token:
            headers["authorization"] = f"Bearer {self.settings.token}"
        url = self.settings.url
        transport = None
        if url.startswith("unix://"):
            # unix:///run/agents-watchdog.sock: HTTP over the sidecar's Unix socket.
            transport = httpx.HTTPTransport(uds=url.removeprefix("unix://"))
            url = "http://agents-watchdog"
        self._endpoint = f"{url}/v1/events"
        # trust_env=False: the sidecar is local; a proxy from the environment would
        # only add a way to fail.
        return httpx.Client(
            headers=headers,
            timeout=self.settings.request_timeout,
            trust_env=False,
            transport=transport,
        )

    def _identity(self) -> ProcessInfo:
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

    def _loop(self, client: httpx.Client) -> None:
        settings = self.settings
        next_heartbeat = _monotonic()  # the first exchange registers the process
        flush_due: float | None = None
        backing_off = False
        while True:
            self._waiting += self._take_waiters()
            waiters = self._waiting
            self._drain()
            now = _monotonic()
            if (self._pending or self._fresh or self._short) and flush_due is None:
                flush_due = now + settings.flush_interval
            stopping = self._stopping
            if (
                stopping
                or waiters
                or now >= next_heartbeat
                or (
                    not backing_off
                    and (
                        self._resync_now
                        or (flush_due is not None and now >= flush_due)
                        or len(self._pending) + len(self._fresh) >= self.max_batch
                    )
                )
            ):
                ok = self._send_all(client, goodbye=stopping)
                self.warm.set()
                self._waiting = []
                self._release_waiters(waiters)
                if stopping:
                    return
                now = _monotonic()
                next_heartbeat = now + settings.heartbeat_interval
                # After a failure, nothing but the next heartbeat (or an explicit flush)
                # tries again: a sidecar that is down must not be hammered, and a full
                # batch that cannot leave must not spin this thread.
                backing_off = not ok
                flush_due = None if ok else next_heartbeat
                continue
            self._event.clear()
            self.woken = False
            wake_at = next_heartbeat if flush_due is None else min(next_heartbeat, flush_due)
            # Armed only when nothing is pending: while collecting a batch, only a
            # full batch (checked by the app's threads) cuts the window short.
            self.armed = flush_due is None
            if self.armed and self._queue:
                continue
            self._event.wait(max(0.0, wake_at - now))
            self.armed = False

    def _take_waiters(self) -> list[threading.Event]:
        with self._flush_lock:
            waiters, self._flush_waiters = self._flush_waiters, []
        return waiters

    @staticmethod
    def _release_waiters(waiters: list[threading.Event]) -> None:
        for waiter in waiters:
            waiter.set()

    def _drain(self) -> None:
        queue, pending, fresh, short = self._queue, self._pending, self._fresh, self._short
        popleft, active = queue.popleft, self._active
        while True:
            try:
                item = popleft()
            except IndexError:
                break
            if item[0] is START:
                fresh[item[1]] = item[2]
                continue
            obj = item[1]
            info = fresh.pop(obj, None)
            try:
                if info is None or obj in self._resynced:  # sent as started: its end is news
                    self._resynced.discard(obj)
                    error = getattr(obj, "error", None) is not None
                    pending.append(SpanEnd(_span_id_of(obj), item[2], error))
                    continue
                # Short: note where it ran, and keep it if the sample takes it.
                under = getattr(obj, "parent_id", None) or obj.trace_id
                if under != getattr(obj, "span_id", None) and len(active) < MAX_ACTIVE:
                    active.add(under)
            except Exception:
                # A span object we cannot read is skipped, never fatal.
                logger.debug(
                    "[non-fatal] agents-watchdog skipped an unreadable span", exc_info=True
                )
                continue
            self._short_seen += 1
            if len(short) < SHORT_SAMPLE:
                short.append((obj, info, item[2]))
            else:
                # Reservoir sampling: each short span of this window is equally likely kept.
                slot = int(random.random() * self._short_seen)
                if slot < SHORT_SAMPLE:
                    short[slot] = (obj, info, item[2])
        excess = len(pending) - self.settings.max_pending
        if excess > 0:
            # The resync that follows restores the open set exactly; what is lost here
            # is only the timing of spans that started and ended meanwhile.
            del pending[:excess]
            self._lost += excess
            self._need_resync = True
        dropped = self._dropped()
        if dropped != self._dropped_seen:
            # These events never reached the queue: only a resync can make up for them.
            self._dropped_seen = dropped
            self._need_resync = True

    def _settle(self) -> None:
        """Before a send: spans still open since the last one become start events, and
        the sampled short ones start and end events — all in the order they happened.

        Order matters when ids repeat (apps choose trace ids, retries reuse them): a
        span that started and ended, then another with its id that is still open, must
        reach the sidecar as start, end, start — or the new one is never watched."""
        pending, probes = self._pending, self._probes
        settled = len(pending)
        # Short spans first: at equal timestamps an earlier span's end then precedes a
        # later span's start, and the sort below is stable.
        for obj, info, ended in self._short:
            try:
                start = describe_start(obj, info)
                error = getattr(obj, "error", None) is not None
                pending += (start, SpanEnd(start.span_id, ended, error))
                if info[2] is not None:
                    probes.saw(info[2], info[1])
            except Exception:
                logger.debug(
                    "[non-fatal] agents-watchdog skipped an unreadable span", exc_info=True
                )
        for obj, info in self._fresh.items():
            try:
                pending.append(describe_start(obj, info))
                if info[2] is not None:
                    probes.saw(info[2], info[1])
            except Exception:
                logger.debug(
                    "[non-fatal] agents-watchdog skipped an unreadable span", exc_info=True
                )
        self._fresh.clear()
        self._summarised += self._short_seen - len(self._short)
        self._short.clear()
        self._short_seen = 0
        if len(pending) > settled:
            # Ends of spans sent earlier were queued as they came; the events settled
            # here interleave with them. Timsort on runs already in order is linear.
            pending.sort(key=_event_time)

    def _snapshot(self) -> list[SpanStart]:
        """Every span open right now, from the app threads' own record."""
        # dict.copy() runs in C without releasing the GIL: a consistent snapshot even
        # while the app's threads start and end spans.
        opened = self._open.copy()
        self._resynced = set(opened)
        snapshot = []
        for obj, info in opened.items():
            try:
                snapshot.append(describe_start(obj, info))
            except Exception:
                logger.debug(
                    "[non-fatal] agents-watchdog skipped an unreadable span", exc_info=True
                )
        return snapshot

    def _find_leaks(self) -> None:
        """Find open spans that can never end, and stop reporting them as open.

        A span whose owning task is done (or whose thread has exited) was left open by
        code that will never run again — an SDK cleanup path that was cancelled, a
        span started by hand and forgotten. Reported open, it would be flagged hung
        for ever. It is a leak when its owner is gone, no open span beneath it has a
        live owner (a run it started may go on in another task), and the last check
        found the same (a span being ended right now is not mistaken for one)."""
        opened = self._open.copy()
        threads = sys._current_frames().keys()
        gone = set()
        for obj, info in opened.items():
            task = info[2]
            if task.done() if task is not None else info[1] not in threads:
                gone.add(obj)
        if not gone:
            self._leak_candidates = set()
            return
        keys = {_span_id_of(obj): obj for obj in opened}
        protected: set[Any] = set()
        for obj in opened:
            if obj in gone:
                continue
            parent = _parent_of(obj)
            for _ in range(64):
                ancestor = keys.get(parent) if parent is not None else None
                if ancestor is None or ancestor in protected:
                    break
                protected.add(ancestor)
                parent = _parent_of(ancestor)
        candidates = gone - protected
        leaked = candidates & self._leak_candidates
        self._leak_candidates = candidates - leaked
        for obj in leaked:
            if self._open.pop(obj, None) is not None:
                self._resynced.discard(obj)
                # Bounded while undelivered: past it, the resync that follows a failed
                # send removes them at the sidecar all the same (as ended, time unknown).
                if len(self._leaked) < MAX_ACTIVE:
                    self._leaked.append(_span_id_of(obj))

    def _send_all(self, client: httpx.Client, goodbye: bool) -> bool:
        """Send pending events in chunks of ``max_batch``; True when all were taken."""
        self._resync_now = False
        self._settle()
        while True:
            last = len(self._pending) <= self.max_batch
            chunk = self._pending[: self.max_batch]
            # The resync rides on the last chunk, so that it describes the state after
            # every event the sidecar has been given.
            resync = self._need_resync and last
            if not self._post(client, chunk, resync, goodbye and last):
                return False
            del self._pending[: len(chunk)]
            if last:
                return True

    def _post(self, client: httpx.Client, events: list[Event], resync: bool, goodbye: bool) -> bool:
        assert self._process is not None
        self._seq += 1
        now = _monotonic()
        if now >= self._next_leak_check:
            self._next_leak_check = now + self.settings.heartbeat_interval
            self._find_leaks()
        blind_setting, blind = self._blind()
        if blind_setting is not None:
            warn_blind(blind_setting)  # once per setting: it remembers
        batch = Batch(
            v=PROTOCOL_VERSION,
            process=self._process,
            seq=self._seq,
            sent_at=now,
            heartbeat=Heartbeat(
                interval=self.settings.heartbeat_interval,
                open_spans=len(self._open),
                dropped_events=self._dropped() + self._lost,
                wall_minus_mono=time.time() - now,
                loops=self._probes.report(now),
                summarised=self._summarised,
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
            response = client.post(self._endpoint, content=encode(batch), timeout=timeout)
            if response.status_code != 200:
                self._drop_unknown_to_sidecar(response)
                return self._failed(f"HTTP {response.status_code}: {response.text[:300]}")
            reply = decode_reply(response.content)
        except (httpx.HTTPError, msgspec.MsgspecError, OSError) as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        if self._failing:
            self._failing = False
            logger.warning("agents-watchdog: sidecar at %s reachable again", self.settings.url)
        self._error_streak = 0
        self._results = []
        self._active.clear()  # delivered
        self._leaked = []
        for command in reply.commands:
            self._results.append(execute(command, self._open))
        restarted = self._sidecar_id is not None and reply.sidecar_id != self._sidecar_id
        self._sidecar_id = reply.sidecar_id
        if resync:
            self._need_resync = reply.resync
        elif reply.resync or restarted:
            self._need_resync = True
        # Results (and a resync the sidecar asked for) go back at once, not in a second.
        self._resync_now = self._need_resync or bool(self._results)
        return True

    def _drop_unknown_to_sidecar(self, response: httpx.Response) -> None:
        """A sidecar older than this app refuses the client timeouts as an unknown field:
        the next try goes without them, so the process is watched all the same."""
        process = self._process
        if (
            response.status_code == 422
            and process is not None
            and process.client_timeouts is not None
            and "client_timeouts" in response.text
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
