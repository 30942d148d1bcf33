"""The in-app processor: hot path, batching, heartbeats, resync, fork, threads, privacy."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psutil
import pytest
from agents import Agent, custom_span, function_tool, trace

from tests.agents_app import AppRun, model
from tests.conftest import wait_until
from tests.recorder import Recorder
from watchdog._collect import SHORT_SAMPLE
from watchdog.processor import WatchdogProcessor, install
from watchdog.protocol import SpanEnd, SpanStart
from watchdog.standin import StandInServer

Watch = Callable[..., WatchdogProcessor]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as server:
        yield server


def starts(recorder: Recorder) -> list[SpanStart]:
    return [e for b in recorder.batches for e in b.events if isinstance(e, SpanStart)]


def ends(recorder: Recorder) -> list[SpanEnd]:
    return [e for b in recorder.batches for e in b.events if isinstance(e, SpanEnd)]


def sender_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "agents-watchdog-sender"]


def test_nothing_starts_before_the_first_span(recorder: Recorder) -> None:
    before = len(sender_threads())
    processor = install(url=recorder.url, service="lazy", replace_default=True)
    assert install() is processor  # idempotent
    assert len(sender_threads()) == before
    with trace("wf"):
        pass
    wait_until(lambda: len(sender_threads()) == before + 1)
    processor.shutdown()
    assert len(sender_threads()) == before


def test_heartbeat_carries_process_identity(recorder: Recorder, watch: Watch) -> None:
    processor = watch(recorder.url, service="billing")
    with trace("wf"), custom_span("open-for-a-while"):
        first = recorder.wait_for(lambda b: True)
        # An idle process keeps reporting: at least two more heartbeats arrive.
        recorder.wait_for(lambda b: b.seq >= first.seq + 2, timeout=5)
    info = first.process
    assert info.pid == os.getpid()
    assert info.create_time == psutil.Process().create_time()
    assert info.host == socket.gethostname()
    assert info.service == "billing"
    assert info.sdk_version == importlib.metadata.version("openai-agents")
    assert info.watchdog_version == importlib.metadata.version("agents-watchdog")
    assert len({b.process.instance_id for b in recorder.batches}) == 1
    assert first.heartbeat.interval == 1.0
    latest = recorder.batches[-1]
    assert latest.heartbeat.open_spans == 2
    assert latest.sent_at > first.sent_at
    processor.force_flush()
    assert recorder.batches[-1].heartbeat.open_spans == 0


def test_every_span_is_sent_at_ordinary_rates(recorder: Recorder, watch: Watch) -> None:
    processor = watch(recorder.url, max_batch=500)
    with trace("few"):
        for i in range(SHORT_SAMPLE - 1):
            with custom_span(f"s{i}"):
                pass
        processor.force_flush()
    processor.force_flush()
    assert len(starts(recorder)) == len(ends(recorder)) == SHORT_SAMPLE
    names = [s.name for s in starts(recorder)]
    assert names[0] == "few" and sorted(names[1:]) == sorted(f"s{i}" for i in range(63))
    assert recorder.batches[-1].heartbeat.summarised == 0


def test_a_flood_of_short_spans_is_sampled_and_counted(recorder: Recorder, watch: Watch) -> None:
    processor = watch(recorder.url, max_batch=500)
    with trace("bulk") as bulk:
        processor.force_flush()  # the trace is open across a send: sent as started
        for i in range(3000):
            with custom_span(f"s{i}"):
                pass
        processor.force_flush()
    processor.force_flush()
    short_starts = [s for s in starts(recorder) if s.kind == "custom"]
    short_ends = {e.span_id for e in ends(recorder)} - {bulk.trace_id}
    # Sent in full: a sample, each with its start and end; the rest counted.
    assert 0 < len(short_starts) <= 2 * SHORT_SAMPLE
    assert {s.span_id for s in short_starts} == short_ends
    summarised = recorder.batches[-1].heartbeat.summarised
    assert summarised + len(short_starts) == 3000
    # The trace they ran under is reported active, so it never looks idle.
    assert any(bulk.trace_id in b.active for b in recorder.batches)
    assert recorder.batches[-1].active == []  # reported once delivered, then forgotten
    assert all(len(b.events) <= 500 for b in recorder.batches)
    assert len(recorder.batches) <= 10
    assert [s.name for s in starts(recorder)][0] == "bulk"


def test_resync_after_failed_sends(recorder: Recorder, watch: Watch) -> None:
    processor = watch(recorder.url)
    with trace("wf") as wf:
        processor.force_flush()
        recorder.status = 503  # the sidecar errors for a while
        with custom_span("during-outage"):
            span_ids = {wf.trace_id}
            with custom_span("still-open") as still_open:
                span_ids.add(still_open.span_id)
                with custom_span("ended-in-outage"):
                    pass
                processor.force_flush(timeout=3)
                count = len(recorder.batches)
                recorder.status = 200
                resync = recorder.wait_for(lambda b: b.resync is not None, since=count)
    open_ids = {s.span_id for s in resync.resync or []}
    assert span_ids <= open_ids
    assert {s.name for s in resync.resync or []} == {"wf", "during-outage", "still-open"}


def test_a_failing_sidecar_is_not_hammered(recorder: Recorder, watch: Watch) -> None:
    """More than a full batch pending while the sidecar fails: retries stay at the
    heartbeat pace instead of spinning."""
    processor = watch(recorder.url, max_batch=100)
    with trace("wf"):
        processor.force_flush()
        recorder.status = 503
        for i in range(1000):
            with custom_span(f"s{i}"):
                pass
        processor.force_flush(timeout=2)  # one failed attempt, at once
        first = recorder.attempts
        # Two heartbeats later: at most a few more attempts, not hundreds.
        wait_until(lambda: recorder.attempts >= first + 2, within=5)
        assert recorder.attempts <= first + 3
        recorder.status = 200
        resync = recorder.wait_for(lambda b: b.resync is not None, since=1)
    assert [s.name for s in resync.resync or []] == ["wf"]
    assert all(len(b.events) <= 100 for b in recorder.batches)


def test_slow_sidecar_overflowing_the_queue_loses_no_open_span(
    recorder: Recorder, watch: Watch
) -> None:
    processor = watch(recorder.url, max_queue=50, request_timeout=30)
    with trace("wf"):
        spans = [custom_span(f"s{i}") for i in range(200)]
        for span in spans:
            span.start()
        processor.force_flush()  # announced: the app records their ends for the sender
        recorder.answering.clear()  # the sidecar stops answering: the sender waits
        waiting = recorder.waiting
        with custom_span("first"):
            wait_until(lambda: recorder.waiting > waiting)
            for span in spans[:100]:
                span.finish()
            assert processor.dropped_events > 0  # the queue overflowed
            assert processor.open_spans == 102
            count = len(recorder.batches)
            recorder.answering.set()
            resync = recorder.wait_for(lambda b: b.resync is not None, since=count)
            names = {s.name for s in resync.resync or []}
            assert names == {"wf", "first"} | {f"s{i}" for i in range(100, 200)}
            latest = recorder.wait_for(lambda b: b.heartbeat.dropped_events > 0, since=count)
            assert latest.heartbeat.dropped_events == processor.dropped_events
            for span in spans[100:]:
                span.finish()


def test_resync_when_the_sidecar_restarts_or_asks(recorder: Recorder, watch: Watch) -> None:
    processor = watch(recorder.url)
    with trace("wf"):
        first = recorder.wait_for(lambda b: True)
        # The very first batch introduces the process with its full open state.
        assert [s.name for s in first.resync or []] == ["wf"]
        recorder.sidecar_id = "a-new-sidecar"
        after_restart = recorder.wait_for(lambda b: b.resync is not None and b.seq > first.seq)
        assert [s.name for s in after_restart.resync or []] == ["wf"]
        recorder.ask_resync = True
        processor.force_flush()
        asked = recorder.wait_for(lambda b: b.resync is not None and b.seq > after_restart.seq + 1)
        assert [s.name for s in asked.resync or []] == ["wf"]


def test_hot_path_never_raises_and_survives_garbage(recorder: Recorder, watch: Watch) -> None:
    processor = watch(recorder.url)
    for junk in (None, object(), 42, "span"):
        processor.on_span_start(junk)  # type: ignore[arg-type]
        processor.on_span_end(junk)  # type: ignore[arg-type]
        processor.on_trace_start(junk)  # type: ignore[arg-type]
    with trace("after-junk"):
        pass
    processor.force_flush()
    assert [s.name for s in starts(recorder)] == ["after-junk"]


def test_queue_is_bounded_and_drops_are_reported(recorder: Recorder) -> None:
    processor = WatchdogProcessor(recorder.url, max_queue=10)
    processor._started = True  # hold the sender back so the queue fills up
    spans = [object() for _ in range(100)]
    for span in spans:
        processor.on_span_start(span)  # type: ignore[arg-type]
        processor._announced[span] = 0.0  # as the sender does once the sidecar knows it
    for span in spans:
        processor.on_span_end(span)  # type: ignore[arg-type]
    assert len(processor._queue) == 10
    assert processor.dropped_events == 90
    processor._started = False
    processor._start()
    processor.force_flush()
    assert recorder.batches[-1].heartbeat.dropped_events == 90
    processor.shutdown()


def test_shutdown_says_goodbye_and_is_final(recorder: Recorder) -> None:
    processor = WatchdogProcessor(recorder.url)
    with trace("wf"):
        processor.on_span_start(object())  # type: ignore[arg-type]
    processor.shutdown()
    processor.shutdown()  # twice is fine
    assert recorder.batches[-1].goodbye is True
    count = len(recorder.batches)
    processor.on_span_start(object())  # type: ignore[arg-type]
    processor.force_flush(timeout=0.5)
    assert len(recorder.batches) == count
    assert len(processor._queue) == 0


def test_shutdown_and_flush_are_bounded_when_sidecar_is_down() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # accepts connections but never answers
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        processor = WatchdogProcessor(url, request_timeout=30)
        with trace("wf"):
            pass
        flushed, done = threading.Event(), threading.Event()

        def flush() -> None:
            processor.force_flush(timeout=0.5)
            flushed.set()

        def stop() -> None:
            processor.shutdown(timeout=1.0)
            done.set()

        threading.Thread(target=flush).start()
        assert flushed.wait(5)
        threading.Thread(target=stop).start()
        assert done.wait(5)


def test_environment_configures_install(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTS_WATCHDOG_URL", recorder.url)
    monkeypatch.setenv("AGENTS_WATCHDOG_SERVICE", "from-env")
    monkeypatch.setenv("AGENTS_WATCHDOG_TOKEN", "tok-123")
    processor = install(replace_default=True)
    with trace("wf"):
        pass
    processor.force_flush()
    processor.shutdown()
    assert recorder.batches[0].process.service == "from-env"
    assert recorder.headers[0]["authorization"] == "Bearer tok-123"


def test_many_threads_and_event_loops(recorder: Recorder, watch: Watch) -> None:
    processor = watch(recorder.url)
    thread_ids: dict[str, int] = {}

    async def work(label: str) -> None:
        thread_ids[label] = threading.get_ident()
        with trace(label):
            for i in range(100):
                with custom_span(f"{label}-{i}"):
                    await asyncio.sleep(0)

    threads = [threading.Thread(target=asyncio.run, args=(work(f"loop{n}"),)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    processor.force_flush()
    recorded = starts(recorder)
    # Every span is either announced (a start event, or an entry of a resync) and then
    # ended, or counted as summarised.
    announced = {s.span_id: s for s in recorded}
    for batch in recorder.batches:
        announced.update((s.span_id, s) for s in batch.resync or [])
    summarised = recorder.batches[-1].heartbeat.summarised
    assert len(announced) + summarised == 8 * 101
    assert {e.span_id for e in ends(recorder)} == set(announced)
    assert len(recorded) >= SHORT_SAMPLE
    for start in announced.values():
        label = start.name.split("-")[0]
        assert start.thread_id == thread_ids[label]
        assert start.task_id is not None
    assert recorder.batches[-1].heartbeat.open_spans == 0
    assert processor.dropped_events == 0


def test_fork_child_gets_its_own_identity(recorder: Recorder, watch: Watch) -> None:
    processor = watch(recorder.url)
    with trace("parent-run"):
        parent = recorder.wait_for(lambda b: bool(b.resync) or bool(b.events))
        pid = os.fork()
        if pid == 0:  # the child: watch a run of its own, then leave without cleanup
            code = 1
            try:
                with trace("child-run"):
                    pass
                processor.force_flush(timeout=5)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    child = [b for b in recorder.batches if b.process.pid == pid]
    assert child, "the child sent nothing"
    assert {b.process.instance_id for b in child} != {parent.process.instance_id}
    child_starts = [e.name for b in child for e in b.events if isinstance(e, SpanStart)]
    child_resync = [s.name for b in child for s in b.resync or []]
    assert child_starts == ["child-run"]
    assert "parent-run" not in child_resync  # the parent's open span is not the child's
    processor.force_flush()
    assert recorder.batches[-1].process.pid == os.getpid()


SECRET_PROMPT = "SECRET-PROMPT-7f3a"
SECRET_ARG = "SECRET-ARGUMENT-91bc"
SECRET_OUTPUT = "SECRET-OUTPUT-44d2"


def test_no_prompts_outputs_or_tool_arguments_on_the_wire(
    recorder: Recorder, watch: Watch, standin: StandInServer
) -> None:
    processor = watch(recorder.url)

    @function_tool
    async def lookup(query: str) -> str:
        """Look something up."""
        return SECRET_OUTPUT + query

    def build(client: Any) -> Agent[Any]:
        return Agent(
            name="Clerk",
            instructions=SECRET_PROMPT,
            model=model(client, "tool=lookup", f"reply={SECRET_OUTPUT}"),
            tools=[lookup],
        )

    assert AppRun(standin, build, prompt=SECRET_ARG).start().wait() == SECRET_OUTPUT
    processor.force_flush()
    wire = b"".join(recorder.bodies)
    assert b"Clerk" in wire and b"lookup" in wire  # names are sent ...
    for secret in (SECRET_PROMPT, SECRET_ARG, SECRET_OUTPUT):
        assert secret.encode() not in wire  # ... contents never
    kinds = {s.kind for s in starts(recorder)}
    assert {"trace", "agent", "response", "function"} <= kinds


def test_sender_requests_stay_out_of_the_app_log(
    recorder: Recorder, watch: Watch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    processor = watch(recorder.url)
    with trace("wf"):
        pass
    processor.force_flush()
    assert recorder.batches
    assert not [r for r in caplog.records if r.name == "httpx"]


@contextlib.contextmanager
def retried_in_one_window(url: str, watch: Watch, reused: str) -> Iterator[WatchdogProcessor]:
    """A trace id chosen by the app (a request id, reused by a retry) that began and
    ended, then began again, within one wide send window; yields while the retry is open
    and everything has been sent."""
    processor = watch(url, flush_interval=2.0, heartbeat_interval=5.0)
    with trace("registers the process"):
        pass
    processor.force_flush()  # from here, one wide send window
    with trace("first try", trace_id=reused):
        pass
    with trace("retry", trace_id=reused):
        processor.force_flush()
        yield processor


def test_a_reused_id_is_sent_in_the_order_it_happened(recorder: Recorder, watch: Watch) -> None:
    """The wire says start, end, start."""
    reused = "trace_" + "42" * 16
    with retried_in_one_window(recorder.url, watch, reused):
        events = [
            (type(e).__name__, getattr(e, "name", None))
            for b in recorder.batches
            for e in b.events
            if e.span_id == reused
        ]
    assert events == [("SpanStart", "first try"), ("SpanEnd", None), ("SpanStart", "retry")]


def test_a_reused_id_is_watched_by_the_sidecar(
    sidecar_factory: Callable[..., Any], watch: Watch
) -> None:
    sidecar = sidecar_factory()
    reused = "trace_" + "43" * 16
    with retried_in_one_window(sidecar.url, watch, reused):
        listed = httpx.get(f"{sidecar.url}/v1/spans", timeout=5).json()["spans"]
        assert [(s["span_id"], s["name"]) for s in listed] == [(reused, "retry")]


class _Patched(Exception):
    """Raised by a patched library function on the sender's thread."""


