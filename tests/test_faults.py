"""Fault injection: the sidecar killed, restarted and paused under load, a network that
delays, drops, resets and truncates, a full or read-only disk, clock jumps in the app,
fork without exec, and thousands of processes that come and go.

After each fault the same invariants are checked: every injected hang is detected,
nothing else is flagged, the sidecar's open spans are exactly the app's, memory stays
bounded on both sides, and the counters account for every drop.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from agents import custom_span, trace
from agents.tracing import Span, Trace

import watchdog._sender
from tests.conftest import REPO, spans, thresholds, wait_until
from tests.launcher import SidecarProcess
from tests.proxy import FaultProxy
from tests.recorder import Recorder
from tests.wire_process import WireProcess, start
from watchdog.processor import WatchdogProcessor
from watchdog.protocol import SpanEnd, SpanStart

pytestmark = pytest.mark.slow

Watch = Callable[..., WatchdogProcessor]
Factory = Callable[..., SidecarProcess]

THRESHOLD = 2.0
CONFIG = (
    thresholds(default=60, custom=THRESHOLD, function=THRESHOLD)
    + """
[processes]
# Network faults of a few seconds are not what these tests are about; wire processes
# that vanish (heartbeats every 0.05 s) are unresponsive after 1 s, then forgotten.
unresponsive_after = 20
orphan_retention = 1
[incidents]
reconcile_seconds = 5
"""
)


@pytest.fixture(scope="module")
def sidecar() -> Iterator[SidecarProcess]:
    """One sidecar for the module; tests that kill or pause it leave it running."""
    with SidecarProcess(CONFIG) as process:
        yield process


def logged(sidecar: SidecarProcess, event: str, **fields: Any) -> list[dict[str, Any]]:
    """Log entries named ``event`` whose fields match."""
    return [
        e
        for e in list(sidecar.logs)
        if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
    ]


def processes(sidecar: SidecarProcess, service: str) -> list[dict[str, Any]]:
    """``GET /v1/processes`` of one service."""
    listing = httpx.get(f"{sidecar.url}/v1/processes", timeout=10).json()["processes"]
    return [p for p in listing if p["service"] == service]


class SpanLoad:
    """App threads that open and close spans without pause, each under its own trace:
    a busy app. Span lengths vary from nothing to 12 ms, so some end before the sender
    sees them (summarised) and some are sent as started and ended."""

    def __init__(self, threads: int = 3) -> None:
        self._stop = threading.Event()
        self.spans = 0
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]

    def _run(self, index: int) -> None:
        with trace(f"load-{index}"):
            while not self._stop.is_set():
                with custom_span("work"):
                    self._stop.wait((self.spans % 4) * 0.004)  # the span's work
                self.spans += 1

    def __enter__(self) -> SpanLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


class Stuck:
    """Spans opened and left open (each under a trace of its own): injected hangs."""

    def __init__(self) -> None:
        self.opened: dict[str, tuple[Trace, Span[Any]]] = {}

    def open(self, name: str) -> str:
        """Open a span named ``name``; returns its span id."""
        run = trace(f"{name}-run")
        run.start()
        span = custom_span(name, parent=run)
        span.start()
        self.opened[span.span_id] = (run, span)
        return span.span_id

    def close(self) -> None:
        """End every stuck span (and its trace)."""
        for run, span in self.opened.values():
            span.finish()
            run.finish()
        self.opened.clear()


def sidecar_open_ids(sidecar: SidecarProcess, service: str) -> set[str]:
    """Span ids the sidecar holds open (hung included) for ``service``."""
    return {s["span_id"] for s in spans(sidecar, service=service) if s["state"] != "orphaned"}


def app_open_ids(processor: WatchdogProcessor) -> set[str]:
    """Span (and trace) ids the processor knows to be open in this process."""
    return {
        getattr(obj, "span_id", None) or obj.trace_id
        for obj in list(processor._open)  # the app threads' own record
    }


def test_sidecar_and_network_faults_under_load(sidecar: SidecarProcess, watch: Watch) -> None:
    """One app under load rides out, in turn: a proxy that delays, drops, resets and
    truncates; three kill -9 and restarts of the sidecar; a SIGSTOP long enough to
    overflow the processor's queue. One hang is injected before each kind of fault."""
    service = "faults-net"
    with FaultProxy(sidecar.port, seed=9) as proxy:
        processor = watch(
            proxy.url,
            service=service,
            max_queue=200,
            max_batch=40,
            flush_interval=0.1,
            heartbeat_interval=0.25,
            request_timeout=0.3,
        )
        stuck = Stuck()
        with SpanLoad(threads=3):
            injected = {stuck.open("stuck-network"): "network"}
            for mode, hit in (
                ("delay", "delayed"),
                ("drop", "dropped"),
                ("reset", "reset"),
                ("truncate", "truncated_reply"),
                ("truncate_request", "truncated_request"),
            ):
                seen = proxy.counts[hit]
                proxy.set_mode(mode, delay=0.5)  # type: ignore[arg-type]
                wait_until(lambda: proxy.counts[hit] >= seen + 2, within=10)  # noqa: B023
                proxy.set_mode("pass")
                # Each fault is shorter than the threshold: a span whose end a fault
                # held back longer than that would be flagged (see SECURITY.md).
                processor.force_flush(5)

            injected[stuck.open("stuck-restart")] = "restart"
            for _ in range(3):
                # Each sidecar life first hears the app's resync, then dies.
                wait_until(lambda: set(injected) <= sidecar_open_ids(sidecar, service))
                sidecar.kill()
                sidecar.start()

            injected[stuck.open("stuck-sigstop")] = "sigstop"
            wait_until(lambda: set(injected) <= sidecar_open_ids(sidecar, service))
            assert sidecar.pid is not None
            os.kill(sidecar.pid, signal.SIGSTOP)
            try:
                # Past the buffers: the app keeps running, its backlog overflows.
                busy = processor._sender
                assert busy is not None
                wait_until(lambda: processor.dropped_events + busy._lost > 0, within=15)
            finally:
                os.kill(sidecar.pid, signal.SIGCONT)
        # The load is over; what is open now stays open.
        processor.force_flush()

        def settled() -> bool:
            return sidecar_open_ids(sidecar, service) == app_open_ids(processor)

        wait_until(settled, within=10)  # no lost open span, no phantom
        wait_until(
            lambda: (
                {s["span_id"] for s in spans(sidecar, service=service, state="hung")}
                == set(injected)
            ),
            within=THRESHOLD + 5,
        )
        flagged = {e["span_id"] for e in logged(sidecar, "span_hung", service=service)}
        assert flagged == set(injected), "a span flagged that was not stuck, or one missed"

        # The counters explain the drops: what the app dropped is what it reported.
        sender = processor._sender
        assert sender is not None
        dropped = processor.dropped_events + sender._lost
        wait_until(lambda: processes(sidecar, service)[0]["dropped_events"] == dropped)
        # Bounded on the app side, whatever happened.
        assert len(processor._queue) <= 200
        assert len(sender._pending) <= sender.settings.max_pending
        # A request cut short reached the sidecar as a counted refusal, not as an error.
        assert not logged(sidecar, "Exception in ASGI application\n")
        assert logged(sidecar, "request_rejected", reason="client_disconnected")
        stuck.close()
        processor.force_flush()
        wait_until(lambda: not sidecar_open_ids(sidecar, service))


