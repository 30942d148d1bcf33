"""Hostile input: property-based fuzzing of the ingest API and the config loader, and
what one client may cost the sidecar (limits per process, slow and many clients).

Known-bad requests with their exact answers are in ``test_bad_input.py``; here
hypothesis looks for anything that breaks the rules: every request gets a bounded,
clear answer (never a 500), the sidecar stays healthy, its metrics stay parseable, and
what it holds is exactly what the accepted events say.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import string
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.conftest import metric, wait_until
from tests.launcher import SidecarProcess
from watchdog.protocol import PROTOCOL_VERSION
from watchdog.sidecar.app import Sidecar
from watchdog.sidecar.config import Config, ConfigError, load_config

pytestmark = pytest.mark.slow

# Hypothesis keeps caches in ./.hypothesis by default: not in the working tree.
set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "agents-watchdog-hypothesis"))

JSON_HEADERS = {"content-type": "application/json"}
# Answers a client may get from ingest; anything else (a 500 above all) is a bug.
ANSWERS = {200, 400, 408, 409, 413, 415, 422, 429}
MAX_OPEN = 40
# No example database: nothing written into the working tree.
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Clock:
    """The sidecar's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def in_process_sidecar(tmp: Path, limits: str = "", clock: Clock | None = None) -> Sidecar:
    """A sidecar object (no subprocess) with its incident history in ``tmp``."""
    config_file = tmp / "sidecar.toml"
    config_file.write_text(
        f'[incidents]\npath = "{tmp}/incidents.db"\n[limits]\nmax_open_spans = {MAX_OPEN}\n'
        + limits,
        encoding="utf-8",
    )
    config = load_config(config_file, environ={})
    return Sidecar(config) if clock is None else Sidecar(config, clock=clock)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Sidecar]]:
    """The sidecar's ASGI app in this process, lifespan and all (detector running)."""
    sidecar = in_process_sidecar(tmp_path_factory.mktemp("fuzz"))
    with TestClient(sidecar.app(), client=("127.0.0.1", 50000)) as test_client:
        yield test_client, sidecar


# -- strategies -------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
ids = st.sampled_from([f"span_{i}" for i in range(12)] + ["trace_a", "trace_b"])
kinds = st.sampled_from(["trace", "agent", "turn", "response", "function", "custom", "odd kind"])
names = st.text(max_size=12)
times = st.floats(min_value=0, max_value=2e3) | st.sampled_from([0.0, 1e12, 5e11])
start_events = st.tuples(
    st.just("s"), ids, ids, st.none() | ids, kinds, names, times, st.integers(0, 2**53), st.none()
).map(list)
end_events = st.tuples(st.just("e"), ids, times, st.booleans()).map(list)
events = st.lists(start_events | end_events, max_size=30)


def batch(
    instance: str = "fuzz-1",
    service: str = "fuzz",
    sent_at: float = 1000.0,
    events: list[Any] | None = None,
    resync: list[Any] | None = None,
    goodbye: bool = False,
) -> dict[str, Any]:
    return {
        "v": PROTOCOL_VERSION,
        "process": {
            "instance_id": instance,
            "pid": 999_999,
            "host": "fuzz-host",
            "create_time": 1.0,
            "service": service,
        },
        "seq": 1,
        "sent_at": sent_at,
        "heartbeat": {"interval": 1.0, "open_spans": 0, "dropped_events": 0, "wall_minus_mono": 0},
        "events": events or [],
        "resync": resync,
        "goodbye": goodbye,
    }


def post(client: TestClient, body: bytes, **headers: str) -> Any:
    return client.post("/v1/events", content=body, headers={**JSON_HEADERS, **headers})


def assert_clear_answer(response: Any) -> None:
    assert response.status_code in ANSWERS, response.text
    if response.status_code != 200:
        body = response.json()
        assert body["error"] and body["detail"], body
        assert len(response.content) < 4096  # bounded, whatever came in


