"""Wire format: compact, round-trips, strict."""

from __future__ import annotations

import json

import pytest

from watchdog.protocol import (
    PROTOCOL_VERSION,
    Batch,
    Heartbeat,
    ProcessInfo,
    Reply,
    SpanEnd,
    SpanStart,
    UnsupportedVersion,
    decode_batch,
    decode_reply,
    encode,
)


def sample() -> Batch:
    return Batch(
        v=PROTOCOL_VERSION,
        process=ProcessInfo("abc", 10, "host", 1.5, "svc", "0.24.0", "0.1.0"),
        seq=3,
        sent_at=12.5,
        heartbeat=Heartbeat(1.0, 1, 0, 1.7e9),
        events=[
            SpanStart("span_1", "trace_1", None, "agent", "Planner", 11.0, 7, 99),
            SpanEnd("span_1", 12.0, True),
        ],
        resync=[SpanStart("trace_1", "trace_1", None, "trace", "wf", 10.0, 7)],
    )


def test_round_trip_and_compact_events() -> None:
    batch = sample()
    body = encode(batch)
    assert decode_batch(body) == batch
    raw = json.loads(body)
    assert raw["events"][0] == ["s", "span_1", "trace_1", None, "agent", "Planner", 11.0, 7, 99]
    assert raw["events"][1] == ["e", "span_1", 12.0, True]


def test_reply_round_trip_and_version_check() -> None:
    reply = Reply(v=PROTOCOL_VERSION, sidecar_id="x", resync=True)
    assert decode_reply(encode(reply)) == reply
    body = encode(sample()).replace(b'"v":1', b'"v":7')
    with pytest.raises(UnsupportedVersion, match="unsupported protocol version 7"):
        decode_batch(body)


def test_long_names_are_rejected_not_truncated_by_the_sidecar() -> None:
    body = encode(sample()).replace(b'"Planner"', b'"' + b"P" * 300 + b'"')
    with pytest.raises(ValueError, match=r"\$\.events\[0\]"):
        decode_batch(body)