def test_a_span_a_resync_announced_is_ended_even_if_it_was_short(watch: Watch) -> None:
    """A span that starts while a resync is being sent is in the resync (the app's own
    record has it) before the sender has drained its start. If it then ends before the
    next send, among many short spans, its end must still be sent: the sidecar was
    told it is open."""
    with Recorder() as recorder:
        processor = watch(recorder.url, max_batch=100, flush_interval=5.0, heartbeat_interval=5.0)
        late: list[Span[Any]] = []
        with trace("wf") as run:
            recorder.wait_for(lambda b: b.resync is not None)  # the first exchange
            sender = processor._sender
            assert sender is not None
            snapshot = sender._snapshot

            def snapshot_with_a_span_starting() -> list[SpanStart]:
                if not late:  # the span starts right before the snapshot is taken
                    late.append(custom_span("late", parent=run))
                    late[0].start()
                return snapshot()

            sender._snapshot = snapshot_with_a_span_starting  # type: ignore[method-assign]
            recorder.ask_resync = True
            processor.force_flush()  # its reply asks for a resync, which follows at once
            announced = recorder.wait_for(
                lambda b: bool(late) and late[0].span_id in {s.span_id for s in b.resync or ()}
            )
            since = recorder.batches.index(announced) + 1
            late[0].finish()
            for _ in range(2000):  # short spans: a sample is sent, the rest summarised
                with custom_span("short"):
                    pass
            processor.force_flush()
        later = recorder.batches[since:]
        ended = {e.span_id for b in later for e in b.events if isinstance(e, SpanEnd)}
        resynced_away = any(
            late[0].span_id not in {s.span_id for s in b.resync} for b in later if b.resync
        )
        assert late[0].span_id in ended or resynced_away, "the sidecar keeps it open forever"