def assert_healthy(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    text = client.get("/metrics").text
    families = {family.name for family in text_string_to_metric_families(text)}
    assert "agents_watchdog_events_rejected" in families


# -- the ingest API ---------------------------------------------------------------------


@FUZZ
@given(body=st.binary(max_size=2000) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_body_gets_a_clear_answer(client: tuple[TestClient, Sidecar], body: bytes) -> None:
    test_client, sidecar = client
    before = sum(sidecar.ingest_stats.rejected.values())
    response = post(test_client, body)
    assert_clear_answer(response)
    if response.status_code != 200:
        reason = response.json()["error"]
        assert sum(sidecar.ingest_stats.rejected.values()) == before + 1
        assert sidecar.ingest_stats.rejected[reason] >= 1


@FUZZ
@given(
    field=st.sampled_from(
        [
            ("v",),
            ("seq",),
            ("sent_at",),
            ("events",),
            ("resync",),
            ("goodbye",),
            ("process", "pid"),
            ("process", "service"),
            ("process", "create_time"),
            ("process", "instance_id"),
            ("heartbeat", "interval"),
            ("heartbeat", "wall_minus_mono"),
            ("heartbeat", "loops"),
            ("heartbeat", "dropped_events"),
        ]
    ),
    value=json_values
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-0", "9" * 400]).map(
        lambda token: json.loads(token) if token != "9" * 400 else int(token)
    )
    | st.text(min_size=300, max_size=100_000),
)
def test_any_field_holding_anything_gets_a_clear_answer(
    client: tuple[TestClient, Sidecar], field: tuple[str, ...], value: Any
) -> None:
    test_client, _ = client
    body = batch(instance="fuzz-fields", sent_at=time.monotonic())
    target = body
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    # json.dumps writes NaN and Infinity as the bare tokens a hostile client would.
    response = post(test_client, json.dumps(body, allow_nan=True).encode())
    assert_clear_answer(response)
    if field == ("v",) and response.status_code == 400 and value != PROTOCOL_VERSION:
        assert response.json()["error"] in ("unsupported_version", "malformed_json")


class Model:
    """What the sidecar should hold: per process, the set of open span ids."""

    def __init__(self) -> None:
        self.open: dict[str, set[str]] = {}

    def apply(self, instance: str, events: list[list[Any]], resync: list[list[Any]] | None) -> int:
        """Apply as the registry does; returns how many starts the limit refused."""
        opened = self.open.setdefault(instance, set())
        refused = 0
        for event in events:
            if event[0] == "s":
                if event[1] in opened:
                    continue
                if len(opened) >= MAX_OPEN:
                    refused += 1
                    continue
                opened.add(event[1])
            else:
                opened.discard(event[1])
        if resync is not None:
            opened.clear()
            for start in sorted(resync, key=lambda s: s[6]):
                if start[1] in opened:
                    continue
                if len(opened) >= MAX_OPEN:
                    refused += 1
                    continue
                opened.add(start[1])
        return refused


_examples = iter(range(10**9))


@FUZZ
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.lists(start_events | end_events, max_size=60),
            st.none() | st.lists(start_events, max_size=60),
            st.sampled_from(["svc", 'a"b\\c\nd', "ü" * 30, "{x}"]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_open_spans_are_exactly_what_the_accepted_events_say(
    client: tuple[TestClient, Sidecar],
    steps: list[tuple[str, list[list[Any]], list[list[Any]] | None, str]],
) -> None:
    """Duplicate and out-of-order events, ends without starts, one span id in several
    processes, parents that do not exist or form cycles, names no sane app sends, and
    more starts than ``limits.max_open_spans``: the sidecar holds exactly what the
    accepted events say, refuses starts past the limit and counts them, and its
    metrics stay parseable. Each example speaks for processes of its own."""
    test_client, sidecar = client
    example = next(_examples)
    model = Model()
    refused_before = sidecar.ingest_stats.rejected["open_span_limit"]
    open_before = sidecar.registry.open_count
    refused = 0
    sent_at = 1000.0
    for name, step_events, resync, service in steps:
        instance = f"model-{example}-{name}"
        sent_at += 1.0
        body = batch(instance, service, sent_at, step_events, resync)
        response = post(test_client, json.dumps(body).encode())
        assert response.status_code == 200, response.text
        refused += model.apply(instance, step_events, resync)
    for instance, expected in model.open.items():
        process = sidecar.registry.processes[instance]
        assert set(process.spans) == expected
        assert sum(len(by_kind) for by_kind in process.spans_by_kind.values()) == len(expected)
    opened = sum(len(spans) for spans in model.open.values())
    assert sidecar.registry.open_count == open_before + opened
    assert sidecar.ingest_stats.rejected["open_span_limit"] == refused_before + refused
    listed = test_client.get("/v1/spans").json()["spans"]
    assert len([s for s in listed if s["instance_id"].startswith(f"model-{example}-")]) == opened
    assert_healthy(test_client)
    for instance in model.open:
        sent_at += 1.0
        goodbye = batch(instance, sent_at=sent_at, goodbye=True)
        assert post(test_client, json.dumps(goodbye).encode()).status_code == 200
    assert sidecar.registry.open_count == open_before


# -- limits per process -----------------------------------------------------------------


def test_event_rate_and_process_count_are_limited_and_counted(tmp_path: Path) -> None:
    """A process past ``max_events_per_second`` (bursts of five seconds' worth pass)
    and a new process past ``max_processes`` get a 429 with a reason, counted; time and
    a goodbye let them in again. The sidecar's clock is the test's."""
    clock = Clock()
    sidecar = in_process_sidecar(
        tmp_path, "max_events_per_second = 100\nmax_processes = 3\n", clock=clock
    )

    def starts(prefix: str, count: int) -> list[list[Any]]:
        return [["s", f"{prefix}{i}", "t", None, "custom", "", 1.0, 1, None] for i in range(count)]

    def ends(prefix: str, count: int) -> list[list[Any]]:
        return [["e", f"{prefix}{i}", 2.0, False] for i in range(count)]

    with TestClient(sidecar.app(), client=("127.0.0.1", 50000)) as test_client:

        def send(instance: str, events: list[list[Any]], goodbye: bool = False) -> Any:
            clock.now += 0.001
            body = batch(instance, sent_at=clock.now, events=events, goodbye=goodbye)
            return post(test_client, json.dumps(body).encode())

        # A burst of 5 s' worth (500 events) passes; the next 40 do not, until time passes.
        assert (
            send(
                "rate", starts("a", 20) + ends("a", 20) + starts("b", 230) + ends("b", 230)
            ).status_code
            == 200
        )
        refused = send("rate", starts("c", 20) + ends("c", 20))
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
        assert "limits.max_events_per_second" in refused.json()["detail"]
        clock.now += 0.5  # 50 events' worth
        assert send("rate", starts("c", 20) + ends("c", 20)).status_code == 200
        # A batch larger than the whole burst passes when the allowance is full.
        clock.now += 10
        assert send("rate", starts("d", 300) + ends("d", 300)).status_code == 200
        assert send("rate", starts("e", 1)).status_code == 429
        assert sidecar.ingest_stats.rejected["rate_limited"] == 2

        for name in ("p2", "p3"):
            assert send(name, []).status_code == 200
        crowded = send("p4", [])
        assert crowded.status_code == 429 and crowded.json()["error"] == "too_many_processes"
        assert send("p3", [], goodbye=True).status_code == 200
        assert send("p4", []).status_code == 200
        assert sidecar.ingest_stats.rejected["too_many_processes"] == 1
        families = text_string_to_metric_families(test_client.get("/metrics").text)
        rejected = {
            s.labels["reason"]: s.value
            for f in families
            if f.name == "agents_watchdog_events_rejected"
            for s in f.samples
        }
        assert (rejected["rate_limited"], rejected["too_many_processes"]) == (2.0, 1.0)


def test_late_batches_are_refused_and_counted(tmp_path: Path) -> None:
    """A batch sent before one already applied from the same process (a retry that
    arrived late through a slow network) would bring back spans that have ended: it is
    refused with 409 and counted; the state stays as the newer batch left it."""
    sidecar = in_process_sidecar(tmp_path)
    start = ["s", "span_late", "trace_late", None, "custom", "", 1.0, 1, None]
    with TestClient(sidecar.app(), client=("127.0.0.1", 50000)) as test_client:
        newer = batch("late", sent_at=20.0, events=[start, ["e", "span_late", 2.0, False]])
        older = batch("late", sent_at=10.0, events=[start], resync=[start])
        assert post(test_client, json.dumps(newer).encode()).status_code == 200
        late = post(test_client, json.dumps(older).encode())
        assert late.status_code == 409 and late.json()["error"] == "stale_batch"
        assert sidecar.registry.processes["late"].spans == {}
        assert sidecar.ingest_stats.rejected["stale_batch"] == 1


# -- the config loader -------------------------------------------------------------------

SECTIONS = {
    "server": ["host", "port", "token", "max_body_bytes", "log_level", "unix_socket"],
    "thresholds": ["default", "response", "function", "agent", "trace", "bogus"],
    "max_duration": ["trace", "agent", "default"],
    "alerting": ["external_url", "resend_interval", "give_up_after", "queue_size", "stack_wait"],
    "incidents": ["enabled", "path", "max_age_days", "max_count", "reconcile_seconds"],
    "abort": ["grace_seconds", "dry_run", "max_signals", "window_seconds"],
    "processes": ["unresponsive_after", "orphan_retention", "loop_blocked_after"],
    "learning": ["path", "window", "max_names"],
    "limits": [
        "max_processes",
        "max_open_spans",
        "max_events_per_second",
        "max_connections",
        "request_timeout",
    ],
}
ARRAYS = {
    "rules": ["kind", "name", "threshold", "action", "severity", "floor", "ceiling", "factor"],
    "alerts": ["type", "name", "url", "headers", "services", "kinds", "severities", "timeout"],
}
toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from([10**400, -(10**400)])  # TOML integers have no size limit in tomllib
    | st.floats()
    | st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
    | st.sampled_from(
        ["auto", "²", "１２", "0x10", "1e999", "nan", "-1", "", "${NOPE}", "http://x", "alert"]
    )
    | st.datetimes().map(lambda moment: moment.replace(microsecond=0))
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(string.ascii_lowercase, max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def config_documents(draw: st.DrawFn) -> dict[str, Any]:
    """TOML documents shaped like a config: known sections and keys mostly, anything
    as their values, and now and then a key or section that does not exist."""
    document: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, *ARRAYS, "extra"]), max_size=5)):
        if section in ARRAYS:
            document[section] = [
                {key: draw(toml_values) for key in draw(st.lists(st.sampled_from(ARRAYS[section])))}
                for _ in range(draw(st.integers(0, 3)))
            ]
        else:
            keys = SECTIONS.get(section, ["x"]) + ["unknown"]
            document[section] = {
                key: draw(toml_values) for key in draw(st.lists(st.sampled_from(keys)))
            }
    return document