def test_the_sender_survives_foreign_failures_on_its_thread(
    recorder: Recorder, watch: Watch, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Exceptions that are not the sender's own — StopIteration from a patched clock,
    a library's RuntimeError, even SystemExit — never end the watching: the thread
    recovers, counts them, logs once per streak and resyncs what is open."""
    import watchdog._sender as sender_module

    real_encode = sender_module.encode  # type: ignore[attr-defined]
    failures: list[BaseException] = [
        StopIteration(),
        RuntimeError("a library misbehaved"),
        _Patched("patched for a moment"),
        SystemExit(3),
    ]

    def flaky_encode(message: Any) -> bytes:
        if failures:
            raise failures.pop(0)
        return real_encode(message)

    monkeypatch.setattr(sender_module, "encode", flaky_encode)
    caplog.set_level("WARNING", logger="watchdog.processor")
    processor = watch(recorder.url, heartbeat_interval=0.2, flush_interval=0.05)
    with trace("wf"), custom_span("opened-during-failures"):
        resync = recorder.wait_for(lambda b: b.resync is not None)
        assert {s.name for s in resync.resync or []} == {"wf", "opened-during-failures"}
        assert not failures
        assert len(sender_threads()) == 1
        with custom_span("after-recovery"):
            processor.force_flush()
    assert "after-recovery" in {s.name for s in starts(recorder)}
    assert recorder.batches[-1].heartbeat.sender_errors == 4
    recovered = [r for r in caplog.records if "goes on watching" in r.getMessage()]
    assert len(recovered) == 1, [r.getMessage() for r in caplog.records]

    # A second streak, after a success, is logged again.
    failures.append(RuntimeError("again"))
    with custom_span("second-streak"):
        processor.force_flush()
    wait_until(lambda: recorder.batches[-1].heartbeat.sender_errors == 5)
    assert len([r for r in caplog.records if "goes on watching" in r.getMessage()]) == 2


def test_spans_whose_task_finished_leak_instead_of_hanging(
    sidecar_factory: Callable[..., Any], watch: Watch
) -> None:
    """The SDK's streamed cancellation can leave a trace and spans open whose task has
    finished and whose loop is closed: nothing can end them. They are reported leaked,
    dropped from the open set, and never flagged hung."""
    sidecar = sidecar_factory("[thresholds]\ndefault = 60\ncustom = 2\ntrace = 2\n")
    processor = watch(sidecar.url, heartbeat_interval=0.2, flush_interval=0.05)

    async def forgetful() -> None:
        run = trace("abandoned")
        run.start(mark_as_current=True)
        custom_span("never-finished").start(mark_as_current=True)
        processor.force_flush()

    asyncio.run(forgetful())  # the task is done, its loop closed; the spans stay open
    leaked = sidecar.wait_for("span_leaked", timeout=5)
    assert leaked is not None
    wait_until(lambda: httpx.get(f"{sidecar.url}/v1/spans", timeout=5).json()["spans"] == [])
    assert processor.open_spans == 0
    process = httpx.get(f"{sidecar.url}/v1/processes", timeout=5).json()["processes"][0]
    assert process["leaked_spans"] == 2
    # Past both thresholds: nothing was ever flagged.
    time_left = sidecar.wait_for("span_hung", timeout=2.5)
    assert time_left is None
    assert {e["name"] for e in sidecar.logs if e.get("event") == "span_leaked"} == {
        "abandoned",
        "never-finished",
    }


def test_a_run_going_on_in_another_task_is_not_a_leak(recorder: Recorder, watch: Watch) -> None:
    """A trace opened by a task that has finished, while spans under it go on in
    another task (a streamed run's background task), is alive, not leaked."""
    processor = watch(recorder.url, heartbeat_interval=0.2, flush_interval=0.05)

    async def main() -> str:
        run = trace("streamed")

        async def opener() -> None:
            run.start(mark_as_current=True)

        await asyncio.create_task(opener())  # done: the trace's owner is gone
        checked = asyncio.Event()

        async def worker() -> None:
            with custom_span("still-working", parent=run):
                await checked.wait()

        task = asyncio.create_task(worker())
        processor.force_flush()
        # Five heartbeats, 0.2 s apart: several leak checks while the worker runs.
        await asyncio.to_thread(recorder.wait_for, lambda b: True, 10, len(recorder.batches) + 5)
        checked.set()
        await task
        run.finish()
        return run.trace_id

    trace_id = asyncio.run(main())
    processor.force_flush()
    assert [b.leaked for b in recorder.batches if b.leaked] == []
    # Reported open all along: its end is news to the sidecar.
    assert trace_id in {e.span_id for e in ends(recorder)}


def test_a_test_patching_time_monotonic_does_not_silence_the_heartbeat(
    recorder: Recorder, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test suites patch ``time.monotonic`` for the whole process for a moment (the SDK's
    own realtime tests return a constant). The sender's clock is its own: heartbeats go
    on at their pace meanwhile and after, and no sidecar sees the process fall silent."""
    import time as time_module

    processor = watch(recorder.url, heartbeat_interval=0.2, flush_interval=0.1)
    with trace("wf"):
        processor.force_flush()

    def heartbeats_go_on(count: int) -> bool:
        # Not wait_until: it reads the patched clock. perf_counter is not patched here.
        target, deadline = len(recorder.batches) + count, time_module.perf_counter() + 3
        while len(recorder.batches) < target and time_module.perf_counter() < deadline:
            threading.Event().wait(0.05)
        return len(recorder.batches) >= target

    monkeypatch.setattr(time_module, "monotonic", lambda: 100.0)
    during = heartbeats_go_on(3)
    monkeypatch.undo()
    assert during, "no heartbeat while time.monotonic was patched"
    assert heartbeats_go_on(3), "no heartbeat after time.monotonic was restored"
