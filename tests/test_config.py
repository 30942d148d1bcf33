"""Configuration: layering, and errors that name the key and the expected form."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from watchdog.sidecar.config import (
    DEFAULT_THRESHOLDS,
    ENV_PREFIX,
    ConfigError,
    Rule,
    load_config,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "watchdog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    config = load_config(environ={})
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 9750
    assert config.server.token is None
    assert dict(config.thresholds.by_kind) == dict(DEFAULT_THRESHOLDS)
    assert config.thresholds.resolve("speech", "x")[:4] == (120.0, "alert", None, "warning")


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
port = 8000
log_level = "debug"
[thresholds]
response = 30
default = 45
[max_duration]
trace = 3600
[[rules]]
kind = "function"
name = "export_*"
threshold = 900
action = "cancel"
""",
    )
    environ = {
        "AGENTS_WATCHDOG_PORT": "8100",
        "AGENTS_WATCHDOG_THRESHOLD_RESPONSE": "12.5",
        "AGENTS_WATCHDOG_URL": "http://ignored-by-the-sidecar",
        "AGENTS_WATCHDOG_TOKEN": "t",
    }
    config = load_config(path, environ=environ, overrides={"port": 8200, "host": None})
    assert config.server.port == 8200  # flag beats environment beats file
    assert config.server.token == "t"
    assert config.server.log_level == "debug"
    assert config.thresholds.by_kind["response"] == 12.5
    assert config.thresholds.by_kind["default"] == 45
    assert config.thresholds.resolve("trace", "wf")[:4] == (600.0, "alert", 3600.0, "warning")
    assert config.thresholds.rules == (Rule("function", "export_*", 900.0, "cancel"),)
    assert config.thresholds.resolve("function", "export_pdf")[:4] == (
        900.0,
        "cancel",
        None,
        "warning",
    )
    assert 900.0 in config.thresholds.edges() and 12.5 in config.thresholds.edges()


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[thresholds]\nfunction = 7\n")
    config = load_config(environ={"AGENTS_WATCHDOG_CONFIG": str(path)})
    assert config.thresholds.by_kind["function"] == 7