def toml_text(document: dict[str, Any]) -> str:
    """A small TOML writer: enough for what :func:`config_documents` makes."""

    def key(name: str) -> str:
        return json.dumps(name, ensure_ascii=False)

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, int):
            return str(item)
        if isinstance(item, float):
            return (
                "nan"
                if math.isnan(item)
                else ("inf" if item > 0 else "-inf")
                if math.isinf(item)
                else repr(item)
            )
        if isinstance(item, str):
            escaped = json.dumps(item, ensure_ascii=False).replace("\x7f", "\\u007f")
            return escaped
        if isinstance(item, list):
            return "[" + ", ".join(value(i) for i in item) + "]"
        if isinstance(item, dict):
            return "{" + ", ".join(f"{key(k)} = {value(v)}" for k, v in item.items()) + "}"
        return str(item.isoformat())  # a datetime

    lines = []
    for section, content in document.items():
        if isinstance(content, list):
            for entry in content:
                lines.append(f"[[{key(section)}]]")
                lines += [f"{key(k)} = {value(v)}" for k, v in entry.items()]
        else:
            lines.append(f"[{key(section)}]")
            lines += [f"{key(k)} = {value(v)}" for k, v in content.items()]
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None, database=None)
@given(document=config_documents())
def test_any_config_loads_or_names_the_key(document: dict[str, Any]) -> None:
    path = Path(f"/tmp/agents-watchdog-fuzz-{id(document)}.toml")
    try:
        path.write_text(toml_text(document), encoding="utf-8")
        loaded = load_config(path, environ={})
    except ConfigError as exc:
        assert exc.key and str(exc).startswith(f"config error: {exc.key}: ")
    else:
        assert isinstance(loaded, Config)
    finally:
        path.unlink(missing_ok=True)


