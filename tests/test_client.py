"""The client commands (``status``, ``incidents``, ``abort``) ask a sidecar alike: the
same ``--url`` forms (``unix://`` included), ``--token``, ``--json``, and exit codes
(0 fine, 1 attention, 2 cannot ask)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.launcher import SidecarProcess
from tests.receivers import LoopbackServer, QuietHandler
from tests.test_status import nobody_listening
from tests.wire_process import WireProcess, runs
from watchdog.cli import main
from watchdog.client import CannotAsk, SidecarClient

Factory = Callable[..., SidecarProcess]
TOKEN = "client-token"
COMMANDS = [["status"], ["incidents"], ["incidents", "show", "1"], ["abort", "span_x"]]
IDS = ["status", "incidents", "incidents-show", "abort"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTS_WATCHDOG_URL", raising=False)
    monkeypatch.delenv("AGENTS_WATCHDOG_TOKEN", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SidecarProcess, Path]]:
    """A sidecar with a token, on loopback TCP and on a Unix socket."""
    path = tmp_path_factory.mktemp("uds") / "watchdog.sock"
    config = f'[server]\nunix_socket = "{path}"\n'
    with SidecarProcess(config, env={"AGENTS_WATCHDOG_TOKEN": TOKEN}) as sidecar:
        yield sidecar, path


def test_all_three_commands_over_a_unix_socket(
    guarded: tuple[SidecarProcess, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sidecar, path = guarded
    url = f"unix://{path}"
    wire = WireProcess(sidecar.url, TOKEN, service="over-uds-cli")
    wire.send(runs(1, prefix="uds"))
    try:
        code, out, _ = run(capsys, "status", "--url", url, "--token", TOKEN, "--json")
        assert code == 0, out
        status = json.loads(out)
        assert status["url"] == url
        assert [p["service"] for p in status["processes"]] == ["over-uds-cli"]
        code, out, _ = run(capsys, "status", "--url", url, "--token", TOKEN)
        assert code == 0 and "over-uds-cli" in out and "OK: all processes live" in out
        code, out, err = run(capsys, "incidents", "--url", url, "--token", TOKEN)
        assert (code, out, err) == (0, "no incidents\n", "")
        span = status["spans"][0]["span_id"]
        code, out, err = run(capsys, "abort", span, "--url", url, "--token", TOKEN)
        assert code == 0, err
        assert f"abort of {span} started: cancel -> cancel_trace" in out
    finally:
        wire.goodbye()


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_a_missing_token_exits_2_and_says_how_to_give_it(
    guarded: tuple[SidecarProcess, Path], capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    sidecar, _ = guarded
    code, out, err = run(capsys, *command, "--url", sidecar.url)
    assert code == 2 and out == ""
    assert f"the sidecar at {sidecar.url} needs a token and none was given" in err
    assert "answered 401 unauthorized: missing bearer token" in err
    assert "--token TOKEN or AGENTS_WATCHDOG_TOKEN=TOKEN" in err


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_a_wrong_token_exits_2_and_says_it_is_wrong(
    guarded: tuple[SidecarProcess, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    sidecar, path = guarded
    # From the environment, as from the flag; and over the Unix socket, as over TCP.
    monkeypatch.setenv("AGENTS_WATCHDOG_TOKEN", "not-the-token")
    monkeypatch.setenv("AGENTS_WATCHDOG_URL", f"unix://{path}")
    code, _, err = run(capsys, *command)
    assert code == 2
    assert "refused the token given as wrong" in err and "wrong bearer token" in err
    assert "give the sidecar's own token with --token" in err


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_the_right_token_is_let_in(
    guarded: tuple[SidecarProcess, Path], capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """status: all well (0); incidents: listed (0) or not found (1); abort: no such span (1)."""
    sidecar, _ = guarded
    code, out, err = run(capsys, *command, "--url", sidecar.url, "--token", TOKEN)
    if command[0] == "status" or command == ["incidents"]:
        assert code == 0, err
    else:
        assert code == 1 and "not_found: no" in err, err


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_an_unreachable_sidecar_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    for url in (nobody_listening(), f"unix://{tmp_path}/nobody.sock"):
        code, out, err = run(capsys, *command, "--url", url)
        assert code == 2 and out == ""
        assert f"agents-watchdog: cannot reach the sidecar at {url}:" in err
        code, out, err = run(capsys, *command, "--url", url, "--json")
        assert code == 2 and err == ""
        body = json.loads(out)
        assert body["url"] == url and body["exit_code"] == 2
        assert "cannot reach the sidecar" in body["error"]


# httpcore 1.0 leaves the socket of a refused Unix connect unclosed (its SyncBackend
# closes nothing when connect raises): the warning of its collection is not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_unix_socket_nobody_listens_on_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as gone:
        gone.bind(str(stale))  # left behind, as by a sidecar killed with SIGKILL
    plain = tmp_path / "plain-file"
    plain.write_text("")
    for command in COMMANDS:
        code, _, err = run(capsys, *command, "--url", f"unix://{plain}")
        assert code == 2 and f"{plain} is not a socket" in err
        code, _, err = run(capsys, *command, "--url", f"unix://{stale}")
        assert code == 2 and f"cannot reach the sidecar at unix://{stale}:" in err
        assert "Connection refused" in err


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
@pytest.mark.parametrize("url", ["localhost:9750", "ftp://host/", "unix://run/x.sock", "http://"])
def test_a_bad_url_exits_2_and_names_the_forms(
    capsys: pytest.CaptureFixture[str], command: list[str], url: str
) -> None:
    code, _, err = run(capsys, *command, "--url", url)
    assert code == 2
    assert f"bad sidecar URL {url!r}" in err and "unix:///path/to/socket" in err


def test_a_silent_sidecar_exits_2_after_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as silent:
        # Listening but never accepting: the connection is made, no answer ever comes.
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        for command in COMMANDS:
            code, _, err = run(capsys, *command, "--url", url, "--timeout", "0.2")
            assert code == 2, command
            assert f"the sidecar at {url} did not answer" in err and "within 0.2 s" in err


def test_json_on_all_three_commands(
    guarded: tuple[SidecarProcess, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sidecar, _ = guarded
    ask = ("--url", sidecar.url, "--token", TOKEN, "--json")
    wire = WireProcess(sidecar.url, TOKEN, service="json-cli")
    wire.send(runs(1, prefix="json"))
    try:
        code, out, _ = run(capsys, "status", *ask)
        status = json.loads(out)
        assert code == 0 and status["ok"] is True and status["exit_code"] == 0
        code, out, _ = run(capsys, "incidents", *ask)
        assert code == 0 and json.loads(out)["incidents"] == []
        span = next(s for s in status["spans"] if s["kind"] == "response")
        code, out, _ = run(capsys, "abort", span["span_id"], "--action", "timeout", *ask)
        reply = json.loads(out)
        assert code == 0
        assert reply["span_id"] == span["span_id"] and reply["action"] == "timeout"
        assert reply["steps"][0] == "timeout" and reply["dry_run"] is False
        # A refusal in JSON too: the exit code and the sidecar's reason.
        code, out, _ = run(capsys, "abort", "span_none", *ask)
        refused = json.loads(out)
        assert code == 1 and refused["exit_code"] == 1
        assert refused["error"] == "not_found: no open span span_none"
        code, out, _ = run(capsys, "incidents", "show", "424242", *ask)
        assert code == 1 and json.loads(out)["error"] == "not_found: no incident 424242"
    finally:
        wire.goodbye()


def test_abort_on_a_sidecar_without_a_token_exits_2(
    sidecar_factory: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    sidecar = sidecar_factory()
    code, _, err = run(capsys, "abort", "span_x", "--url", sidecar.url)
    assert code == 2
    assert "answered 403 forbidden: aborting needs a token" in err


class Canned:
    """A loopback HTTP server that answers every request with one status and body."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        canned = self
        self.status, self.body, self.content_type = status, body, content_type

        class Handler(QuietHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(canned.status)
                self.send_header("content-type", canned.content_type)
                self.send_header("content-length", str(len(canned.body)))
                self.end_headers()
                self.wfile.write(canned.body)

            do_GET = do_POST = _answer

        handler: type[BaseHTTPRequestHandler] = Handler
        self.server = LoopbackServer(handler)
        self.url = self.server.url

    def __enter__(self) -> Canned:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (200, b"<html>hello</html>", "answered 200 with no JSON"),
        (404, b"<html>Not Found</html>", "answered 404: '<html>Not Found"),
        (
            500,
            b'{"error": "boom", "detail": "inside"}',
            "failed: GET /v1/",
        ),
        (200, b'{"colour": "blue"}', "unexpected answer"),
    ],
    ids=["html", "not-a-sidecar-404", "server-error", "wrong-shape"],
)
def test_an_answer_that_is_not_the_sidecars_exits_2(
    capsys: pytest.CaptureFixture[str], status: int, body: bytes, words: str
) -> None:
    with Canned(status, body, "text/html" if body.startswith(b"<") else "application/json") as c:
        for command in (["status"], ["incidents"], ["incidents", "show", "3"]):
            code, _, err = run(capsys, *command, "--url", c.url)
            assert code == 2, (command, err)
            assert f"from {c.url}" in err or f"the sidecar at {c.url}" in err
            assert words in err, err