BAD = [
    ("[server]\nport = 'http'\n", "server.port", "expected an integer from 0 to 65535"),
    ("[server]\nport = 70000\n", "server.port", "expected an integer from 0 to 65535"),
    ("[server]\nprot = 1\n", "server.prot", "unknown key"),
    ("[server]\nhost = '0.0.0.0'\n", "server.token", "requires a token"),
    ("[server]\nlog_level = 'loud'\n", "server.log_level", "expected debug, info"),
    ("[thresholds]\nresponse = 'fast'\n", "thresholds.response", "number of seconds > 0"),
    ("[thresholds]\nresponse = -1\n", "thresholds.response", "number of seconds > 0"),
    ("[thresholds]\nresponse = true\n", "thresholds.response", "number of seconds > 0"),
    ("[thresholds]\nrespones = 3\n", "thresholds.respones", "unknown key"),
    ("[max_duration]\ndefault = 3\n", "max_duration.default", "unknown key"),
    ("thresholds = 3\n", "thresholds", "expected a table"),
    ("[[rules]]\nkind = 'tool'\nthreshold = 3\n", "rules[0].kind", "expected one of"),
    (
        "[[rules]]\nthreshold = 3\naction = 'nuke'\n",
        "rules[0].action",
        "alert, timeout, cancel, terminate, kill",
    ),
    ("[[rules]]\nname = 'x*'\n", "rules[0]", "needs at least one of threshold, action, severity"),
    ("[[rules]]\nthreshold = 3\ncolour = 'red'\n", "rules[0].colour", "unknown key"),
    ("[alerter]\n", "alerter", "unknown key"),
    ("[server\n", "--config", "not valid TOML"),
    ("[[alerts]]\ntype = 'pager'\n", "alerts[0].type", "log, webhook, alertmanager, slack"),
    ("[[alerts]]\ntype = 'webhook'\n", "alerts[0].url", "needs an http(s) url"),
    ("[[alerts]]\ntype = 'slack'\nurl = 'ftp://x'\n", "alerts[0].url", "needs an http(s) url"),
    ("[[alerts]]\ntype = 'log'\nkinds = ['tool']\n", "alerts[0].kinds", "expected values from"),
    (
        "[[alerts]]\ntype = 'log'\nkinds = 'response'\nseverities = ['loud']\n",
        "alerts[0].severities",
        "expected values from",
    ),
    ("[[alerts]]\ntype = 'log'\nservices = 3\n", "alerts[0].services", "list of strings"),
    ("[[alerts]]\ntype = 'log'\ncolour = 1\n", "alerts[0].colour", "unknown key"),
    (
        "[[alerts]]\ntype = 'webhook'\nurl = 'http://x/${UNSET_SECRET}'\n",
        "alerts[0].url",
        "${UNSET_SECRET}, which is not set",
    ),
    (
        "[[alerts]]\ntype = 'log'\n[[alerts]]\ntype = 'log'\nname = 'log'\n",
        "alerts[1].name",
        "already named",
    ),
    ("alerts = 'all'\n", "alerts", "array of tables"),
    ("[alerting]\nresend_interval = 0\n", "alerting.resend_interval", "seconds > 0"),
    ("[alerting]\nexternal_url = 'watchdog.local'\n", "alerting.external_url", "http(s) URL"),
    ("[incidents]\nmax_count = 0\n", "incidents.max_count", "integer from 1"),
    ("[incidents]\nenabled = 'yes'\n", "incidents.enabled", "true or false"),
    ("[[rules]]\nseverity = 'page'\n", "rules[0].severity", "info, warning, critical"),
    ("[limits]\nmax_label_services = 0\n", "limits.max_label_services", "integer from 1"),
    ("[limits]\nmax_label_services = -5\n", "limits.max_label_services", "integer from 1"),
    ("[limits]\nmax_label_services = 'all'\n", "limits.max_label_services", "integer from 1"),
    ("[limits]\nmax_label_services = 1.5\n", "limits.max_label_services", "integer from 1"),
]


