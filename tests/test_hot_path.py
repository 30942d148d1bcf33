"""The processor's bulk design: the app records state, the sender works from it.

What the hot path records (the running task, found the cheap way, on every supported
Python), what the sender does per span that came and went (nothing but a sample),
the ends of spans caught in the middle of being announced, ends whose record was lost,
the activity of containers whose children churn, and that the app side loads no
second HTTP stack.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from agents import custom_span, trace

import watchdog._collect as collect_module
import watchdog._sender as sender_transport
from tests.recorder import Recorder
from watchdog._collect import SHORT_SAMPLE
from watchdog._transport import Transport
from watchdog.processor import WatchdogProcessor
from watchdog.protocol import SpanEnd, SpanStart

Watch = Callable[..., WatchdogProcessor]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as server:
        yield server


def events(recorder: Recorder, span_id: str) -> list[SpanStart | SpanEnd]:
    return [e for b in recorder.batches for e in b.events if e.span_id == span_id]


# -- the running task -------------------------------------------------------------------


def test_the_running_task_is_found_as_asyncio_knows_it(recorder: Recorder, watch: Watch) -> None:
    """In a task, after a suspension, in an eagerly started task (3.12+), in a loop
    callback, in a worker thread of the loop, in a second loop run on the same thread
    after the first ended, on another thread, and outside any loop: the task the hot
    path records is ``asyncio.current_task()`` (None where there is no task)."""
    processor = watch(recorder.url)
    seen: list[tuple[str, object, object]] = []

    def look(where: str) -> None:
        marker = object()
        processor.on_span_start(marker)  # type: ignore[arg-type]
        recorded = processor._open.pop(marker)[2]
        try:
            expected = asyncio.current_task()
        except RuntimeError:
            expected = None
        seen.append((where, recorded, expected))

    async def child() -> None:
        look("child task")
        await asyncio.sleep(0)
        look("child task after a suspension")

    async def main() -> None:
        look("main task")
        await asyncio.gather(child(), child())
        loop = asyncio.get_running_loop()
        called = asyncio.Event()

        def callback() -> None:
            look("loop callback")
            called.set()

        loop.call_soon(callback)
        await called.wait()
        await asyncio.to_thread(look, "worker thread")
        if sys.version_info >= (3, 12):
            loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
            await asyncio.create_task(child())
            loop.set_task_factory(None)

    asyncio.run(main())
    look("no loop, after one ran here")
    asyncio.run(main())  # a new loop on the same thread
    other = threading.Thread(target=asyncio.run, args=(main(),))
    other.start()
    other.join(10)
    look("no loop")
    assert len(seen) >= 20
    for where, found, expected in seen:
        assert found is expected, where
    tasks = [found for where, found, _ in seen if "task" in where]
    assert tasks and all(task is not None for task in tasks)
    assert len({id(task) for where, task, _ in seen if where == "main task"}) == 3
    assert all(found is None for where, found, _ in seen if "loop" in where)


# -- what the sender does per short span --------------------------------------------------


def test_the_sender_describes_a_sample_not_every_short_span(
    recorder: Recorder, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20,000 spans that come and go between two collections cost the sender the
    description of at most ``SHORT_SAMPLE`` of them per collection: its work follows
    the spans that stay open, not the ones that churn."""
    described: list[Any] = []
    real = collect_module.describe_start  # type: ignore[attr-defined]

    def counting(obj: Any, info: Any) -> SpanStart:
        described.append(obj)
        return real(obj, info)

    monkeypatch.setattr(collect_module, "describe_start", counting)
    processor = watch(recorder.url, flush_interval=5.0, heartbeat_interval=5.0)
    with trace("churn"):
        processor.force_flush()
        before = len(described)
        for _ in range(20_000):
            with custom_span("tiny"):
                pass
        processor.force_flush()
        collections = recorder.batches[-1].seq - recorder.batches[0].seq + 2
        assert len(described) - before <= SHORT_SAMPLE * collections + 2
    processor.force_flush()
    summarised = recorder.batches[-1].heartbeat.summarised
    sent = [e for b in recorder.batches for e in b.events if isinstance(e, SpanStart)]
    assert summarised + len([s for s in sent if s.kind == "custom"]) == 20_000


def test_a_container_whose_children_churn_is_reported_active_each_collection(
    recorder: Recorder, watch: Watch
) -> None:
    """Far more children than the sample keeps, in every interval: the span they run
    under is reported active in each batch that follows them."""
    processor = watch(recorder.url, flush_interval=5.0, heartbeat_interval=5.0)
    with trace("run"), custom_span("agent-like") as container:
        processor.force_flush()  # the container is announced
        for _ in range(3):
            since = len(recorder.batches)
            for _ in range(5 * SHORT_SAMPLE):
                with custom_span("child"):
                    pass
            processor.force_flush()
            assert any(container.span_id in b.active for b in recorder.batches[since:])


def test_past_the_cap_every_announced_span_counts_as_active(
    recorder: Recorder, watch: Watch
) -> None:
    """More parents in one interval than the cap: none is lost — every announced span
    is reported active for that interval (judged later, never flagged wrongly)."""
    processor = watch(recorder.url, flush_interval=5.0, heartbeat_interval=5.0)
    with trace("run") as run, custom_span("quiet") as quiet:
        processor.force_flush()
        processor._max_active = 3
        for index in range(10):  # ten distinct parents, each with a short child
            with custom_span(f"parent-{index}") as parent, custom_span("child", parent=parent):
                pass
        since = len(recorder.batches)
        processor.force_flush()
        active = {key for b in recorder.batches[since:] for key in b.active}
    assert {run.trace_id, quiet.span_id} <= active