def test_an_ambiguous_span_is_an_abort_refused(capsys: pytest.CaptureFixture[str]) -> None:
    detail = "span s is open in 2 processes; give instance_id"
    body = json.dumps({"error": "ambiguous", "detail": detail}).encode()
    with Canned(409, body) as canned:
        code, _, err = run(capsys, "abort", "s", "--url", canned.url, "--token", "t")
    assert code == 1 and err == f"agents-watchdog: ambiguous: {detail}\n"


def test_the_token_is_sent_and_a_span_id_is_one_path_segment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[tuple[str, str | None]] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            seen.append((self.path, self.headers.get("authorization")))
            answer = b'{"span_id": "a/b", "action": "cancel", "steps": ["cancel"], "dry_run": true}'
            self.send_response(202)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = LoopbackServer(Handler)
    server.start()
    try:
        code, out, _ = run(capsys, "abort", "a/b", "--url", server.url + "/", "--token", "tk")
    finally:
        server.stop()
    assert code == 0 and "(dry run: nothing will be sent)" in out
    # A span id is one path segment, whatever it holds.
    assert seen == [("/v1/spans/a%2Fb/abort", "Bearer tk")]


def test_sidecar_client_refuses_a_bad_url_at_construction() -> None:
    with pytest.raises(CannotAsk, match="bad sidecar URL 'http://host:port'"):
        SidecarClient("http://host:port")
    client: Any = SidecarClient("https://sidecar.example:9750/", token="")
    assert client.token is None
    client.close()
    client.close()  # safe twice