@settings(max_examples=150, deadline=None, database=None)
@given(
    environ=st.dictionaries(
        st.sampled_from(
            [
                "AGENTS_WATCHDOG_HOST",
                "AGENTS_WATCHDOG_PORT",
                "AGENTS_WATCHDOG_TOKEN",
                "AGENTS_WATCHDOG_LOG_LEVEL",
                "AGENTS_WATCHDOG_MAX_BODY_BYTES",
                "AGENTS_WATCHDOG_UNIX_SOCKET",
                "AGENTS_WATCHDOG_THRESHOLD_RESPONSE",
                "AGENTS_WATCHDOG_THRESHOLD_NOPE",
                "AGENTS_WATCHDOG_MAX_DURATION_TRACE",
                "AGENTS_WATCHDOG_SOMETHING",
                "AGENTS_WATCHDOG_URL",
            ]
        ),
        st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=12)
        | st.sampled_from(["²", "１２", "-0", "1e999", "nan", "0", "65536", "::1", "0.0.0.0"]),
        max_size=4,
    )
)
def test_any_environment_loads_or_names_the_variable(environ: dict[str, str]) -> None:
    try:
        loaded = load_config(None, environ=environ)
    except ConfigError as exc:
        assert exc.key and str(exc).startswith(f"config error: {exc.key}: ")
    else:
        assert isinstance(loaded, Config)


