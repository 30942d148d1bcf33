"""The registry and its deadlines, driven by an injected clock (no sleeping)."""

from __future__ import annotations

from watchdog.protocol import Batch, Heartbeat, ProcessInfo, SpanEnd, SpanStart
from watchdog.sidecar.config import Rule, Thresholds
from watchdog.sidecar.registry import OpenSpan, ProcessRecord, Registry, RegistryListener

THRESHOLDS = Thresholds(
    by_kind={
        "default": 10.0,
        "response": 5.0,
        "function": 8.0,
        "agent": 20.0,
        "trace": 30.0,
        "turn": 20.0,
        "task": 20.0,
    },
    max_duration={"trace": 100.0},
    rules=(Rule(kind="function", name="slow_*", threshold=50.0),),
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder(RegistryListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, float | None]] = []

    def span_hung(self, span: OpenSpan, now: float) -> None:
        self.events.append(("hung", span.span_id, None))

    def span_resumed(self, span: OpenSpan, now: float) -> None:
        self.events.append(("resumed", span.span_id, None))

    def span_ended(self, span: OpenSpan, duration: float | None, now: float) -> None:
        self.events.append(
            ("ended" if span.state == "open" else "recovered", span.span_id, duration)
        )

    def process_left(self, process: ProcessRecord, now: float) -> None:
        self.events.append(("left", process.info.instance_id, None))


def start(
    span_id: str, kind: str, at: float, parent: str | None = None, name: str = ""
) -> SpanStart:
    return SpanStart(span_id, "t1", parent, kind, name, at, 1, None)


def trace_start(at: float) -> SpanStart:
    return SpanStart("t1", "t1", None, "trace", "wf", at, 1, None)


class Harness:
    """A registry plus one app process whose monotonic clock equals the sidecar's."""

    def __init__(self, thresholds: Thresholds = THRESHOLDS) -> None:
        self.clock = Clock()
        self.recorder = Recorder()
        self.registry = Registry(thresholds, self.recorder, self.clock)
        self.seq = 0

    def send(
        self,
        *events: SpanStart | SpanEnd,
        resync: list[SpanStart] | None = None,
        goodbye: bool = False,
        instance: str = "p1",
        active: list[str] | None = None,
        summarised: int = 0,
    ) -> bool:
        self.seq += 1
        batch = Batch(
            v=1,
            process=ProcessInfo(instance, 42, "host", 1.0, "svc"),
            seq=self.seq,
            sent_at=self.clock.now,
            heartbeat=Heartbeat(1.0, 0, 0, 0.0, summarised=summarised),
            events=list(events),
            resync=resync,
            goodbye=goodbye,
            active=active or [],
        )
        return self.registry.apply(batch)

    def advance(self, seconds: float) -> list[str]:
        self.clock.now += seconds
        return [span.span_id for span in self.registry.expire()]

    def state(self, span_id: str, instance: str = "p1") -> str | None:
        span = self.registry.processes[instance].spans.get(span_id)
        return None if span is None else span.state


def test_leaf_is_flagged_exactly_at_its_threshold() -> None:
    h = Harness()
    now = h.clock.now
    h.send(trace_start(now), start("a", "agent", now), start("r", "response", now, "a"))
    assert h.registry.next_deadline() == now + 5.0
    assert h.advance(4.999) == []
    assert h.advance(0.001) == ["r"]
    assert h.state("r") == "hung"
    # The agent and trace wait on the hung response: they are not flagged as well.
    assert h.advance(60) == []
    assert h.state("a") == "open"


def test_span_ending_in_time_is_never_flagged() -> None:
    h = Harness()
    now = h.clock.now
    h.send(start("r", "response", now))
    h.advance(4.0)
    h.send(SpanEnd("r", now + 4.0))
    assert h.advance(100) == []
    assert ("ended", "r", 4.0) in h.recorder.events


def test_recovered_span_reports_total_duration() -> None:
    h = Harness()
    now = h.clock.now
    h.send(start("r", "response", now))
    assert h.advance(6) == ["r"]
    h.send(SpanEnd("r", now + 7.5))
    assert h.recorder.events[-1] == ("recovered", "r", 7.5)
    assert h.registry.processes["p1"].hung == {"response": 0}


