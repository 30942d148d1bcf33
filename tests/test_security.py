"""The security review, as tests: who may do what, what never leaks, and that the
sidecar runs as a plain user with no capabilities. The threat model is SECURITY.md."""

from __future__ import annotations

import hmac
import inspect
import json
import os
import pwd
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import psutil
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.conftest import REPO, need_tool, wait_until
from tests.launcher import SidecarProcess
from tests.receivers import Receiver
from tests.wire_process import WireProcess, start
from watchdog.sidecar.app import Sidecar
from watchdog.sidecar.config import ConfigError, load_config
from watchdog.sidecar.gate import Gate

TOKEN = "tok-5f2c9e1d7a"
SINK_SECRET = "sink-hdr-8b3e"
URL_SECRET = "url-key-41d0"
WRONG = "guess-0c7a66"
# Paths that answer without a token: probes, metrics and the page shell (no data).
PUBLIC = {"/healthz", "/readyz", "/metrics", "/"}


def in_process(tmp: Path, token: str | None) -> Sidecar:
    environ = {"AGENTS_WATCHDOG_TOKEN": token} if token else {}
    config_file = tmp / "sidecar.toml"
    config_file.write_text(f'[incidents]\npath = "{tmp}/incidents.db"\n', encoding="utf-8")
    return Sidecar(load_config(config_file, environ=environ))


