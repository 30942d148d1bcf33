"""Hostile and broken requests get a clear 4xx, are counted, and lose nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import metric
from tests.launcher import SidecarProcess
from watchdog.protocol import PROTOCOL_VERSION

TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}


def batch(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "process": {
            "instance_id": "p1",
            "pid": 4242,
            "host": "h",
            "create_time": 1.0,
            "service": "svc",
        },
        "seq": 1,
        "sent_at": 100.0,
        "heartbeat": {
            "interval": 1.0,
            "open_spans": 1,
            "dropped_events": 0,
            "wall_minus_mono": 1.7e9,
        },
        "events": [["s", "span_1", "trace_1", None, "response", "", 99.0, 1, None]],
        "resync": None,
    }
    body.update(changes)
    return body


def encoded(**changes: Any) -> bytes:
    return json.dumps(batch(**changes)).encode()


# (case id, request kwargs, status, reason, words the detail must contain)
CASES: list[tuple[str, dict[str, Any], int, str, str]] = [
    ("malformed JSON", {"content": b'{"v": 1, "seq": '}, 400, "malformed_json", "malformed JSON"),
    ("not JSON at all", {"content": b"\x00\xff garbage"}, 400, "malformed_json", "malformed"),
    (
        "deeply nested",
        {"content": b'{"v": 1, "events": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"},
        422,
        "invalid_batch",
        "nested too deeply",
    ),
    ("top-level array", {"content": b"[" * 60_000}, 422, "invalid_batch", "Expected `object`"),
    ("wrong type", {"content": encoded(seq="one")}, 422, "invalid_batch", "$.seq"),
    ("missing field", {"content": json.dumps({"v": 1}).encode()}, 422, "invalid_batch", "process"),
    ("unknown field", {"content": encoded(extra=1)}, 422, "invalid_batch", "extra"),
    (
        "huge number",
        {"content": encoded().replace(b'"sent_at": 100.0', b'"sent_at": 1e400')},
        422,
        "invalid_batch",
        "$.sent_at",
    ),
    (
        "NaN",
        {"content": encoded().replace(b'"sent_at": 100.0', b'"sent_at": NaN')},
        400,
        "malformed_json",
        "malformed",
    ),
    ("negative time", {"content": encoded(sent_at=-5)}, 422, "invalid_batch", "$.sent_at"),
    (
        "unknown event tag",
        {"content": encoded(events=[["x", "span_1"]])},
        422,
        "invalid_batch",
        "$.events[0]",
    ),
    (
        "huge string",
        {"content": encoded(events=[["s", "s" * 5000, "t", None, "custom", "", 1.0, 1, None]])},
        422,
        "invalid_batch",
        "length",
    ),
    (
        "newer version",
        {"content": encoded(v=PROTOCOL_VERSION + 1)},
        400,
        "unsupported_version",
        f"version {PROTOCOL_VERSION + 1}",
    ),
    (
        "newer version, new shape",
        {"content": json.dumps({"v": 99, "frames": []}).encode()},
        400,
        "unsupported_version",
        "version 99",
    ),
    ("oversized (declared)", {"content": b"x" * 70_000}, 413, "too_large", "limit of 65536"),
    (
        "wrong content type",
        {"content": encoded(), "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
        "application/json",
    ),
    (
        "no token",
        {"content": encoded(), "headers": {"authorization": ""}},
        401,
        "unauthorized",
        "missing bearer token",
    ),
    (
        "wrong token",
        {"content": encoded(), "headers": {"authorization": "Bearer nope"}},
        401,
        "unauthorized",
        "wrong bearer token",
    ),
    (
        "wrong scheme",
        {"content": encoded(), "headers": {"authorization": f"Basic {TOKEN}"}},
        401,
        "unauthorized",
        "missing bearer token",
    ),
]


@pytest.fixture(scope="module")
def sidecar() -> Iterator[SidecarProcess]:
    with SidecarProcess(
        "[server]\nmax_body_bytes = 65536\n[thresholds]\nresponse = 300\n",
        env={"AGENTS_WATCHDOG_TOKEN": TOKEN},
    ) as process:
        response = httpx.post(f"{process.url}/v1/events", content=encoded(), headers=AUTH)
        assert response.status_code == 200, response.text
        yield process


def post(
    sidecar: SidecarProcess, content: bytes | Iterator[bytes], headers: dict[str, str] | None = None
) -> httpx.Response:
    merged = {**AUTH, **(headers or {})}
    merged = {k: v for k, v in merged.items() if v}
    return httpx.post(f"{sidecar.url}/v1/events", content=content, headers=merged, timeout=10)


def rejected(sidecar: SidecarProcess, reason: str) -> float:
    return metric(sidecar, "agents_watchdog_events_rejected_total", reason=reason) or 0.0


def authorized_spans(sidecar: SidecarProcess) -> list[dict[str, Any]]:
    response = httpx.get(f"{sidecar.url}/v1/spans", headers=AUTH, timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["spans"]
    return result


@pytest.mark.parametrize(
    ("request_kwargs", "status", "reason", "detail"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_request_is_refused_clearly_and_loses_nothing(
    sidecar: SidecarProcess, request_kwargs: dict[str, Any], status: int, reason: str, detail: str
) -> None:
    before = rejected(sidecar, reason)
    response = post(sidecar, **request_kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == reason
    assert detail in body["detail"]
    assert rejected(sidecar, reason) == before + 1
    assert httpx.get(f"{sidecar.url}/healthz").status_code == 200
    assert [s["span_id"] for s in authorized_spans(sidecar)] == ["span_1"]


def test_oversized_body_without_length_is_cut_off(sidecar: SidecarProcess) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 4096

    before = rejected(sidecar, "too_large")
    response = post(sidecar, chunks())
    assert response.status_code == 413
    assert "limit of 65536" in response.json()["detail"]
    assert rejected(sidecar, "too_large") == before + 1
    assert len(authorized_spans(sidecar)) == 1


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("state=stuck", "state must be one of"),
        ("kind=spam", "kind must be one of"),
        ("limit=-1", "limit must be"),
        ("colour=red", "unknown query parameter(s) colour"),
    ],
)
def test_bad_span_queries_are_refused(sidecar: SidecarProcess, query: str, words: str) -> None:
    response = httpx.get(f"{sidecar.url}/v1/spans?{query}", headers=AUTH)
    assert response.status_code == 400
    assert words in response.json()["detail"]


def test_reading_spans_needs_the_token_too(sidecar: SidecarProcess) -> None:
    assert httpx.get(f"{sidecar.url}/v1/spans").status_code == 401


def test_wrong_method_and_path(sidecar: SidecarProcess) -> None:
    assert httpx.get(f"{sidecar.url}/v1/events", headers=AUTH).status_code == 405
    assert httpx.get(f"{sidecar.url}/v1/nothing", headers=AUTH).status_code == 404


def test_rejections_are_logged_once_per_reason(sidecar: SidecarProcess) -> None:
    for _ in range(3):
        post(sidecar, b"{", headers={})
    lines = [
        e
        for e in sidecar.logs
        if e.get("event") == "request_rejected" and e.get("reason") == "malformed_json"
    ]
    assert len(lines) == 1
    assert TOKEN not in json.dumps(sidecar.logs)


def test_span_listing_filters(sidecar: SidecarProcess) -> None:
    assert authorized_spans(sidecar)[0]["kind"] == "response"
    listing = httpx.get(f"{sidecar.url}/v1/spans?kind=agent", headers=AUTH).json()["spans"]
    assert listing == []
    listing = httpx.get(f"{sidecar.url}/v1/spans?service=svc&state=open", headers=AUTH).json()
    assert [s["span_id"] for s in listing["spans"]] == ["span_1"]