def test_container_is_not_idle_while_its_subtree_is_active() -> None:
    h = Harness()
    t = h.clock.now
    h.send(start("a", "agent", t))
    # 100 s of short tool calls: the agent (idle threshold 20 s) stays quiet.
    for i in range(50):
        h.send(start(f"f{i}", "function", t + 2 * i, "a"))
        h.advance(2)
        h.send(SpanEnd(f"f{i}", t + 2 * i + 2))
    assert h.recorder.events.count(("hung", "a", None)) == 0
    # Then nothing happens: flagged 20 s after the last activity.
    assert h.advance(19.9) == []
    assert h.advance(0.2) == ["a"]
    assert h.registry.processes["p1"].spans["a"].reason == "idle too long"


def test_idle_container_resumes_on_new_activity() -> None:
    h = Harness()
    t = h.clock.now
    h.send(start("a", "agent", t))
    assert h.advance(21) == ["a"]
    h.send(start("f", "function", h.clock.now, "a"))
    assert h.state("a") == "open"
    assert ("resumed", "a", None) in h.recorder.events
    h.send(SpanEnd("f", h.clock.now + 1))
    assert h.advance(1 + 20.5) == ["a"]


def test_leaf_with_open_children_defers_to_them() -> None:
    """A function tool running a sub-agent: the sub-agent's stuck response is reported,
    not the function around it."""
    h = Harness()
    t = h.clock.now
    h.send(
        start("f", "function", t), start("sub", "agent", t, "f"), start("r", "response", t, "sub")
    )
    assert h.advance(6) == ["r"]
    assert h.advance(100) == []
    h.send(SpanEnd("r", h.clock.now), SpanEnd("sub", h.clock.now))
    # With its children gone, the function is judged on its own (long past 8 s) once
    # its own end had the app's next batch to come in: ends cascade up a run.
    assert h.advance(0.5) == []
    assert h.advance(0.5) == ["f"]


def test_a_parent_whose_end_follows_its_childrens_in_the_next_batch_is_not_flagged() -> None:
    """A cancelled sub-agent: the response's and the agent's ends come in one batch, the
    function's (long past its threshold) in the next. No alarm in between."""
    h = Harness()
    t = h.clock.now
    h.send(
        start("f", "function", t), start("sub", "agent", t, "f"), start("r", "response", t, "sub")
    )
    assert h.advance(6) == ["r"]
    h.advance(10)
    h.send(SpanEnd("r", h.clock.now), SpanEnd("sub", h.clock.now))
    assert h.advance(0.25) == []
    h.send(SpanEnd("f", h.clock.now))
    assert h.advance(5) == []


def test_max_duration_is_a_whole_run_deadline() -> None:
    h = Harness()
    t = h.clock.now
    h.send(trace_start(t))
    for i in range(20):
        h.send(start(f"r{i}", "response", h.clock.now, "t1"))
        h.advance(4.9)
        h.send(SpanEnd(f"r{i}", h.clock.now))
    assert round(h.clock.now - t, 6) == 98.0
    assert h.advance(2.1) == ["t1"]
    assert h.registry.processes["p1"].spans["t1"].reason == "over max duration"


def test_rules_first_match_wins() -> None:
    thresholds = Thresholds(
        by_kind={"default": 10.0, "function": 8.0},
        rules=(
            Rule(kind="function", name="slow_*", threshold=50.0),
            Rule(kind=None, name="slow_report", threshold=1.0, action="cancel"),
        ),
    )
    assert thresholds.resolve("function", "slow_report")[:4] == (50.0, "alert", None, "warning")
    assert thresholds.resolve("custom", "slow_report")[:4] == (1.0, "cancel", None, "warning")
    assert thresholds.resolve("function", "fast")[:4] == (8.0, "alert", None, "warning")
    assert thresholds.resolve("speech", "x")[:4] == (10.0, "alert", None, "warning")


def test_resync_makes_open_set_exact() -> None:
    h = Harness()
    t = h.clock.now
    h.send(
        start("a", "agent", t), start("gone", "function", t, "a"), start("kept", "response", t, "a")
    )
    h.advance(1)
    # The processor reconnects after an outage: "gone" ended meanwhile, "new" started.
    h.send(
        resync=[
            start("a", "agent", t),
            start("kept", "response", t, "a"),
            start("new", "function", t + 0.5, "a"),
        ]
    )
    assert set(h.registry.processes["p1"].spans) == {"a", "kept", "new"}
    assert ("ended", "gone", None) in h.recorder.events
    assert h.registry.processes["p1"].spans["a"].open_children == 2
    assert h.advance(4.1) == ["kept"]  # original start time kept: 5 s after t


def test_unknown_process_without_resync_is_asked_for_one() -> None:
    h = Harness()
    assert h.send(start("r", "response", h.clock.now)) is True
    assert h.send(start("r2", "response", h.clock.now)) is False
    assert h.send(resync=[], instance="p2") is False


