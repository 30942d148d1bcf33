"""The in-app side: a ``TracingProcessor`` that streams span starts and ends to the sidecar.

Add one line to an app built on ``openai-agents``::

    from watchdog.processor import install
    install()                  # or install(url=..., service=..., token=...)

Contract of :class:`WatchdogProcessor`, kept true by design:

- ``on_trace_start``/``on_span_start``/``on_trace_end``/``on_span_end`` are thread-safe,
  never block, never take a lock (but at most once per collection, to wake the sender
  when a span the sidecar knows of ends), never log, never raise, and allocate one
  small tuple. On start they record what only the calling thread knows — a monotonic
  timestamp, its thread id, its running asyncio task — in the dict of open spans; on
  end they remove the span from it and note the end where the sender will look: for a
  span the sidecar was told about, in a bounded deque; for one that came and went
  unseen, in a ring of the last few and, as activity, its parent's id in a set. Each is
  one C-level operation, atomic under the GIL.
- Everything else (reading span attributes, wire events, JSON, HTTP, resync after
  outages) happens on one daemon thread, started on the first span, whose cost grows
  with the spans that stay open, not with the spans that come and go (``_sender.py``).
- ``force_flush()`` and ``shutdown(timeout)`` block their caller, as the SDK's
  interface allows, and never for longer than their timeout.
- After ``os.fork()`` the child starts clean: new identity, empty queue, no thread
  until its first span.

Why one module (past 400 lines): the hot path, the lifecycle whose state it reads
(start, fork, shutdown) and ``install()`` are the app's whole contract with the SDK,
read together.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import weakref
from asyncio import current_task
from asyncio.events import _get_running_loop
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING, Any, Final

from agents.tracing import (
    TracingProcessor,
    add_trace_processor,
    set_trace_processors,
)

from watchdog._blind import globally_disabled, reason, watch_for_blindness
from watchdog._collect import MAX_ACTIVE, SHORT_SAMPLE
from watchdog._control import abortable
from watchdog._describe import OpenInfo
from watchdog._runs import RunAborted, aborted, guard_runs
from watchdog._sender import Sender, SenderSettings
from watchdog._transport import check_url

if TYPE_CHECKING:
    from agents.tracing import Span, Trace

__all__ = [
    "DEFAULT_URL",
    "RunAborted",
    "WatchdogProcessor",
    "abortable",
    "aborted",
    "install",
]

DEFAULT_URL: Final = "http://127.0.0.1:9750"
_get_ident = threading.get_ident
try:
    # The running task of each event loop, as asyncio itself keeps it (3.11 to 3.13):
    # a dict lookup, where current_task() would first find the loop again and check it.
    from _asyncio import _current_tasks  # type: ignore[attr-defined]

    _task_of: Any = _current_tasks.get
except ImportError:  # pragma: no cover - a Python whose asyncio keeps it elsewhere
    _task_of = current_task
# How long a process stays blind after its last untraced run ended: an app that runs
# untraced now and then is partly unwatched, and must not flicker in and out of sight.
BLIND_HOLD: Final = 300.0
# Threads whose running loop the hot path remembers at once.
_MAX_LOOPS: Final = 256


class WatchdogProcessor(TracingProcessor):
    """Streams span lifecycles to an ``agents-watchdog`` sidecar so hung spans get noticed.

    Construct it through :func:`install` unless you manage the SDK's processors
    yourself. ``max_open_spans`` bounds the open spans it tracks (spans that are never
    ended cannot grow it further; past it, starts are dropped and counted);
    ``max_queue`` bounds the ends of announced spans waiting for the sender thread;
    the sender collects what changed every ``flush_interval`` seconds and sends it at
    once, at most ``max_batch`` events per request; ``heartbeat_interval`` is how often
    the process reports in even when idle.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        service: str = "app",
        token: str | None = None,
        *,
        max_queue: int = 65_536,
        max_open_spans: int = 100_000,
        max_batch: int = 2_000,
        flush_interval: float = 0.25,
        heartbeat_interval: float = 1.0,
        request_timeout: float = 2.0,
    ) -> None:
        check_url(url)
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        if max_open_spans < 1:
            raise ValueError(f"max_open_spans must be at least 1, got {max_open_spans}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if not 0 < flush_interval <= heartbeat_interval:
            raise ValueError(
                "flush_interval must be positive and at most heartbeat_interval, "
                f"got {flush_interval} and {heartbeat_interval}"
            )
        if request_timeout <= 0:
            raise ValueError(f"request_timeout must be positive, got {request_timeout}")
        self._settings = SenderSettings(
            url=url.rstrip("/"),
            service=service,
            token=token,
            max_batch=max_batch,
            flush_interval=flush_interval,
            heartbeat_interval=heartbeat_interval,
            request_timeout=request_timeout,
            max_queue=max_queue,
        )
        self._max_queue = max_queue
        self._max_open_spans = max_open_spans
        self._start_lock = threading.Lock()
        # The SDK's trace provider, once install() watches it for blindness.
        self._provider: Any = None
        self._reset()
        _FORK_CHILDREN.add(self)
        # Every agent run gets the boundary where an abort becomes RunAborted: a
        # processor added by hand (add_trace_processor) keeps the same promise.
        guard_runs()

    def _reset(self) -> None:
        # The record and the sender are per process: a forked child must inherit neither
        # its parent's spans nor its dead thread. Written by the app's threads with one
        # atomic operation each, read and emptied by the sender (see _sender.Record).
        # The exact set of open spans, so that no outage and no overflow can lose one.
        self._open: dict[Any, OpenInfo] = {}
        self._max_open = self._max_open_spans
        # Spans the sender announced to the sidecar: their ends go to the queue.
        self._announced: dict[Any, float] = {}
        self._queue: deque[tuple[Any, float]] = deque()
        self._queue_cap = self._max_queue
        # The last short spans to end (announced never), and the parents they ran under.
        self._short: deque[tuple[Any, OpenInfo, float]] = deque(maxlen=SHORT_SAMPLE)
        self._active: set[str] = set()
        self._max_active = MAX_ACTIVE
        self._short_ended = itertools.count().__next__
        # thread id -> the event loop last found running on it (see on_span_start).
        self._loops: dict[int, Any] = {}
        self._sender: Sender | None = None
        self._started = False
        self._shut_down = False
        self._dropped = 0
        # Blindness (see install): why runs go unseen, and the untraced runs in progress.
        # Which setting hides runs ("env", "manual", "run", "removed"); the words are
        # put together on the sender thread, not on the app's (see _blind.reason).
        self._blind_kind: str | None = None
        self._untraced: dict[Any, float] = {}
        self._untraced_runs = 0
        self._untraced_last = -BLIND_HOLD

    # -- the hot path ----------------------------------------------------------------
    # Written out in each method rather than shared: a call per span would cost more
    # than the lines it saves.

    def on_span_start(self, span: Span[Any]) -> None:
        """Record that a span (or, as ``on_trace_start``, a trace) began, with the
        calling thread and asyncio task. O(1), never raises."""
        try:
            thread = _get_ident()
            # The loop running on this thread, as last found here: still it while it
            # runs here (asyncio sets a loop's _thread_id for as long as it runs).
            # Asking asyncio costs a getpid() system call per span on 3.11.
            loop = self._loops.get(thread)
            if loop is None or loop._thread_id != thread:
                loop = self._running_loop(thread)
            open_spans = self._open
            if len(open_spans) < self._max_open:
                open_spans[span] = (
                    monotonic(),
                    thread,
                    None if loop is None else _task_of(loop),
                )
            else:
                self._dropped += 1
            if not self._started:
                # After the record: the sender's first exchange reports this span open.
                self._start()
        except Exception:
            pass  # the app must never see a watchdog failure

    # A trace (a whole workflow run) begins the same way.
    on_trace_start = on_span_start  # type: ignore[assignment]

    def on_span_end(self, span: Span[Any]) -> None:
        """Record that a span ended. O(1), never raises."""
        try:
            info = self._open.pop(span, None)
            ended = monotonic()
            if span in self._announced:
                queue = self._queue
                if len(queue) < self._queue_cap:
                    queue.append((span, ended))
                else:
                    self._dropped += 1
                sender = self._sender
                if sender is not None:
                    sender.news()
            elif info is not None:
                self._short.append((span, info, ended))
                self._short_ended()
                active = self._active
                if len(active) < self._max_active:
                    # The SDK's span keeps these in slots: read directly, they cost a
                    # fraction of the properties (other span classes: see below).
                    active.add(span._parent_id or span._trace_id)  # type: ignore[attr-defined]
        except AttributeError:
            self._mark_parent(span)
        except Exception:
            pass  # the app must never see a watchdog failure

    def on_trace_end(self, trace: Trace) -> None:
        """Record that a trace ended. O(1), never raises."""
        try:
            info = self._open.pop(trace, None)
            ended = monotonic()
            if trace in self._announced:
                queue = self._queue
                if len(queue) < self._queue_cap:
                    queue.append((trace, ended))
                else:
                    self._dropped += 1
                sender = self._sender
                if sender is not None:
                    sender.news()
            elif info is not None:
                self._short.append((trace, info, ended))
                self._short_ended()
        except Exception:
            pass  # the app must never see a watchdog failure

    def _running_loop(self, thread: int) -> Any:
        # Once per loop and thread: asyncio's own answer, kept if the loop says which
        # thread it runs on (a loop that does not is asked about every time).
        loop = _get_running_loop()
        if loop is not None and getattr(loop, "_thread_id", None) == thread:
            loops = self._loops
            if len(loops) >= _MAX_LOOPS:
                loops.clear()  # loops of threads gone since: found again when needed
            loops[thread] = loop
        return loop

    def _mark_parent(self, span: Any) -> None:
        # A span class other than the SDK's: its parent through the public properties.
        try:
            active = self._active
            if len(active) < self._max_active:
                active.add(span.parent_id or span.trace_id)
        except Exception:
            pass  # not a span at all: nothing ran under it

    # -- lifecycle ---------------------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._started or self._shut_down:
                return
            self._sender = Sender(self._settings, self)
            self._sender.start()
            self._started = True

    def force_flush(self, timeout: float = 5.0) -> None:
        """Send everything recorded so far and wait for the sidecar to take it.

        Returns after at most ``timeout`` seconds whether or not the sidecar answered.
        """
        sender = self._sender
        if sender is not None:
            sender.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> None:
        """Send what is pending and a goodbye, then stop the sender thread.

        Safe to call more than once; waits at most ``timeout`` seconds (5 by default).
        Spans that start afterwards are ignored.
        """
        with self._start_lock:
            self._shut_down = True
            self._started = True  # keeps the hot path from starting a new sender
            sender, self._sender = self._sender, None
        if sender is not None:
            sender.stop(5.0 if timeout is None else timeout)
        self._stop_recording()

    def _stop_recording(self) -> None:
        # Deques with maxlen 0 discard every append and the caps of 0 stop the open-span
        # record and the parents: the hot path keeps working, at the same cost, holding
        # nothing.
        self._max_open = self._queue_cap = self._max_active = 0
        self._open = {}
        self._announced = {}
        self._queue = deque(maxlen=0)
        self._short = deque(maxlen=0)
        self._active = set()

    # -- blindness ---------------------------------------------------------------------

    def _untraced_run(self, kind: str) -> None:
        """A run began that this processor cannot see (tracing off, or it was removed).
        Called once per run, never per span; starts the sender so the process
        registers and shows as blind."""
        self._blind_kind = kind
        self._untraced_runs += 1
        self._untraced_last = monotonic()
        if not self._started:
            self._start()

    def _blind(self) -> tuple[str | None, str | None]:
        kind = self._blind_kind
        return (None if kind is None else reason(kind)), self.blindness()

    def blindness(self) -> str | None:
        """Why this process's runs cannot be watched right now, or None when they can.

        Blind while an untraced run is in progress, while tracing is off for the whole
        process, and for ``BLIND_HOLD`` seconds after the last untraced run."""
        kind = self._blind_kind
        if kind is None:
            return None
        why = reason(kind)
        untraced = len(self._untraced)
        if untraced:
            return f"{why} ({untraced} untraced run(s) in progress)"
        if globally_disabled(self._provider) is not None:
            return why
        if monotonic() - self._untraced_last < BLIND_HOLD:
            return f"{why} (last untraced run ended {monotonic() - self._untraced_last:.0f} s ago)"
        return None

    @property
    def untraced_runs(self) -> int:
        """Runs this process began that the SDK's tracing did not show this processor."""
        return self._untraced_runs

    @property
    def dropped_events(self) -> int:
        """Events dropped because the queue to the sender thread was full."""
        return self._dropped

    @property
    def open_spans(self) -> int:
        """Spans this process has open right now, as the processor sees them."""
        return len(self._open)

    def _after_fork_in_child(self) -> None:
        self._start_lock = threading.Lock()
        was_shut_down = self._shut_down
        self._reset()
        if was_shut_down:
            self._shut_down = self._started = True
            self._stop_recording()


_FORK_CHILDREN: weakref.WeakSet[WatchdogProcessor] = weakref.WeakSet()


def _reset_processors_in_child() -> None:
    for processor in list(_FORK_CHILDREN):
        processor._after_fork_in_child()


def _let_senders_finish_importing() -> None:
    # Once per sender, for at most one exchange: a fork in the middle of its first one
    # would hand the child an import lock that no thread of the child will release.
    for processor in list(_FORK_CHILDREN):
        sender = processor._sender
        if sender is not None:
            sender.warm.wait(sender.settings.request_timeout + 1.0)


os.register_at_fork(before=_let_senders_finish_importing, after_in_child=_reset_processors_in_child)

_installed: WatchdogProcessor | None = None
_install_lock = threading.Lock()


def install(
    url: str | None = None,
    service: str | None = None,
    token: str | None = None,
    replace_default: bool = False,
) -> WatchdogProcessor:
    """Register a :class:`WatchdogProcessor` with the SDK's tracing and return it.

    ``url`` defaults to ``$AGENTS_WATCHDOG_URL`` or ``http://127.0.0.1:9750``;
    ``service`` to ``$AGENTS_WATCHDOG_SERVICE`` or the program's name; ``token`` to
    ``$AGENTS_WATCHDOG_TOKEN``. With ``replace_default=True`` the SDK's own processors
    are replaced, so spans are watched but not exported to OpenAI.

    Calling it again returns the processor already installed. Nothing starts until the
    first span: it is safe to call before a server forks its workers.
    """
    global _installed
    with _install_lock:
        if _installed is not None:
            return _installed
        processor = WatchdogProcessor(
            url=url or os.environ.get("AGENTS_WATCHDOG_URL") or DEFAULT_URL,
            service=service or os.environ.get("AGENTS_WATCHDOG_SERVICE") or _program_name(),
            token=token or os.environ.get("AGENTS_WATCHDOG_TOKEN") or None,
        )
        if replace_default:
            set_trace_processors([processor])
        else:
            add_trace_processor(processor)
        _installed = processor
        watch_for_blindness(processor, lambda: _installed)
        return processor


def _program_name() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    name = name.removesuffix(".py")
    return name if name and name not in {"-c", "__main__"} else "app"