@pytest.mark.parametrize(("text", "key", "words"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_config_names_key_and_expectation(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ={})
    assert caught.value.key == key
    assert words in str(caught.value)
    assert str(caught.value).startswith(f"config error: {key}: ")


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"AGENTS_WATCHDOG_PROT": "1"}, "AGENTS_WATCHDOG_PROT"),
        ({"AGENTS_WATCHDOG_THRESHOLD_RESPONSE": "soon"}, "thresholds.response"),
        ({"AGENTS_WATCHDOG_THRESHOLD_NOPE": "3"}, "thresholds.nope"),
        ({"AGENTS_WATCHDOG_PORT": "x"}, "server.port"),
    ],
)
def test_bad_environment_names_the_variable_or_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ=environ)
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[server]\nprot = 1\n",
            "server.prot: unknown key; did you mean 'port'? expected one of: host, log_level, "
            "max_body_bytes, port, token, unix_socket",
        ),
        (
            "[thresholds]\nrespones = 3\n",
            "thresholds.respones: unknown key; did you mean 'response'?",
        ),
        ("[alerter]\n", "alerter: unknown key; did you mean 'alerts'?"),
        (
            "[[rules]]\nthreshold = 'auto'\nflor = 2\n",
            "rules[0].flor: unknown key; did you mean 'floor'?",
        ),
        (
            "[[alerts]]\ntype = 'log'\nkind = ['agent']\n",
            "alerts[0].kind: unknown key; did you mean 'kinds'?",
        ),
        (
            "[[rules]]\nthreshold = 3\ncolour = 'red'\n",
            "rules[0].colour: unknown key; expected one of: ",
        ),
        # `auto` holds a rule's learned settings, but the file writes them beside the rule.
        ("[[rules]]\nthreshold = 3\nauto = { floor = 1 }\n", "rules[0].auto: unknown key;"),
    ],
)
def test_unknown_key_names_the_nearest_known_one(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ={})
    assert str(caught.value).startswith(f"config error: {message}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[server]\nport = '8000'\n",
            "server.port: expected an integer from 0 to 65535, got '8000'",
        ),
        (
            "[thresholds]\nresponse = inf\n",
            "thresholds.response: expected a number of seconds > 0, got inf",
        ),
        (
            "[thresholds]\nresponse = nan\n",
            "thresholds.response: expected a number of seconds > 0, got nan",
        ),
        ("[abort]\ndry_run = 1\n", "abort.dry_run: expected true or false, got 1"),
        (
            "[[alerts]]\nname = 'x'\n",
            "alerts[0].type: expected one of log, webhook, alertmanager, slack, got None",
        ),
        (
            "[[rules]]\nthreshold = 'auto'\nceiling = 2\nfloor = 5\n",
            "rules[0].ceiling: must be at least floor (5), got 2",
        ),
    ],
)
def test_file_values_are_taken_as_their_toml_types(tmp_path: Path, text: str, message: str) -> None:
    """The file is read strictly: a number written as a string, an infinite threshold or
    a 1 for true is refused, with the value as the file gave it."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ={})
    assert str(caught.value) == f"config error: {message}"


def test_environment_text_is_converted_by_the_keys_type() -> None:
    config = load_config(
        environ={
            "AGENTS_WATCHDOG_PORT": "8100",
            "AGENTS_WATCHDOG_LOG_LEVEL": "DEBUG",
            "AGENTS_WATCHDOG_MAX_BODY_BYTES": "2048",
            "AGENTS_WATCHDOG_THRESHOLD_RESPONSE": "1.5",
            "AGENTS_WATCHDOG_THRESHOLD_DEFAULT": "45",
            "AGENTS_WATCHDOG_MAX_DURATION_TRACE": "3600",
            "AGENTS_WATCHDOG_TOKEN": "",
        }
    )
    assert (config.server.port, config.server.log_level, config.server.max_body_bytes) == (
        8100,
        "debug",
        2048,
    )
    assert config.server.token is None  # set and blank is no token
    assert config.thresholds.by_kind["response"] == 1.5
    assert config.thresholds.by_kind["default"] == 45.0
    assert dict(config.thresholds.max_duration) == {"trace": 3600.0}


@pytest.mark.parametrize("value", ["inf", "nan", "-3", "null", "1e999", "soon"])
def test_environment_threshold_must_be_a_finite_positive_number(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"AGENTS_WATCHDOG_THRESHOLD_GUARDRAIL": value})
    assert str(caught.value) == (
        f"config error: thresholds.guardrail: expected a number of seconds > 0, got {value!r}"
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", environ={})


def test_non_loopback_with_token_is_allowed() -> None:
    config = load_config(environ={"AGENTS_WATCHDOG_HOST": "0.0.0.0", "AGENTS_WATCHDOG_TOKEN": "x"})
    assert not config.server.loopback
    assert load_config(environ={"AGENTS_WATCHDOG_HOST": "::1"}).server.loopback


def test_cli_exits_non_zero_with_the_message(tmp_path: Path) -> None:
    path = write(tmp_path, "[thresholds]\nresponse = 'fast'\n")
    result = subprocess.run(
        [sys.executable, "-m", "watchdog.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "config error: thresholds.response: expected a number of seconds > 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_sinks_with_filters_and_secrets_from_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[alerts]]
type = "slack"
name = "oncall"
url = "https://hooks.example/services/${SLACK_PATH}"
severities = ["critical"]
[[alerts]]
type = "webhook"
url = "http://receiver.local/hook"
headers = { Authorization = "Bearer ${HOOK_TOKEN}" }
services = ["billing-*"]
kinds = ["response", "function"]
""",
    )
    config = load_config(path, environ={"SLACK_PATH": "T/B/xyz", "HOOK_TOKEN": "t0k"})
    slack, hook = config.sinks
    assert (slack.name, slack.url) == ("oncall", "https://hooks.example/services/T/B/xyz")
    assert hook.name == "webhook-1"
    assert hook.headers == {"Authorization": "Bearer t0k"}
    assert hook.accepts("billing-eu", "response", "warning")
    assert not hook.accepts("search", "response", "warning")
    assert not hook.accepts("billing-eu", "agent", "warning")
    assert slack.accepts("x", "agent", "critical") and not slack.accepts("x", "agent", "warning")


