"""What every request passes: one JSON response class, one refusal shape for every
endpoint, and refusals counted where apps report (ingest) only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from watchdog.protocol import PROTOCOL_VERSION, Reply, encode
from watchdog.sidecar.app import Sidecar
from watchdog.sidecar.config import load_config
from watchdog.sidecar.gate import MsgspecJSONResponse


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Sidecar]]:
    """The sidecar's app in this process, lifespan and all, with its own incident store."""
    tmp = tmp_path_factory.mktemp("gate")
    config_file = tmp / "sidecar.toml"
    config_file.write_text(f'[incidents]\npath = "{tmp}/incidents.db"\n', encoding="utf-8")
    sidecar = Sidecar(load_config(config_file, environ={}))
    with TestClient(sidecar.app(), client=("127.0.0.1", 50000)) as client:
        yield client, sidecar


def test_json_response_encodes_as_starlette_did() -> None:
    """Bodies read byte for byte as Starlette's JSONResponse wrote them; a Struct as the
    wire encodes it."""
    # (Past 1e16 the two write exponents differently, 1e300 and 1e+300: same JSON number.)
    body = {"é": "ünïcode ✓", "n": [1, 2.5, -0.0, 0.001], "ok": True, "none": None, "d": {}}
    ours, theirs = MsgspecJSONResponse(body, status_code=202), JSONResponse(body, 202)
    assert ours.body == theirs.body
    assert ours.status_code == 202
    assert ours.headers["content-type"] == theirs.headers["content-type"] == "application/json"
    reply = Reply(v=PROTOCOL_VERSION, sidecar_id="s1", resync=False, commands=[])
    assert MsgspecJSONResponse(reply).body == encode(reply)  # the wire's own encoding


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "reason"),
    [
        ("GET", "/v1/spans?colour=red", {}, 400, "bad_request"),
        ("GET", "/v1/spans/no-such-span", {}, 404, "not_found"),
        ("GET", "/v1/incidents/0", {}, 400, "bad_request"),
        ("GET", "/v1/incidents/424242", {}, 404, "not_found"),
        ("GET", "/v1/incidents?since=yesterday", {}, 400, "bad_request"),
        ("POST", "/v1/spans/x/abort", {}, 403, "forbidden"),
        ("POST", "/v1/events", {"content-type": "text/plain"}, 415, "unsupported_media_type"),
    ],
)
def test_every_refusal_has_one_shape(
    served: tuple[TestClient, Sidecar],
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    reason: str,
) -> None:
    client, _ = served
    response = client.request(method, path, headers=headers, content=b"{}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == reason and body["detail"]


def test_only_ingest_refusals_are_counted(served: tuple[TestClient, Sidecar]) -> None:
    """``events_rejected_total`` counts what apps sent and the sidecar refused; an
    operator's bad query is answered, not counted."""
    client, sidecar = served
    rejected = sidecar.ingest_stats.rejected
    before = dict(rejected)
    assert client.get("/v1/spans?state=stuck").status_code == 400
    assert dict(rejected) == before
    refused = client.post("/v1/events", content=b"{", headers={"content-type": "application/json"})
    assert refused.status_code == 400 and refused.json()["error"] == "malformed_json"
    assert rejected["malformed_json"] == before.get("malformed_json", 0) + 1