# -- slow and many clients, against the real server ---------------------------------------

LIMITS = "[limits]\nrequest_timeout = 1\nmax_connections = 20\n"


@pytest.fixture(scope="module")
def server() -> Iterator[SidecarProcess]:
    with SidecarProcess(LIMITS) as process:
        yield process


def raw_connection(sidecar: SidecarProcess) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", sidecar.port), timeout=10)
    return connection


def test_slow_clients_are_cut_off_and_counted(server: SidecarProcess) -> None:
    """Slowloris: a client that connects and sends nothing, one that trickles its
    headers, one that trickles its body — each gets a 408 within the request timeout
    (never holds its connection), counted; headers still incomplete past 64 KiB get a
    400 (h11's limit on what it buffers)."""
    before = metric(server, "agents_watchdog_events_rejected_total", reason="request_timeout") or 0
    silent = raw_connection(server)
    trickling = raw_connection(server)
    trickling.sendall(b"POST /v1/events HTTP/1.1\r\nhost: x\r\n")
    body_trickle = raw_connection(server)
    body_trickle.sendall(
        b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n{"
    )
    for connection in (silent, trickling, body_trickle):
        answer = connection.recv(4096)  # returns once the sidecar answers and closes
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"request" in answer.lower() and b"time" in answer.lower()
        connection.close()
    wait_until(
        lambda: (
            metric(server, "agents_watchdog_events_rejected_total", reason="request_timeout")
            == before + 3
        )
    )
    huge_header = raw_connection(server)
    with contextlib.suppress(OSError):  # the sidecar may answer and close mid-way
        huge_header.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 2**20)
    assert huge_header.recv(4096).startswith(b"HTTP/1.1 400")
    huge_header.close()
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_too_many_connections_get_503_until_they_go(server: SidecarProcess) -> None:
    """Past ``limits.max_connections`` a request gets 503 at once (nothing queues up);
    when the idle connections are cut off, requests are served again."""
    idle = [raw_connection(server) for _ in range(20)]
    try:
        with httpx.Client(timeout=5) as crowded:
            refused = crowded.get(f"{server.url}/healthz")
        assert refused.status_code == 503
        # Idle connections time out like slow ones; then there is room.
        for connection in idle:
            assert connection.recv(4096).startswith(b"HTTP/1.1 408")
        wait_until(lambda: httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200)
    finally:
        for connection in idle:
            connection.close()
    assert server.wait_for("Exceeded concurrency limit.", timeout=1) is not None
