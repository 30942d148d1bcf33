"""Configuration: layering, and errors that name the key and the expected form."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from watchdog.sidecar.config import DEFAULT_THRESHOLDS, ConfigError, Rule, load_config


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
        "alert, cancel, terminate, kill",
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