def test_duplicate_start_end_without_start_and_parent_cycle_are_harmless() -> None:
    h = Harness()
    t = h.clock.now
    h.send(start("x", "agent", t, parent="y"), start("y", "agent", t, parent="x"))
    h.send(start("x", "agent", t + 1, parent="y"))
    h.send(SpanEnd("nobody", t))
    h.send(start("z", "function", t, parent="x"))
    assert h.registry.open_count == 3
    assert h.registry.processes["p1"].spans["x"].started == t


def test_goodbye_forgets_the_process() -> None:
    h = Harness()
    h.send(start("r", "response", h.clock.now))
    h.send(goodbye=True)
    assert h.registry.processes == {}
    assert h.registry.open_count == 0
    assert h.registry.next_deadline() is None


def test_clock_offset_maps_app_time_onto_sidecar_time() -> None:
    h = Harness()
    app_clock = 5.0  # the app's monotonic clock started much later than the sidecar's
    batch = Batch(
        v=1,
        process=ProcessInfo("p1", 1, "h", 1.0, "svc"),
        seq=1,
        sent_at=app_clock + 3,
        heartbeat=Heartbeat(1.0, 1, 0, 1.7e9),
        events=[start("r", "response", app_clock)],
    )
    h.registry.apply(batch)
    span = h.registry.processes["p1"].spans["r"]
    assert span.started == h.clock.now - 3  # opened 3 s before the batch left
    assert h.advance(1.999) == []
    assert h.advance(0.002) == ["r"]


def test_stale_heap_entries_stay_bounded() -> None:
    h = Harness()
    for i in range(20_000):
        h.send(start(f"s{i}", "response", h.clock.now))
        h.send(SpanEnd(f"s{i}", h.clock.now))
    assert h.registry.open_count == 0
    assert len(h.registry._heap) <= 1024 + 1


def test_summarised_short_spans_count_as_activity_and_are_counted() -> None:
    h = Harness()
    now = h.clock.now
    h.send(trace_start(now), start("a", "agent", now))
    assert h.advance(15) == []
    # Short spans ran under the agent and were summarised: it is not idle.
    h.send(active=["a", "never-seen"], summarised=40)
    assert h.advance(15) == []
    assert h.advance(5) == ["a"]  # 20 s after that activity
    h.send(active=["a"], summarised=100)
    assert h.state("a") == "open"  # activity resumed: the idle flag is lifted
    assert h.registry.summarised == {"svc": 100}
    h.send(summarised=100)  # a repeated running count adds nothing
    assert h.registry.summarised == {"svc": 100}


class Liveness:
    """The answer the registry gets about its process: True, False or None (unknown)."""

    def __init__(self) -> None:
        self.answer: bool | None = True
        self.asked = 0

    def __call__(self, process: ProcessRecord) -> bool | None:
        self.asked += 1
        return self.answer


def liveness_harness() -> tuple[Harness, Liveness]:
    h = Harness()
    liveness = Liveness()
    h.registry.liveness = liveness
    return h, liveness


def test_a_span_of_a_dead_process_is_orphaned_never_hung() -> None:
    h, liveness = liveness_harness()
    now = h.clock.now
    h.send(trace_start(now), start("r", "response", now))
    liveness.answer = False  # the pid is gone (kill -9) before the threshold passes
    assert h.advance(6) == []
    assert ("hung", "r", None) not in h.recorder.events
    process = h.registry.processes["p1"]
    assert process.status == "dead"
    assert {s.span_id: s.state for s in process.orphans} == {"t1": "orphaned", "r": "orphaned"}


def test_an_unprovable_process_is_flagged_only_once_it_speaks_after_the_deadline() -> None:
    """Where the pid cannot be checked (another host, an unproven pid), a batch that
    arrives after the deadline is what proves the process alive."""
    h, liveness = liveness_harness()
    liveness.answer = None
    now = h.clock.now
    h.send(start("r", "response", now), start("q", "response", now))
    assert h.advance(6) == []  # silent since the start: held, not flagged
    assert h.state("r") == "open"
    h.send(SpanEnd("q", now + 6.5))  # it speaks: alive
    assert h.advance(0) == ["r"]
    assert h.state("r") == "hung"
    assert ("hung", "q", None) not in h.recorder.events
    assert h.registry.processes["p1"].held == {}


def test_liveness_is_asked_once_per_process_per_pass() -> None:
    h, liveness = liveness_harness()
    now = h.clock.now
    h.send(*(start(f"r{i}", "response", now) for i in range(50)))
    assert len(h.advance(6)) == 50
    assert liveness.asked == 1