def test_default_incident_path_follows_xdg(tmp_path: Path) -> None:
    config = load_config(environ={"XDG_DATA_HOME": str(tmp_path)})
    assert config.incidents.path == str(tmp_path / "agents-watchdog" / "incidents.db")
    assert [sink.type for sink in config.sinks] == ["log"]


def test_metric_label_cap(tmp_path: Path) -> None:
    assert load_config(environ={}).limits.max_label_services == 100
    config = load_config(write(tmp_path, "[limits]\nmax_label_services = 7\n"), environ={})
    assert config.limits.max_label_services == 7


# What the kubelet puts into every container of a pod (service links are on by default)
# when the pod's namespace has a Service named agents-watchdog with a cluster IP: here
# one with a TCP port named `watchdog`, a UDP port named `stats` and an SCTP port named
# `peer-link` (dashes become underscores).
SERVICE_LINKS = {
    "AGENTS_WATCHDOG_PORT": "tcp://10.0.0.7:9750",  # the first port, Docker-link style
    "AGENTS_WATCHDOG_SERVICE_HOST": "10.0.0.7",
    "AGENTS_WATCHDOG_SERVICE_PORT": "9750",
    "AGENTS_WATCHDOG_SERVICE_PORT_WATCHDOG": "9750",
    "AGENTS_WATCHDOG_SERVICE_PORT_STATS": "9751",
    "AGENTS_WATCHDOG_SERVICE_PORT_PEER_LINK": "9752",
    "AGENTS_WATCHDOG_PORT_9750_TCP": "tcp://10.0.0.7:9750",
    "AGENTS_WATCHDOG_PORT_9750_TCP_PROTO": "tcp",
    "AGENTS_WATCHDOG_PORT_9750_TCP_PORT": "9750",
    "AGENTS_WATCHDOG_PORT_9750_TCP_ADDR": "10.0.0.7",
    "AGENTS_WATCHDOG_PORT_9751_UDP": "udp://10.0.0.7:9751",
    "AGENTS_WATCHDOG_PORT_9751_UDP_PROTO": "udp",
    "AGENTS_WATCHDOG_PORT_9751_UDP_PORT": "9751",
    "AGENTS_WATCHDOG_PORT_9751_UDP_ADDR": "10.0.0.7",
    "AGENTS_WATCHDOG_PORT_9752_SCTP": "sctp://10.0.0.7:9752",
    "AGENTS_WATCHDOG_PORT_9752_SCTP_PROTO": "sctp",
    "AGENTS_WATCHDOG_PORT_9752_SCTP_PORT": "9752",
    "AGENTS_WATCHDOG_PORT_9752_SCTP_ADDR": "10.0.0.7",
}