# -- ends in the middle of an announcement, ends whose record was lost -------------------


class _EndsWhileCopied(dict[Any, Any]):
    """The app's open-span record, ending one span right after the sender copies it:
    the span is in the copy, but the app saw it as not yet announced."""

    def __init__(self, processor: WatchdogProcessor, victim: list[Any]) -> None:
        super().__init__()
        self._processor = processor
        self._victim = victim

    def copy(self) -> dict[Any, Any]:
        copied = dict(self)
        if self._victim and self._victim[0] in copied:
            self._victim.pop().finish()
        return copied


def test_a_span_ending_while_it_is_announced_is_sent_with_its_end(
    recorder: Recorder, watch: Watch
) -> None:
    processor = watch(recorder.url, flush_interval=5.0, heartbeat_interval=5.0)
    victim: list[Any] = []
    with trace("run"):
        processor.force_flush()
        record = _EndsWhileCopied(processor, victim)
        record.update(processor._open)
        processor._open = record
        span = custom_span("caught")
        span.start()
        victim.append(span)
        processor.force_flush()
        processor.force_flush()
        assert not victim  # it did end right after the copy
    processor.force_flush()
    sent = events(recorder, span.span_id)
    assert [type(e).__name__ for e in sent] == ["SpanStart", "SpanEnd"]
    assert not processor._announced
    assert span.span_id not in {s.span_id for b in recorder.batches[-1:] for s in b.resync or ()}


def test_an_end_whose_record_was_lost_is_sent_and_resynced(
    recorder: Recorder, watch: Watch
) -> None:
    """The queue of ends was full: the span still ends at the sidecar (at the time it
    was first seen gone), the drop is counted, and a resync follows."""
    processor = watch(recorder.url, max_queue=1, flush_interval=5.0, heartbeat_interval=5.0)
    with trace("run"):
        first, second = custom_span("first"), custom_span("second")
        first.start()
        second.start()
        processor.force_flush()  # both announced
        first.finish()
        second.finish()  # the queue holds one end: this one is dropped
        assert processor.dropped_events == 1
        processor.force_flush()
        processor.force_flush()
    processor.force_flush()
    for span in (first, second):
        assert [type(e).__name__ for e in events(recorder, span.span_id)] == [
            "SpanStart",
            "SpanEnd",
        ]
    assert any(b.resync is not None for b in recorder.batches[1:])
    assert recorder.batches[-1].heartbeat.dropped_events == 1
    assert not processor._announced


def test_ids_and_records_of_ended_spans_are_not_kept(recorder: Recorder, watch: Watch) -> None:
    """Bounded memory: once the app is quiet, the sender keeps nothing of spans that
    ended — announced or short."""
    processor = watch(recorder.url)
    for index in range(50):
        with trace("run"), custom_span("a"):
            if index % 10 == 0:
                processor.force_flush(timeout=2)  # these two are announced, then end
    processor.force_flush()
    sender = processor._sender
    assert sender is not None
    assert not processor._open and not processor._announced and not processor._queue
    assert not sender.collector._ids and not sender.collector._unended and not sender._pending
    assert len(processor._short) == 0


# -- the app carries one HTTP stack -----------------------------------------------------


def test_the_app_side_loads_no_second_http_stack() -> None:
    code = (
        "import sys, agents\n"
        # The SDK's own exporter and its HTTP stack, as an app's first run builds them.
        "agents.tracing.get_trace_provider()\n"
        "before = set(sys.modules)\n"
        "from watchdog.processor import install\n"
        "install(url='http://127.0.0.1:9')\n"
        "added = set(sys.modules) - before\n"
        "import json; print(json.dumps(sorted(added)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    added = set(json.loads(out.strip().splitlines()[-1]))
    assert not {m for m in added if m.split(".")[0] in {"httpx", "httpcore", "h11", "psutil"}}
    assert not {m for m in added if m.startswith("watchdog.sidecar")}


class _Closing(http.server.BaseHTTPRequestHandler):
    """Answers each request, then closes the connection without saying so."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_transport_reconnects_when_a_kept_connection_was_closed() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Closing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        transport = Transport(f"http://127.0.0.1:{server.server_address[1]}", token="t")
        for _ in range(3):  # every second call finds its kept connection closed
            assert transport.post("/v1/events", b"{}", timeout=5) == (200, b"{}")
        transport.close()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:notaport", "port that is not a number"),
        ("http://127.0.0.1:99999", "port that is not a number"),
        ("http://:9750", "names no host"),
        ("ftp://127.0.0.1", "must start with"),
    ],
)
def test_a_malformed_url_is_refused_at_construction(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        WatchdogProcessor(url)


def test_a_transport_that_cannot_be_built_does_not_end_the_watching(
    recorder: Recorder, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure building the connection (a library patched for a moment, say) is one
    recovered failure of the sender, never the end of its thread."""
    real = sender_transport.Transport  # type: ignore[attr-defined]
    failures = [RuntimeError("patched for a moment")]

    def flaky(url: str, token: str | None) -> Any:
        if failures:
            raise failures.pop()
        return real(url, token)

    monkeypatch.setattr(sender_transport, "Transport", flaky)
    processor = watch(recorder.url, heartbeat_interval=0.2, flush_interval=0.05)
    with trace("after-a-failed-start"):
        processor.force_flush()
    assert not failures
    assert "after-a-failed-start" in {
        e.name for b in recorder.batches for e in b.events if isinstance(e, SpanStart)
    } | {s.name for b in recorder.batches for s in b.resync or ()}
    assert recorder.batches[-1].heartbeat.sender_errors == 1