def test_fork_without_exec_while_the_sender_is_busy(sidecar: SidecarProcess) -> None:
    """A prefork server: children forked without exec while the parent's sender works.
    Each child starts clean with its own identity (none of the parent's spans), its own
    hang is found and named by its pid, and a child that dies leaves its open span as
    an orphan; the parent goes on undisturbed."""
    children = 4
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_WATCHDOG_")}
    app = subprocess.Popen(
        [sys.executable, "-m", "tests.fork_app", sidecar.url, str(children)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    pids: dict[str, int] = {}
    try:
        assert app.stdout is not None
        while len(pids) < children + 1:
            line = app.stdout.readline().split()  # no child deadlocked after the fork
            assert line, "the app or a child died"
            if line[0] == "forked":
                pids["parent"] = app.pid
            else:
                pids[f"child-stuck-{line[1]}"] = int(line[2])
        pids["parent-stuck"] = pids.pop("parent")

        def hung_by_name() -> dict[str, dict[str, Any]] | None:
            hung = {s["name"]: s for s in spans(sidecar, service="forker", state="hung")}
            return hung if set(hung) == set(pids) else None

        hung = wait_until(hung_by_name, within=THRESHOLD + 8)
        for name, span in hung.items():
            assert span["pid"] == pids[name], f"{name} is reported for the wrong process"
        assert len({s["instance_id"] for s in hung.values()}) == children + 1
        # Each process has exactly its own spans: the parent's were not inherited.
        for span in spans(sidecar, service="forker"):
            if span["name"] not in ("work", "parent-load"):
                expected = pids.get(span["name"], pids.get(span["name"].replace("-run", "")))
                assert expected is None or span["pid"] == expected or span["kind"] == "trace"
        traces = [s for s in spans(sidecar, service="forker") if s["kind"] == "trace"]
        assert sorted(s["name"] for s in traces) == sorted(
            ["parent-load", "parent-run", *(f"child-{i}" for i in range(children))]
        )
        flagged = {e["name"] for e in logged(sidecar, "span_hung", service="forker")}
        assert flagged == set(pids), "a span flagged that was not stuck"

        for index in range(children):
            os.kill(pids[f"child-stuck-{index}"], signal.SIGUSR1)

        # Children exit without a goodbye: found dead; odd ones left their span open.
        def all_died() -> list[dict[str, Any]] | None:
            died = logged(sidecar, "process_died", service="forker")
            return died if len(died) == children else None

        died = wait_until(all_died, within=15)
        orphans = {e["pid"]: e["orphaned_spans"] for e in died}
        # An odd child left its stuck span and its trace open.
        assert orphans == {pids[f"child-stuck-{i}"]: 2 if i % 2 else 0 for i in range(children)}
        os.kill(app.pid, signal.SIGUSR1)
        assert app.wait(15) == 0
        left = wait_until(lambda: logged(sidecar, "process_left", pid=app.pid))
        assert left[0]["service"] == "forker"
    finally:
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if app.poll() is None:
            app.kill()
        app.wait(10)
        if app.stdout is not None:
            app.stdout.close()


class _SteppedClock(types.SimpleNamespace):
    """The ``time`` module as the sender sees it, with a wall clock that can be stepped
    (as NTP or an operator does) while the monotonic clock runs on."""

    def __init__(self) -> None:
        super().__init__(monotonic=time.monotonic, sleep=time.sleep)
        self.step = 0.0

    def time(self) -> float:
        return time.time() + self.step


def test_app_clock_jumps_change_no_verdict(
    sidecar: SidecarProcess, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spans are timed on the app's monotonic clock. Stepping the app's wall clock an
    hour forward, then back, neither flags a span early nor late: only the wall times
    shown for its spans follow its clock. (Stepping the machine's clock would disturb
    every process on it; the sender's view of it is stepped instead.) An app whose
    monotonic clock reads a million seconds ahead of the sidecar's (another time
    namespace, or host) is timed right too, and its batches stamped otherwise are late."""
    ahead = 1_000_000.0

    def far_clock() -> float:
        return time.monotonic() + ahead

    far = WireProcess(sidecar.url, service="faults-far-clock", interval=0.2)
    began = far_clock()
    far_events: list[SpanStart | SpanEnd] = [
        SpanStart("span_far_stuck", "trace_far", None, "function", "stuck", began, 1),
        SpanStart("span_far_quick", "trace_far", None, "function", "quick", began, 1),
    ]
    _send_with_clock(far, far_clock, far_events)
    _send_with_clock(far, far_clock, [SpanEnd("span_far_quick", far_clock())])

    clock = _SteppedClock()
    monkeypatch.setattr(watchdog._sender, "time", clock)
    processor = watch(
        sidecar.url, service="faults-clock", flush_interval=0.1, heartbeat_interval=0.2
    )
    stuck = Stuck()
    injected: dict[str, float] = {}
    with SpanLoad(threads=1):
        for step in (0.0, 3600.0, -3600.0):
            clock.step = step
            processor.force_flush()
            injected[stuck.open(f"stuck-{step:+.0f}")] = step

            def shown_on_the_app_clock(step: float = step) -> bool:
                shown = [
                    s for s in spans(sidecar, service="faults-clock") if s["span_id"] in injected
                ]
                return len(shown) == len(injected) and all(
                    abs(datetime_of(s["started_at"]) - time.time() - step) < 10 for s in shown
                )

            # The wall times shown follow the app's latest clock, for every span.
            wait_until(shown_on_the_app_clock)
        wait_until(
            lambda: len(spans(sidecar, service="faults-clock", state="hung")) == len(injected),
            within=THRESHOLD + 5,
        )
    flagged = logged(sidecar, "span_hung", service="faults-clock")
    assert {e["span_id"] for e in flagged} == set(injected)
    for entry in flagged:
        # Flagged when their threshold passed: neither an hour early nor an hour late.
        assert THRESHOLD <= entry["age_seconds"] < THRESHOLD + 2
    stuck.close()

    # Its pid cannot be verified: a batch after the deadline is what proves it alive.
    _send_with_clock(far, far_clock, [])
    hung = wait_until(lambda: spans(sidecar, service="faults-far-clock", state="hung"))
    assert [s["span_id"] for s in hung] == ["span_far_stuck"]
    assert hung[0]["age_seconds"] < THRESHOLD + 5
    assert [e["name"] for e in logged(sidecar, "span_hung", service="faults-far-clock")] == [
        "stuck"
    ]
    # A batch stamped on the sidecar's clock is a million seconds older: refused as late.
    with pytest.raises(httpx.HTTPStatusError, match="409"):
        far.send()
    _send_with_clock(far, far_clock, [], goodbye=True)


def datetime_of(text: str) -> float:
    """Epoch seconds of an ISO 8601 time as the sidecar writes it."""
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _send_with_clock(
    app: WireProcess,
    clock: Callable[[], float],
    events: list[SpanStart | SpanEnd],
    goodbye: bool = False,
) -> None:
    """What :meth:`WireProcess.send` does, stamped with ``clock``."""
    from watchdog.protocol import PROTOCOL_VERSION, Batch, Heartbeat, encode

    app.seq += 1
    now = clock()
    batch = Batch(
        v=PROTOCOL_VERSION,
        process=app.info,
        seq=app.seq,
        sent_at=now,
        heartbeat=Heartbeat(
            interval=app.interval,
            open_spans=0,
            dropped_events=0,
            wall_minus_mono=time.time() - now,
        ),
        events=events,
        goodbye=goodbye,
    )
    response = httpx.post(
        f"{app.url}/v1/events", content=encode(batch), headers=app.headers, timeout=10
    )
    response.raise_for_status()


@contextlib.contextmanager
def small_filesystem(size_kb: int) -> Iterator[tuple[Path, bool]]:
    """A tmpfs of ``size_kb`` when this process may mount one (root); else a plain
    directory. Yields (path, mounted)."""
    path = Path(tempfile.mkdtemp(prefix="agents-watchdog-fs-"))
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(path)],
                capture_output=True,
            ).returncode
            == 0
        )
    try:
        yield path, mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def test_incident_database_on_a_full_then_read_only_disk(sidecar_factory: Factory) -> None:
    """The disk under the incident database fills up, then turns read-only: the
    sidecar says so once per streak, keeps detecting and alerting, and records again
    once there is room; restarted on the disk turned read-only, it watches without
    history and says why. As root the disk is a real tmpfs (ENOSPC, then a read-only
    remount). Without the right to mount, the sidecar's file size limit (RLIMIT_FSIZE,
    EFBIG) stands in for the full disk, and read-only is not tried: only a mount can
    impose it."""
    with small_filesystem(512) as (directory, mounted):
        sidecar = sidecar_factory(
            CONFIG + f'path = "{directory}/incidents.db"\n[learning]\npath = "{directory}/l.json"\n'
        )
        assert sidecar.pid is not None
        app = WireProcess(sidecar.url, service="faults-disk", interval=60)
        app.send([start("span_disk_0", "trace_disk_0", "function", "before", age=100.0)])

        def incidents() -> list[dict[str, Any]]:
            response = httpx.get(f"{sidecar.url}/v1/incidents", timeout=10)
            response.raise_for_status()
            return list(response.json()["incidents"])

        wait_until(lambda: [i for i in incidents() if i["span_id"] == "span_disk_0"])
        filler = None
        if mounted:
            filler = fill(directory)
        else:
            size = (directory / "incidents.db-wal").stat().st_size
            resource.prlimit(sidecar.pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
        # Hangs go on being found and alerted; writing them down fails, said once.
        for index in range(1, 30):
            app.send(
                [start(f"span_disk_{index}", f"trace_disk_{index}", "function", "full", 100.0)]
            )
        failed = wait_until(lambda: logged(sidecar, "incident_write_failed"))
        assert len(failed) == 1
        wait_until(lambda: len(logged(sidecar, "alert_firing")) >= 30)
        assert len(spans(sidecar, service="faults-disk", state="hung")) == 30
        assert httpx.get(f"{sidecar.url}/healthz", timeout=10).status_code == 200

        # Room again: the next incident is recorded.
        if filler is not None:
            filler.unlink()
        else:
            resource.prlimit(
                sidecar.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
        app.send([start("span_disk_room", "trace_disk_room", "function", "room", age=100.0)])
        wait_until(lambda: logged(sidecar, "incident_writes_recovered"))
        wait_until(lambda: [i for i in incidents() if i["span_id"] == "span_disk_room"])

        if mounted:
            # Read-only: a filesystem with files open for writing cannot be remounted so;
            # the sidecar restarts on the disk turned read-only meanwhile.
            app.goodbye()
            assert sidecar.stop() == 0
            subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
            seen = len(sidecar.logs)
            sidecar.start()
            problem = sidecar.wait_for("incident_store_unavailable", timeout=10, since=seen)
            assert problem is not None and "read-only file system" in problem["error"]
            app = WireProcess(sidecar.url, service="faults-disk", interval=60)
            app.send([start("span_disk_ro", "trace_disk_ro", "function", "ro", age=100.0)])
            wait_until(lambda: spans(sidecar, service="faults-disk", state="hung"))
            refused = httpx.get(f"{sidecar.url}/v1/incidents", timeout=10)
            assert refused.status_code == 503
            assert "read-only file system" in refused.json()["detail"]
        app.goodbye()
        assert sidecar.stop() == 0


def _churn(sidecar: SidecarProcess, round_: int, count: int) -> set[str]:
    """``count`` processes join with a run open each, then leave: most say goodbye,
    every fifth ends its run and falls silent. Every 50th has a hung call. Returns
    the span ids of the hung calls."""
    from watchdog.protocol import PROTOCOL_VERSION, Batch, Heartbeat, ProcessInfo, encode

    def batch(info: ProcessInfo, seq: int, events: list[Any], goodbye: bool = False) -> bytes:
        now = time.monotonic()
        return encode(
            Batch(
                v=PROTOCOL_VERSION,
                process=info,
                seq=seq,
                sent_at=now,
                heartbeat=Heartbeat(
                    interval=0.05, open_spans=0, dropped_events=0, wall_minus_mono=time.time() - now
                ),
                events=events,
                goodbye=goodbye,
            )
        )

    hung: set[str] = set()
    infos = [
        ProcessInfo(
            instance_id=f"churn-{round_}-{index}",
            pid=999_999,  # no such process here: never verified, never signalled
            host="elsewhere",
            create_time=1.0,
            service="faults-churn",
        )
        for index in range(count)
    ]
    with httpx.Client(headers={"content-type": "application/json"}, timeout=10) as client:
        post = f"{sidecar.url}/v1/events"
        for index, info in enumerate(infos):
            trace_id = f"trace_churn_{round_}_{index}"
            call = f"span_churn_{round_}_{index}"
            age = 100.0 if index % 50 == 0 else 0.0
            if age:
                hung.add(call)
            # A healthy call is a model call (60 s threshold: a slow machine never gets
            # near it); a hung one a tool call open for 100 s (2 s threshold).
            kind = "function" if age else "response"
            events = [
                start(trace_id, trace_id, "trace", "run", 0.5),
                start(call, trace_id, kind, "call", age, parent_id=None),
            ]
            client.post(post, content=batch(info, 1, events)).raise_for_status()
        for index, info in enumerate(infos):
            if index % 5 == 0:
                ends = [SpanEnd(f"span_churn_{round_}_{index}", time.monotonic())]
                ends.append(SpanEnd(f"trace_churn_{round_}_{index}", time.monotonic()))
                client.post(post, content=batch(info, 2, ends)).raise_for_status()
            else:
                client.post(post, content=batch(info, 2, [], goodbye=True)).raise_for_status()
    return hung


def test_thousands_of_processes_come_and_go(sidecar: SidecarProcess) -> None:
    """Processes join and leave by the thousand (on the wire: so many real app
    processes would not fit on a test machine, and the sidecar sees nothing else of
    them). Those that say goodbye are forgotten at once; those that fall silent with
    nothing open are forgotten once silent for the orphan retention; every hung call
    among them is flagged and nothing else; memory does not grow with the count."""
    sidecar_process = psutil.Process(sidecar.pid)

    def gone() -> bool:
        return not processes(sidecar, "faults-churn") and not spans(sidecar, service="faults-churn")

    injected = _churn(sidecar, 0, 500)
    after_first = sidecar_process.memory_info().rss
    injected |= _churn(sidecar, 1, 500)
    # As many processes linger after each round (the silent ones): memory is reused.
    grown = sidecar_process.memory_info().rss - after_first
    assert grown < 8 * 2**20, f"the sidecar grew by {grown / 2**20:.1f} MiB for 500 processes"
    wait_until(gone, within=15)
    flagged = {e["span_id"] for e in logged(sidecar, "span_hung", service="faults-churn")}
    assert flagged == injected
    assert len(logged(sidecar, "process_left", service="faults-churn")) == 1000
    # Identities made up are checked without scanning the socket table each time.
    assert all(
        "does not exist here" in e["detail"]
        for e in logged(sidecar, "process_identity", service="faults-churn")
    )