def test_kubernetes_service_links_are_ignored_with_a_debug_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pod beside a Service named agents-watchdog loads the same config as a clean
    environment, and each injected variable is named in a DEBUG line."""
    caplog.set_level(logging.DEBUG, logger="watchdog.sidecar")
    config = load_config(environ=SERVICE_LINKS)
    clean = load_config(environ={})
    assert config.server == clean.server
    assert config.server.port == 9750
    assert dict(config.thresholds.by_kind) == dict(DEFAULT_THRESHOLDS)
    assert dict(config.thresholds.max_duration) == {}
    ignored = {
        getattr(record, "fields", {}).get("variable")  # extra={"fields": ...}, as logs.py reads
        for record in caplog.records
        if record.levelno == logging.DEBUG and record.getMessage() == "service_link_ignored"
    }
    assert ignored == set(SERVICE_LINKS)


@pytest.mark.parametrize(
    "link",
    ["tcp://10.0.0.7:9750", "udp://10.0.0.7:53", "sctp://10.0.0.7:9752", "tcp://[fd00::7]:9750"],
)
def test_service_link_port_is_ignored_but_a_number_still_sets_the_port(
    tmp_path: Path, link: str
) -> None:
    """AGENTS_WATCHDOG_PORT is both the sidecar's port and the first port's service
    link: a link leaves the file's port alone, a number still overrides it."""
    path = write(tmp_path, "[server]\nport = 8000\n")
    assert load_config(path, environ={"AGENTS_WATCHDOG_PORT": link}).server.port == 8000
    assert load_config(path, environ={"AGENTS_WATCHDOG_PORT": "9999"}).server.port == 9999


@pytest.mark.parametrize(
    "value", ["http://10.0.0.7:9750", "tcp://10.0.0.7", "tcp://", "tcp://10.0.0.7:x", "97 50"]
)
def test_port_that_is_neither_number_nor_service_link_is_still_an_error(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={**SERVICE_LINKS, "AGENTS_WATCHDOG_PORT": value})
    assert str(caught.value) == (
        f"config error: server.port: expected an integer from 0 to 65535, got {value!r}"
    )


@pytest.mark.parametrize(
    "name",
    [
        "AGENTS_WATCHDOG_TOKN",
        # Near misses of the service-link names are not links either.
        "AGENTS_WATCHDOG_SERVICE_HOSTS",
        "AGENTS_WATCHDOG_SERVICE_PORT_",
        "AGENTS_WATCHDOG_SERVICE_PORT__WATCHDOG",
        "AGENTS_WATCHDOG_PORT_9750",
        "AGENTS_WATCHDOG_PORT_9750_HTTP",
        "AGENTS_WATCHDOG_PORT_X_TCP",
        "AGENTS_WATCHDOG_PORT_9750_TCP_HOST",
    ],
)
def test_unknown_variable_beside_service_links_is_still_refused(name: str) -> None:
    """Tolerating service links must not hide a typo: the error names the variable,
    word for word as before."""
    with pytest.raises(ConfigError) as caught:
        load_config(environ={**SERVICE_LINKS, name: "tcp://10.0.0.7:9750"})
    assert caught.value.key == name
    assert str(caught.value) == (
        f"config error: {name}: unknown environment variable; expected AGENTS_WATCHDOG_HOST, "
        "_PORT, _TOKEN, _LOG_LEVEL, _MAX_BODY_BYTES, _UNIX_SOCKET, _CONFIG, _THRESHOLD_<KIND> "
        "or _MAX_DURATION_<KIND>"
    )


def test_sidecar_process_starts_beside_service_links(tmp_path: Path) -> None:
    """The real `agents-watchdog serve`, in the environment the kubelet gives a pod beside
    a Service named agents-watchdog, starts and answers /healthz instead of exiting 2.
    No --port flag, so AGENTS_WATCHDOG_PORT=tcp://... reaches the loader, and the file's
    port 0 must survive it."""
    path = write(tmp_path, "[server]\nport = 0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(SERVICE_LINKS, XDG_DATA_HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "watchdog.cli", "serve", "--config", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    try:
        seen: list[str] = []
        url = None
        # Ends at "listening" or when the process exits; pytest's timeout bounds a hang.
        for line in process.stderr:
            seen.append(line)
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("event") == "listening":
                url = str(entry["url"])
                break
        assert url is not None, f"exit {process.wait(10)}: {''.join(seen)}"
        assert not url.endswith(":9750"), url  # the file's port 0, not the link's 9750
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)  # drains stderr while it shuts down
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        process.stderr.close()
