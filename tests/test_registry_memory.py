"""What the registry keeps per open span: no garbage-collector tracking, one copy of
shared values, no heap entry it does not need, and nothing left once a process goes."""

from __future__ import annotations

import gc

from watchdog.protocol import Batch, Heartbeat, ProcessInfo, SpanEnd, SpanStart
from watchdog.sidecar.config import Thresholds
from watchdog.sidecar.registry import ProcessRecord, Registry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def batch(instance: str, *events: SpanStart | SpanEnd, at: float = 1000.0) -> Batch:
    return Batch(
        v=1,
        process=ProcessInfo(instance, 42, "host", 1.0, "svc"),
        seq=1,
        sent_at=at,
        heartbeat=Heartbeat(1.0, 0, 0, 0.0),
        events=list(events),
    )


def run(trace: str, at: float) -> list[SpanStart | SpanEnd]:
    """A trace, an agent and a turn left open, with a model call and a tool call that
    both started and ended."""
    agent, turn = f"{trace}-a", f"{trace}-t"
    # Fresh string objects, as decoding gives: equal text, different objects.
    return [
        SpanStart(trace, trace, None, "trace", "wf", at, 140_000_000_001, 140_000_000_777),
        SpanStart(agent, "".join(trace), None, "agent", "Analyst", at, 140_000_000_001, None),
        SpanStart(turn, "".join(trace), "".join(agent), "turn", "".join("Analyst"), at, 1, None),
        SpanStart(f"{trace}-r", trace, turn, "response", "", at, 1, None),
        SpanEnd(f"{trace}-r", at + 0.1),
        SpanStart(f"{trace}-f", trace, turn, "function", "fetch", at, 1, None),
        SpanEnd(f"{trace}-f", at + 0.2),
    ]


def test_open_spans_are_not_tracked_by_the_garbage_collector() -> None:
    registry = Registry(Thresholds(), clock=Clock())
    registry.apply(batch("p1", *run("t1", 1000.0)))
    spans = list(registry.spans())
    assert [span.kind for span in spans] == ["trace", "agent", "turn"]
    assert not any(gc.is_tracked(span) for span in spans)


def test_shared_values_are_kept_once() -> None:
    registry = Registry(Thresholds(), clock=Clock())
    registry.apply(batch("p1", *run("t1", 1000.0), *run("t2", 1000.0)))
    spans = registry.processes["p1"].spans
    trace, agent, turn = spans["t1"], spans["t1-a"], spans["t1-t"]
    assert agent.trace_id is trace.span_id and turn.trace_id is trace.span_id
    assert turn.parent_key is agent.span_id
    assert agent.parent_key is trace.span_id
    assert agent.thread_id is trace.thread_id
    assert turn.name is spans["t2-t"].name and turn.kind is spans["t2-t"].kind


def test_spans_that_ended_and_containers_waiting_on_children_take_no_heap_entry() -> None:
    clock = Clock()
    registry = Registry(Thresholds(by_kind={"default": 5.0, "turn": 9.0}), clock=clock)
    registry.apply(batch("p1", *run("t1", 1000.0)))
    # Only the turn waits on nothing now: its idle deadline is the one entry.
    assert len(registry._heap) == 1
    clock.now = 1000.2 + 9.0
    assert [span.span_id for span in registry.expire()] == ["t1-t"]


def test_a_process_that_goes_leaves_nothing_behind() -> None:
    registry = Registry(Thresholds(), clock=Clock())

    def records() -> int:
        gc.collect()
        return sum(1 for obj in gc.get_objects() if isinstance(obj, ProcessRecord))

    before = records()
    registry.apply(batch("gone", *run("t1", 1000.0)))
    registry.apply(batch("dead", *run("t2", 1000.0)))
    registry.mark_dead(registry.processes["dead"], 1001.0)
    assert len(registry.processes["dead"].orphans) == 3
    assert records() == before + 2
    registry.forget("gone")
    registry.forget("dead")
    assert registry.open_count == 0
    assert registry.next_deadline() is None  # drops the heap's entries for them
    assert records() == before


def test_a_registry_dropped_with_spans_open_frees_them() -> None:
    def records() -> int:
        gc.collect()
        return sum(1 for obj in gc.get_objects() if isinstance(obj, ProcessRecord))

    before = records()
    registry = Registry(Thresholds(), clock=Clock())
    registry.apply(batch("p1", *run("t1", 1000.0)))
    assert records() == before + 1
    del registry
    assert records() == before