def routes(sidecar: Sidecar) -> list[tuple[str, str]]:
    """(method, path) of every route, with path parameters filled in."""
    found = []
    for route in sidecar.app().routes:
        if isinstance(route, Route):
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            found += [(method, path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


def test_token_is_compared_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every token check goes through hmac.compare_digest, right token or wrong."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(supplied: bytes, expected: bytes) -> bool:
        compared.append((supplied, expected))
        return real(supplied, expected)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    sidecar = in_process(tmp_path, TOKEN)
    with TestClient(sidecar.app()) as client:
        assert (
            client.get("/v1/spans", headers={"authorization": f"Bearer {WRONG}"}).status_code == 401
        )
        assert (
            client.get("/v1/spans", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
        )
    assert compared == [(WRONG.encode(), TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]
    source = inspect.getsource(Gate.authorize)
    assert "==" not in source and "compare_digest" in source


def test_every_data_and_control_endpoint_needs_the_token(tmp_path: Path) -> None:
    """With a token, every route but the probes, /metrics and the page shell refuses a
    request without it, or with a wrong one — including routes added later."""
    sidecar = in_process(tmp_path, TOKEN)
    with TestClient(sidecar.app()) as client:
        for method, path in routes(sidecar):
            if path in PUBLIC or path.startswith("/static"):
                continue
            for auth in ({}, {"authorization": f"Bearer {WRONG}"}, {"authorization": TOKEN}):
                response = client.request(method, path, headers=auth, content=b"{}")
                assert response.status_code == 401, (method, path, auth, response.text)


def test_control_endpoints_refuse_without_a_configured_token(tmp_path: Path) -> None:
    """With no token configured (loopback), apps may report and anyone local may read,
    but nothing that acts on a process is allowed: every POST but ingest is refused."""
    sidecar = in_process(tmp_path, None)
    with TestClient(sidecar.app()) as client:
        control = [(m, p) for m, p in routes(sidecar) if m != "GET" and p != "/v1/events"]
        assert ("POST", "/v1/spans/1/abort") in control
        for method, path in control:
            response = client.request(method, path, content=b'{"action": "kill"}')
            assert response.status_code == 403, (method, path)
            assert "token" in response.json()["detail"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("127.1.2.3", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("2130706433", False),  # 127.0.0.1 as an integer: resolves, but is not taken on trust
        ("::ffff:127.0.0.1", False),
        ("example.com", False),
    ],
)
def test_binding_beyond_loopback_requires_a_token(host: str, loopback: bool) -> None:
    environ = {"AGENTS_WATCHDOG_HOST": host}
    if loopback:
        assert load_config(environ=environ).server.loopback
    else:
        with pytest.raises(ConfigError) as refused:
            load_config(environ=environ)
        assert refused.value.key == "server.token"
        assert load_config(environ={**environ, "AGENTS_WATCHDOG_TOKEN": "t"}).server.token == "t"


def test_serve_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_WATCHDOG_")}
    result = subprocess.run(
        [sys.executable, "-m", "watchdog.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 2
    assert "server.token" in result.stderr and "requires a token" in result.stderr
    assert "listening" not in result.stderr


@pytest.fixture
def secret_sidecar() -> Iterator[tuple[SidecarProcess, Receiver]]:
    """A sidecar with a token and a webhook whose header and URL carry secrets; the
    receiver fails the first delivery, so failures are logged too."""
    with Receiver(script=[(500, {})]) as receiver:
        config = (
            "[thresholds]\nfunction = 1\n[alerting]\nstack_wait = 0\n"
            f'[[alerts]]\ntype = "webhook"\nurl = "{receiver.url}/hook?key=${{URL_SECRET}}"\n'
            'headers = { authorization = "Bearer ${SINK_SECRET}" }\n'
        )
        env = {"AGENTS_WATCHDOG_TOKEN": TOKEN, "SINK_SECRET": SINK_SECRET, "URL_SECRET": URL_SECRET}
        with SidecarProcess(config, env=env) as sidecar:
            yield sidecar, receiver


@pytest.mark.slow
def test_no_secret_in_logs_alerts_or_api_output(
    secret_sidecar: tuple[SidecarProcess, Receiver],
) -> None:
    """The token, the sink's header and the secret in its URL appear nowhere: not in
    the log (a wrong token sent included), not in alerts, not in any /v1 answer, not
    in /metrics or the page."""
    sidecar, receiver = secret_sidecar
    auth = {"authorization": f"Bearer {TOKEN}"}
    app = WireProcess(sidecar.url, token=TOKEN, service="secrets", interval=1.0)
    app.send([start("span_secret", "trace_secret", "function", "fetch", age=5.0)])
    refused = httpx.post(
        f"{sidecar.url}/v1/events",
        content=b"{}",
        headers={"authorization": f"Bearer {WRONG}", "content-type": "application/json"},
    )
    assert refused.status_code == 401
    receiver.wait_for(lambda bodies: any(b["status"] == "firing" for b in bodies))
    wait_until(lambda: any(e.get("event") == "alert_sink_recovered" for e in sidecar.logs))
    app.goodbye()
    receiver.wait_for(lambda bodies: any(b["status"] == "resolved" for b in bodies))

    outputs = [json.dumps(sidecar.logs), json.dumps([body for _, body in receiver.received])]
    incidents = httpx.get(f"{sidecar.url}/v1/incidents", headers=auth, timeout=10).json()
    outputs.append(json.dumps(incidents))
    for incident in incidents["incidents"]:
        outputs.append(
            httpx.get(f"{sidecar.url}/v1/incidents/{incident['id']}", headers=auth, timeout=10).text
        )
    for path in ("/v1/spans", "/v1/processes", "/v1/thresholds", "/metrics", "/", "/healthz"):
        outputs.append(httpx.get(f"{sidecar.url}{path}", headers=auth, timeout=10).text)
    everything = "\n".join(outputs)
    assert "alert_sink_failing" in everything  # the failure was logged...
    for secret in (TOKEN, SINK_SECRET, URL_SECRET, WRONG):
        assert secret not in everything  # ...without any secret


def _sidecar_as(user: str, config: str, workdir: Path) -> tuple[subprocess.Popen[str], str]:
    """Start ``agents-watchdog serve`` as ``user`` (via setpriv, every capability
    dropped); returns the process and its URL."""
    setpriv = need_tool("setpriv", "runs the sidecar as an unprivileged user")
    record = pwd.getpwnam(user)
    os.chown(workdir, record.pw_uid, record.pw_gid)
    config_path = workdir / "sidecar.toml"
    config_path.write_text(config, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_WATCHDOG_")}
    env |= {"XDG_DATA_HOME": str(workdir), "HOME": str(workdir), "PYTHONUNBUFFERED": "1"}
    command = [
        setpriv,
        f"--reuid={record.pw_uid}",
        f"--regid={record.pw_gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        sys.executable,
        "-m",
        "watchdog.cli",
        "serve",
        "--config",
        str(config_path),
        "--port",
        "0",
    ]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert process.stderr is not None
    for line in process.stderr:
        entry = json.loads(line)
        if entry.get("event") == "listening":
            return process, str(entry["url"])
    raise AssertionError(f"the sidecar did not start as {user} (exit {process.wait()})")


def _credentials(pid: int) -> dict[str, str]:
    status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    return dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)


@pytest.mark.slow
def test_runs_as_a_plain_user_without_capabilities(tmp_path: Path) -> None:
    """The sidecar serves, detects and records as ``nobody`` with no capabilities at
    all, and its Unix socket admits no other user. (Run as root, the test starts it
    as nobody; otherwise it runs as the unprivileged user running the tests.)"""
    if os.geteuid() != 0:
        pytest.skip("needs root to start the sidecar as another user; as non-root it already is")
    workdir = Path(tempfile.mkdtemp(prefix="agents-watchdog-nobody-"))
    socket_path = workdir / "watchdog.sock"
    config = f'[thresholds]\nfunction = 1\n[server]\nunix_socket = "{socket_path}"\n'
    process, url = _sidecar_as("nobody", config, workdir)
    try:
        credentials = _credentials(process.pid)
        nobody = pwd.getpwnam("nobody").pw_uid
        assert credentials["Uid"].split() == [str(nobody)] * 4
        for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(credentials[capabilities], 16) == 0, capabilities
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        app = WireProcess(url, service="unprivileged")
        app.send([start("span_plain", "trace_plain", "function", "stuck", age=5.0)])
        wait_until(
            lambda: httpx.get(f"{url}/v1/spans", params={"state": "hung"}, timeout=10).json()[
                "spans"
            ]
        )
        wait_until(lambda: httpx.get(f"{url}/v1/incidents", timeout=10).json()["incidents"])
        database = next(workdir.rglob("incidents.db"))
        assert database.stat().st_uid == nobody
        assert (database.parent.stat().st_mode & 0o777) == 0o700  # history is owner-only
        assert socket_path.stat().st_uid == nobody and (socket_path.stat().st_mode & 0o777) == 0o600
        # Root may connect anyway (CAP_DAC_OVERRIDE); another plain user may not.
        probe = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n"
            f"    s.connect({str(socket_path)!r})\n"
            "except PermissionError:\n"
            "    sys.exit(13)\n"
        )
        daemon = pwd.getpwnam("daemon")
        result = subprocess.run(
            [
                need_tool("setpriv", "connects as another plain user"),
                f"--reuid={daemon.pw_uid}",
                f"--regid={daemon.pw_gid}",
                "--clear-groups",
                sys.executable,
                "-c",
                probe,
            ],
            timeout=30,
        )
        assert result.returncode == 13
        app.goodbye()
    finally:
        process.terminate()
        assert process.wait(15) == 0
        if process.stderr is not None:
            process.stderr.close()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


VICTIM = """
import socket, sys, time
connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print(connection.getsockname()[1], flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize(
    "header",
    [
        ("x-forwarded-for", "127.0.0.1:{port}"),
        ("forwarded", 'for="127.0.0.1:{port}"'),
    ],
)
def test_a_forged_loopback_registration_is_never_verified(
    sidecar_factory: Callable[..., SidecarProcess], header: tuple[str, str]
) -> None:
    """A local process names the client port of another process's real connection to
    the sidecar in a proxy header: the identity check must read the socket it came in
    on, so the claim fails and no rule can ever be steered at the other process."""
    sidecar = sidecar_factory()
    port = int(sidecar.url.rsplit(":", 1)[1])
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert victim.stdout is not None
        victim_port = int(victim.stdout.readline())
        forger = WireProcess(sidecar.url, service="forger", host=socket.gethostname())
        forger.info = msgspec.structs.replace(
            forger.info, pid=victim.pid, create_time=psutil.Process(victim.pid).create_time()
        )
        name, value = header
        forger.headers[name] = value.format(port=victim_port)
        forger.send([start("span_forged", "trace_forged", "response", "m", 0.1)])
        identity = sidecar.wait_for("process_identity", timeout=10)
        assert identity is not None
        assert identity["verified"] is False, identity
        listed = httpx.get(f"{sidecar.url}/v1/processes", timeout=5).json()["processes"]
        assert [p["verified"] for p in listed if p["service"] == "forger"] == [False]
    finally:
        victim.kill()
        victim.wait(10)
        if victim.stdout is not None:
            victim.stdout.close()
