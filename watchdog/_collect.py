"""Collecting: what changed in the app's record since the last look, as wire events.

The app's threads keep the state (see ``processor.py``): the exact set of open spans
(one dict store and one pop per span, atomic under the GIL), the ends of spans the
sidecar was told about, a ring of the last spans that came and went, and the parents
those ran under. The collector never replays the app's events one by one. Once per
``flush_interval`` (on the sender thread) a set difference in C between the open spans
and those already announced gives the spans to announce; the ends the app recorded for
announced spans give their end events; the rest of what started and ended meanwhile
was never news to anyone. So its cost grows with the spans that stay open across a
collection, not with the spans that come and go.

What it gives up, with its bounds:
- A span that begins and ends between two collections is *short*. The app keeps the
  last ``SHORT_SAMPLE`` of them in a ring: those are sent in full, start and end, for
  durations and learned thresholds; the rest are counted (``summarised``). Whenever at
  most ``SHORT_SAMPLE`` short spans end between two collections (256 a second at the
  default interval), every one is sent. Beyond that the sample is the last
  ``SHORT_SAMPLE`` to end in each interval: its durations differ from the whole
  interval's only if the mix of spans changes within one interval.
- The parent of every short span (its span, or its trace) is recorded by the app, so a
  container whose children churn is reported active and never looks idle. The set is
  capped (``MAX_ACTIVE`` ids per interval); past the cap every announced span is
  reported active for that interval — never a false alarm, at worst an idle container
  noticed one interval late.
- An end the app could not record (its queue full: a drop, counted, and a resync
  follows) is sent at the time the span was first seen gone: at most one interval late.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from typing import Any, Final, Protocol

from watchdog._control import LoopProbes
from watchdog._describe import OpenInfo, describe_start, failed, parent_of, span_id_of
from watchdog.protocol import Event, SpanEnd, SpanStart

__all__ = ["MAX_ACTIVE", "SHORT_SAMPLE", "Collector", "Record"]

# Short spans the app keeps per collection, sent in full (see the module docstring).
SHORT_SAMPLE: Final = 64
# Bound on the parents of short spans the app records per collection, and on the
# active ids kept for delivery across an outage.
MAX_ACTIVE: Final = 100_000

# Bound once, as in _sender.py: a test patching time.monotonic must not skew spans.
_monotonic: Final = time.monotonic
logger = logging.getLogger("watchdog.processor")


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


def _event_time(event: Event) -> float:
    return event.started if isinstance(event, SpanStart) else event.ended


def _skipped() -> None:
    # A span object that cannot be read is skipped, never fatal.
    logger.debug("[non-fatal] agents-watchdog skipped an unreadable span", exc_info=True)


class Collector:
    """Turns the app's record into wire events for one sender (not thread-safe: it
    belongs to the sender thread). Events go to ``pending``, the sender's list."""

    def __init__(self, record: Record, pending: list[Event], probes: LoopProbes) -> None:
        self._record = record
        self._pending = pending
        self._probes = probes
        # Announced spans that were described: their wire ids, for their end events.
        self._ids: dict[Any, str] = {}
        # Announced spans gone from the open record with no end recorded yet: when
        # first seen so. An end still on its way arrives within a collection.
        self._unended: dict[Any, float] = {}
        # The parents' set swapped out at the last collection, and its size then: an
        # app thread that read it just before the swap may still add to it.
        self._retired: set[str] = set()
        self._retired_size = 0
        # Announced spans reported active, until delivered.
        self.active: set[str] = set()
        # Short spans counted by the app, read through its counter (whose every read
        # counts one too), and those sent in full.
        self._count_reads = 0
        self._short_sent = 0
        self._summarised = 0
        # Leaks found and not yet delivered; candidates seen by the last check.
        self.leaked: list[str] = []
        self._leak_candidates: set[Any] = set()

    def collect(self) -> None:
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
        self._in_order(before)

    def _in_order(self, before: int) -> None:
        # Order matters when ids repeat (apps choose trace ids, retries reuse them): a
        # span that started and ended, then another with its id that is still open,
        # must reach the sidecar as start, end, start. Only the events added since
        # ``before`` need it: a backlog kept through an outage is in order already.
        pending = self._pending
        if len(pending) > before + 1:
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

    def take_ends(self) -> None:
        """Only the ends of announced spans the app recorded (cheap: no copy)."""
        before = len(self._pending)
        self._take_ends(self._record._queue)
        self._in_order(before)

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
        room = MAX_ACTIVE - len(self.active)
        if room > 0:
            self.active |= found if len(found) <= room else set(list(found)[:room])

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

    def snapshot(self) -> list[SpanStart]:
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

    def find_leaks(self) -> None:
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
                if len(self.leaked) < MAX_ACTIVE:
                    self.leaked.append(span_id_of(obj))
