"""Sidecar configuration: TOML file, then ``AGENTS_WATCHDOG_*`` environment, then flags.

Every error names the key and the expected form, e.g.
``config error: thresholds.response: expected a number of seconds > 0, got "fast"``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

__all__ = [
    "CONTAINER_KINDS",
    "DEFAULT_THRESHOLDS",
    "KINDS",
    "AutoThreshold",
    "Config",
    "ConfigError",
    "LearningConfig",
    "LimitsConfig",
    "Rule",
    "Resolved",
    "ServerConfig",
    "SinkConfig",
    "Thresholds",
    "load_config",
]

# The span kinds the SDK emits, plus `trace` for the trace itself.
KINDS: Final = frozenset(
    {
        "trace",
        "task",
        "agent",
        "turn",
        "response",
        "generation",
        "function",
        "handoff",
        "guardrail",
        "custom",
        "mcp_tools",
        "transcription",
        "speech",
        "speech_group",
    }
)
# Containers are judged by idleness of their subtree, leaves by time open.
CONTAINER_KINDS: Final = frozenset({"trace", "task", "agent", "turn"})
ACTIONS: Final = ("alert", "timeout", "cancel", "terminate", "kill")
Action = Literal["alert", "timeout", "cancel", "terminate", "kill"]
SEVERITIES: Final = ("info", "warning", "critical")
SINK_TYPES: Final = ("log", "webhook", "alertmanager", "slack")

DEFAULT_THRESHOLDS: Final[Mapping[str, float]] = {
    "default": 120.0,
    # Reasoning models legitimately think for minutes; the OpenAI client itself
    # gives up on a read only after 600 s.
    "response": 300.0,
    "generation": 300.0,
    "function": 300.0,
    "mcp_tools": 60.0,
    "handoff": 60.0,
    # Containers: seconds with no span starting or ending anywhere below them while
    # none of their descendants is open (an open descendant is judged on its own).
    "trace": 600.0,
    "task": 600.0,
    "agent": 600.0,
    "turn": 600.0,
}
DEFAULT_PORT: Final = 9750
ENV_PREFIX: Final = "AGENTS_WATCHDOG_"
# Read by the app's processor, not by the sidecar; allowed in a shared environment.
_APP_ONLY_ENV: Final = frozenset({"AGENTS_WATCHDOG_URL", "AGENTS_WATCHDOG_SERVICE"})


class ConfigError(ValueError):
    """A configuration value is missing, mistyped or out of range; the message says which."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config error: {key}: {message}")
        self.key = key


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: where the sidecar listens and what it accepts."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    log_level: str = "info"
    unix_socket: str = ""

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class AutoThreshold:
    """``threshold = "auto"``: the threshold follows ``factor`` times a high ``quantile``
    of the kind/name's recent completed durations, kept within ``[floor, ceiling]``.

    Until ``min_samples`` durations are known the ceiling applies; ``ceiling = None``
    means the kind's configured threshold, so learning only ever tightens it.
    """

    floor: float = 1.0
    ceiling: float | None = None
    factor: float = 3.0
    quantile: float = 0.99
    min_samples: int = 20


@dataclass(frozen=True)
class Rule:
    """One ``[[rules]]`` entry; ``None`` fields fall through to the kind's defaults."""

    kind: str | None = None
    name: str = "*"
    threshold: float | None = None
    action: Action = "alert"
    severity: str = "warning"
    auto: AutoThreshold | None = None
    # A glob over the hung span's probable cause: such a rule applies once the cause is
    # known (with the stacks), to a span whose first matching rule takes no action.
    cause: str | None = None

    def matches(self, kind: str, name: str, cause: str | None = None) -> bool:
        """True when this rule applies to a span of ``kind`` named ``name`` (and, for a
        rule with ``cause``, whose probable cause is ``cause``)."""
        if self.cause is not None and (cause is None or not fnmatch.fnmatchcase(cause, self.cause)):
            return False
        return (self.kind is None or self.kind == kind) and fnmatch.fnmatchcase(name, self.name)


class Resolved(NamedTuple):
    """The settings in force for one span. With ``auto`` set, ``threshold`` is the
    ceiling, in force until enough durations are learned; ``setting`` names the config
    key the threshold came from (``thresholds.response``, ``rules[2]``)."""

    threshold: float
    action: Action
    max_duration: float | None
    severity: str
    auto: AutoThreshold | None = None
    setting: str = ""


@dataclass(frozen=True)
class Thresholds:
    """Resolves the threshold, action and optional whole-span deadline of a span."""

    by_kind: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    max_duration: Mapping[str, float] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()

    def base(self, kind: str) -> tuple[float, str]:
        """The kind's threshold, and the key it comes from."""
        if kind in self.by_kind:
            return self.by_kind[kind], f"thresholds.{kind}"
        return self.by_kind["default"], "thresholds.default"

    def resolve(self, kind: str, name: str) -> Resolved:
        """What applies to a span of ``kind`` named ``name``: first matching rule wins."""
        base, setting = self.base(kind)
        cap = self.max_duration.get(kind)
        for index, rule in enumerate(self.rules):
            if rule.matches(kind, name):
                threshold, auto = base, rule.auto
                if auto is not None:
                    threshold = base if auto.ceiling is None else auto.ceiling
                    # A floor above the kind's threshold wins: the floor is explicit.
                    threshold = max(threshold, auto.floor)
                    setting = f"rules[{index}]"
                elif rule.threshold is not None:
                    threshold, setting = rule.threshold, f"rules[{index}]"
                return Resolved(threshold, rule.action, cap, rule.severity, auto, setting)
        return Resolved(base, "alert", cap, "warning", None, setting)

    def action_for_cause(self, kind: str, name: str, cause: str) -> tuple[Action, str] | None:
        """The action of the first rule with a ``cause`` that matches a hung span whose
        probable cause is ``cause``, and its key (``rules[3]``); None when none does."""
        for index, rule in enumerate(self.rules):
            if rule.cause is not None and rule.matches(kind, name, cause):
                return rule.action, f"rules[{index}]"
        return None

    def edges(self) -> list[float]:
        """Every configured threshold, for use as histogram bucket edges."""
        values = set(self.by_kind.values()) | set(self.max_duration.values())
        values |= {r.threshold for r in self.rules if r.threshold is not None}
        values |= {r.auto.floor for r in self.rules if r.auto is not None}
        values |= {r.auto.ceiling for r in self.rules if r.auto and r.auto.ceiling is not None}
        return sorted(values)


@dataclass(frozen=True)
class SinkConfig:
    """One ``[[alerts]]`` table: where alerts go, and which ones."""

    type: str
    name: str
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    timeout: float = 10.0

    def accepts(self, service: str, kind: str, severity: str) -> bool:
        """True when this sink's filter lets an alert with these labels through."""
        return (
            (not self.services or any(fnmatch.fnmatchcase(service, g) for g in self.services))
            # Process-level alerts have no kind: a kind filter does not hold them back.
            and (not self.kinds or not kind or kind in self.kinds)
            and (not self.severities or severity in self.severities)
        )


# With no [[alerts]] table, alerts still reach the sidecar's own log.
DEFAULT_SINKS: Final = (SinkConfig(type="log", name="log"),)


@dataclass(frozen=True)
class AlertingConfig:
    """``[alerting]``: delivery settings shared by every sink."""

    external_url: str = ""
    resend_interval: float = 60.0
    give_up_after: float = 300.0
    queue_size: int = 1000
    # How long a hung-span alert waits for the span's stack before it is announced
    # without one (stateful Alertmanager gets it at once, and the stack as an update).
    stack_wait: float = 1.5


@dataclass(frozen=True)
class AbortConfig:
    """``[abort]``: how the abort ladder climbs."""

    grace_seconds: float = 10.0
    dry_run: bool = False
    max_signals: int = 5
    window_seconds: float = 300.0


@dataclass(frozen=True)
class ProcessConfig:
    """``[processes]``: when a silent process is unresponsive, how long the dead linger."""

    unresponsive_after: float = 5.0  # heartbeat intervals
    orphan_retention: float = 300.0  # seconds a dead process's orphans stay listed
    loop_blocked_after: float = 1.0  # seconds an event loop may lag before it is blocked


@dataclass(frozen=True)
class LearningConfig:
    """``[learning]``: memory and persistence of the durations ``auto`` rules learn from."""

    path: str = ""  # default: learned-durations.json beside the incident database
    window: int = 256  # recent durations kept per kind/name
    max_names: int = 4096  # kind/name pairs remembered; the least recently used go first


@dataclass(frozen=True)
class LimitsConfig:
    """``[limits]``: what one client, or all of them, may cost the sidecar.

    Past a limit the sidecar refuses with a clear 4xx/503 and counts the refusal in
    ``events_rejected_total{reason}``; what it already holds stays as it was. Past
    ``max_label_services`` nothing is refused: metrics fold the service into one label
    value, counted in ``label_overflow_total{label="service"}``.
    """

    max_processes: int = 10_000  # process records: live, unresponsive, dead (retained)
    max_open_spans: int = 100_000  # per process; span starts past it are refused
    # Per process, sustained; a burst of RATE_BURST_SECONDS' worth passes at once.
    max_events_per_second: float = 100_000.0
    max_connections: int = 4096  # open at once; requests past it get 503
    request_timeout: float = 10.0  # seconds a client may take to send one whole request
    # Distinct `service` label values in metrics; later services share "_overflow".
    # A pod runs a few services, a host dozens; each costs up to one histogram per kind.
    max_label_services: int = 100


# How many seconds of max_events_per_second a process may send at once: a processor
# back from an outage sends what it kept (65,536 events by default) in one go.
RATE_BURST_SECONDS: Final = 5.0


@dataclass(frozen=True)
class IncidentConfig:
    """``[incidents]``: the SQLite incident history."""

    enabled: bool = True
    path: str = ""
    max_age_days: float = 30.0
    max_count: int = 10_000
    reconcile_seconds: float = 30.0


def default_incident_path(environ: Mapping[str, str]) -> str:
    """``$XDG_DATA_HOME/agents-watchdog/incidents.db`` (``~/.local/share`` by default)."""
    base = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "agents-watchdog", "incidents.db")


@dataclass(frozen=True)
class Config:
    """The whole sidecar configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    sinks: tuple[SinkConfig, ...] = DEFAULT_SINKS
    incidents: IncidentConfig = field(default_factory=IncidentConfig)
    abort: AbortConfig = field(default_factory=AbortConfig)
    processes: ProcessConfig = field(default_factory=ProcessConfig)
    learning: LearningConfig = field(default_factory=LearningConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    source: str = "defaults"


def _seconds(key: str, value: object) -> float:
    if isinstance(value, str):
        # Environment variables arrive as text; a bad one is reported below as-is.
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"expected a number of seconds > 0, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits (TOML allows any size)
        number = math.inf
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(key, f"expected a number of seconds > 0, got {value!r}")
    return number


def _int(key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, str):
        # Environment variables arrive as text; a bad one is reported below as-is
        # (isdigit() alone would let "²" through to int()).
        with contextlib.suppress(ValueError):
            value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(key, f"expected an integer from {low} to {high}, got {value!r}")
    return value


def _str(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {value!r}")
    return value


def _table(key: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a table, got {value!r}")
    return value


def _reject_unknown(key: str, table: Mapping[str, object], known: set[str]) -> None:
    for name in table:
        if name not in known:
            where = f"{key}.{name}" if key else name
            raise ConfigError(where, f"unknown key; expected one of: {', '.join(sorted(known))}")


def _kind_table(key: str, raw: object, allow_default: bool) -> dict[str, float]:
    table = _table(key, raw)
    known = set(KINDS) | ({"default"} if allow_default else set())
    _reject_unknown(key, table, known)
    return {kind: _seconds(f"{key}.{kind}", value) for kind, value in table.items()}


def _server(raw: Mapping[str, object]) -> ServerConfig:
    _reject_unknown(
        "server", raw, {"host", "port", "token", "max_body_bytes", "log_level", "unix_socket"}
    )
    defaults = ServerConfig()
    host = _str("server.host", raw.get("host", defaults.host))
    port = _int("server.port", raw.get("port", defaults.port), 0, 65535)
    token = raw.get("token", defaults.token)
    if token is not None:
        token = _str("server.token", token) or None
    max_body = _int(
        "server.max_body_bytes", raw.get("max_body_bytes", defaults.max_body_bytes), 1024, 2**30
    )
    level = _str("server.log_level", raw.get("log_level", defaults.log_level)).lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ConfigError(
            "server.log_level", f"expected debug, info, warning or error, got {level!r}"
        )
    unix_socket = _str("server.unix_socket", raw.get("unix_socket", ""))
    if unix_socket and not os.path.isabs(unix_socket):
        raise ConfigError("server.unix_socket", f"expected an absolute path, got {unix_socket!r}")
    server = ServerConfig(host, port, token, max_body, level, unix_socket)
    if not server.loopback and not server.token:
        raise ConfigError(
            "server.token",
            f"binding to {host!r} (not loopback) requires a token "
            "(set server.token or AGENTS_WATCHDOG_TOKEN)",
        )
    return server


def _rules(raw: object) -> tuple[Rule, ...]:
    if not isinstance(raw, list):
        raise ConfigError("rules", f"expected an array of tables ([[rules]]), got {raw!r}")
    rules = []
    for index, entry in enumerate(raw):
        key = f"rules[{index}]"
        table = _table(key, entry)
        _reject_unknown(
            key,
            table,
            {"kind", "name", "cause", "threshold", "action", "severity", *_AUTO_KEYS},
        )
        kind = table.get("kind")
        if kind is not None and (not isinstance(kind, str) or kind not in KINDS):
            raise ConfigError(
                f"{key}.kind", f"expected one of {', '.join(sorted(KINDS))}, got {kind!r}"
            )
        name = _str(f"{key}.name", table.get("name", "*"))
        cause = None if "cause" not in table else _str(f"{key}.cause", table["cause"])
        threshold = table.get("threshold")
        action = table.get("action", "alert")
        if action not in ACTIONS:
            raise ConfigError(
                f"{key}.action", f"expected one of {', '.join(ACTIONS)}, got {action!r}"
            )
        severity = table.get("severity", "warning")
        if severity not in SEVERITIES:
            raise ConfigError(
                f"{key}.severity", f"expected one of {', '.join(SEVERITIES)}, got {severity!r}"
            )
        if threshold is None and "action" not in table and "severity" not in table:
            raise ConfigError(key, "a rule needs at least one of threshold, action, severity")
        if cause is not None and (threshold is not None or "action" not in table):
            raise ConfigError(
                f"{key}.cause",
                "a rule with cause gives an action only (the cause is known once the span "
                "has hung, after its threshold)",
            )
        if isinstance(threshold, str) and threshold != "auto":
            try:
                float(threshold)
            except ValueError:
                raise ConfigError(
                    f"{key}.threshold",
                    f'expected a number of seconds > 0 or "auto", got {threshold!r}',
                ) from None
        auto = _auto(key, table) if threshold == "auto" else None
        if auto is None:
            for extra in _AUTO_KEYS & table.keys():
                raise ConfigError(f"{key}.{extra}", 'only allowed with threshold = "auto"')
        rules.append(
            Rule(
                kind=kind,
                name=name,
                threshold=None
                if threshold is None or auto is not None
                else _seconds(f"{key}.threshold", threshold),
                action=action,
                severity=severity,
                auto=auto,
                cause=cause,
            )
        )
    return tuple(rules)


_AUTO_KEYS: Final = frozenset({"floor", "ceiling", "factor", "quantile", "min_samples"})


def _auto(key: str, table: Mapping[str, object]) -> AutoThreshold:
    d = AutoThreshold()
    floor = _seconds(f"{key}.floor", table.get("floor", d.floor))
    ceiling = table.get("ceiling")
    ceiling = None if ceiling is None else _seconds(f"{key}.ceiling", ceiling)
    if ceiling is not None and ceiling < floor:
        raise ConfigError(f"{key}.ceiling", f"must be at least floor ({floor:g}), got {ceiling:g}")
    factor = table.get("factor", d.factor)
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not 1 <= factor <= 1000:
        raise ConfigError(f"{key}.factor", f"expected a number from 1 to 1000, got {factor!r}")
    quantile = table.get("quantile", d.quantile)
    if (
        isinstance(quantile, bool)
        or not isinstance(quantile, int | float)
        or not 0.5 <= quantile <= 1
    ):
        raise ConfigError(
            f"{key}.quantile", f"expected a number from 0.5 to 1 (0.99: p99), got {quantile!r}"
        )
    return AutoThreshold(
        floor=floor,
        ceiling=ceiling,
        factor=float(factor),
        quantile=float(quantile),
        min_samples=_int(f"{key}.min_samples", table.get("min_samples", d.min_samples), 1, 100_000),
    )


logger = logging.getLogger("watchdog.sidecar")

# Kubernetes service links: for a Service named agents-watchdog with a cluster IP, the
# kubelet puts these into every container of every pod in its namespace (unless the pod
# sets enableServiceLinks: false), so nobody meant them as settings. Matched by the names
# the kubelet writes (suffix after the prefix), and nothing looser: a typo of a real
# variable must still be refused. A port name (`peer-link`) arrives as PEER_LINK.
_SERVICE_LINK_NAME: Final = re.compile(
    r"SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9]+)*"
    r"|PORT_[0-9]+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?"
)
# AGENTS_WATCHDOG_PORT is also the first port's Docker-style link, `tcp://10.0.0.7:9750`
# (an IPv6 cluster IP in brackets), and the sidecar's own port as a plain number.
_SERVICE_LINK_URL: Final = re.compile(r"(?:tcp|udp|sctp)://\S+:[0-9]+")


def _is_service_link(rest: str, value: str) -> bool:
    """Whether ``AGENTS_WATCHDOG_<rest>=<value>`` is one that Kubernetes service links
    inject, not a setting: ``PORT`` only with a ``proto://host:port`` value."""
    if rest == "PORT":
        return _SERVICE_LINK_URL.fullmatch(value) is not None
    return _SERVICE_LINK_NAME.fullmatch(rest) is not None


def _overlay_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Apply ``AGENTS_WATCHDOG_*`` variables on top of the file's values.

    Variables that Kubernetes service links inject are skipped, each with a DEBUG line
    naming it; any other unknown ``AGENTS_WATCHDOG_*`` variable raises
    :class:`ConfigError` naming it.
    """
    server = data.setdefault("server", {})
    thresholds = data.setdefault("thresholds", {})
    max_duration = data.setdefault("max_duration", {})
    simple = {
        "HOST": "host",
        "PORT": "port",
        "TOKEN": "token",
        "LOG_LEVEL": "log_level",
        "MAX_BODY_BYTES": "max_body_bytes",
        "UNIX_SOCKET": "unix_socket",
    }
    for name, value in environ.items():
        if (
            not name.startswith(ENV_PREFIX)
            or name in _APP_ONLY_ENV
            or name == "AGENTS_WATCHDOG_CONFIG"
        ):
            continue
        rest = name[len(ENV_PREFIX) :]
        if _is_service_link(rest, value):
            logger.debug("service_link_ignored", extra={"fields": {"variable": name}})
            continue
        if rest in simple:
            server[simple[rest]] = value
        elif rest.startswith("THRESHOLD_"):
            thresholds[rest[len("THRESHOLD_") :].lower()] = value
        elif rest.startswith("MAX_DURATION_"):
            max_duration[rest[len("MAX_DURATION_") :].lower()] = value
        else:
            raise ConfigError(
                name,
                "unknown environment variable; expected AGENTS_WATCHDOG_HOST, _PORT, _TOKEN, "
                "_LOG_LEVEL, _MAX_BODY_BYTES, _UNIX_SOCKET, _CONFIG, _THRESHOLD_<KIND> or "
                "_MAX_DURATION_<KIND>",
            )


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration: defaults < TOML file < environment < ``overrides``.

    ``path`` defaults to ``$AGENTS_WATCHDOG_CONFIG`` when set. ``overrides`` holds
    ``[server]`` keys given as command-line flags. Raises :class:`ConfigError`.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get("AGENTS_WATCHDOG_CONFIG") or None
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {source}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{source} is not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError("--config", f"{source} is not UTF-8 text") from None
    _reject_unknown(
        "",
        data,
        {
            "server",
            "thresholds",
            "max_duration",
            "rules",
            "alerting",
            "alerts",
            "incidents",
            "abort",
            "processes",
            "learning",
            "limits",
        },
    )
    sections = ("server", "thresholds", "max_duration", "alerting", "incidents", "abort")
    for key in (*sections, "processes", "learning", "limits"):
        data[key] = dict(_table(key, data.get(key, {})))
    _overlay_env(data, environ)
    for key, value in (overrides or {}).items():
        if value is not None:
            data["server"][key] = value

    incidents = _incidents(data["incidents"], environ)
    by_kind = dict(DEFAULT_THRESHOLDS)
    by_kind.update(_kind_table("thresholds", data["thresholds"], allow_default=True))
    return Config(
        server=_server(data["server"]),
        thresholds=Thresholds(
            by_kind=by_kind,
            max_duration=_kind_table("max_duration", data["max_duration"], allow_default=False),
            rules=_rules(data.get("rules", [])),
        ),
        alerting=_alerting(data["alerting"]),
        sinks=_sinks(data.get("alerts"), environ),
        incidents=incidents,
        abort=_abort(data["abort"]),
        processes=_processes(data["processes"]),
        learning=_learning(data["learning"], incidents.path),
        limits=_limits(data["limits"]),
        source=source,
    )


def _limits(raw: Mapping[str, object]) -> LimitsConfig:
    _reject_unknown(
        "limits",
        raw,
        {
            "max_processes",
            "max_open_spans",
            "max_events_per_second",
            "max_connections",
            "request_timeout",
            "max_label_services",
        },
    )
    d = LimitsConfig()
    return LimitsConfig(
        max_processes=_int(
            "limits.max_processes", raw.get("max_processes", d.max_processes), 1, 10_000_000
        ),
        max_open_spans=_int(
            "limits.max_open_spans", raw.get("max_open_spans", d.max_open_spans), 1, 100_000_000
        ),
        max_events_per_second=_rate(
            "limits.max_events_per_second",
            raw.get("max_events_per_second", d.max_events_per_second),
        ),
        max_connections=_int(
            "limits.max_connections", raw.get("max_connections", d.max_connections), 1, 1_000_000
        ),
        request_timeout=_seconds(
            "limits.request_timeout", raw.get("request_timeout", d.request_timeout)
        ),
        max_label_services=_int(
            "limits.max_label_services",
            raw.get("max_label_services", d.max_label_services),
            1,
            100_000,
        ),
    )


def _rate(key: str, value: object) -> float:
    try:
        return _seconds(key, value)
    except ConfigError:
        raise ConfigError(
            key, f"expected a number of events per second > 0, got {value!r}"
        ) from None


def _learning(raw: Mapping[str, object], incident_path: str) -> LearningConfig:
    _reject_unknown("learning", raw, {"path", "window", "max_names"})
    d = LearningConfig()
    path = _str("learning.path", raw.get("path", "")) or os.path.join(
        os.path.dirname(incident_path), "learned-durations.json"
    )
    return LearningConfig(
        path=path,
        window=_int("learning.window", raw.get("window", d.window), 16, 100_000),
        max_names=_int("learning.max_names", raw.get("max_names", d.max_names), 1, 1_000_000),
    )


def _processes(raw: Mapping[str, object]) -> ProcessConfig:
    _reject_unknown(
        "processes", raw, {"unresponsive_after", "orphan_retention", "loop_blocked_after"}
    )
    d = ProcessConfig()
    return ProcessConfig(
        unresponsive_after=_seconds(
            "processes.unresponsive_after", raw.get("unresponsive_after", d.unresponsive_after)
        ),
        orphan_retention=_seconds(
            "processes.orphan_retention", raw.get("orphan_retention", d.orphan_retention)
        ),
        loop_blocked_after=_seconds(
            "processes.loop_blocked_after", raw.get("loop_blocked_after", d.loop_blocked_after)
        ),
    )


def _abort(raw: Mapping[str, object]) -> AbortConfig:
    _reject_unknown("abort", raw, {"grace_seconds", "dry_run", "max_signals", "window_seconds"})
    dry_run = raw.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ConfigError("abort.dry_run", f"expected true or false, got {dry_run!r}")
    return AbortConfig(
        grace_seconds=_seconds("abort.grace_seconds", raw.get("grace_seconds", 10.0)),
        dry_run=dry_run,
        max_signals=_int("abort.max_signals", raw.get("max_signals", 5), 0, 10_000),
        window_seconds=_seconds("abort.window_seconds", raw.get("window_seconds", 300.0)),
    )


def _alerting(raw: Mapping[str, object]) -> AlertingConfig:
    _reject_unknown(
        "alerting",
        raw,
        {"external_url", "resend_interval", "give_up_after", "queue_size", "stack_wait"},
    )
    d = AlertingConfig()
    url = _str("alerting.external_url", raw.get("external_url", d.external_url)).rstrip("/")
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError("alerting.external_url", f"expected an http(s) URL, got {url!r}")
    return AlertingConfig(
        external_url=url,
        resend_interval=_seconds(
            "alerting.resend_interval", raw.get("resend_interval", d.resend_interval)
        ),
        give_up_after=_seconds("alerting.give_up_after", raw.get("give_up_after", d.give_up_after)),
        queue_size=_int("alerting.queue_size", raw.get("queue_size", d.queue_size), 1, 1_000_000),
        stack_wait=_seconds_or_zero("alerting.stack_wait", raw.get("stack_wait", d.stack_wait)),
    )


def _seconds_or_zero(key: str, value: object) -> float:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    try:
        return _seconds(key, value)
    except ConfigError:
        raise ConfigError(key, f"expected a number of seconds >= 0, got {value!r}") from None


def _expand(key: str, text: str, environ: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` with the environment's value: secrets stay out of the file."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ConfigError(key, f"refers to ${{{name}}}, which is not set in the environment")
        return environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value, text)


def _globs(
    key: str, raw: object, allowed: tuple[str, ...] | frozenset[str] | None
) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ConfigError(key, f"expected a list of strings, got {raw!r}")
    if allowed is not None:
        for item in raw:
            if item not in allowed:
                raise ConfigError(
                    key, f"expected values from {', '.join(sorted(allowed))}, got {item!r}"
                )
    return tuple(raw)


def _sinks(raw: object, environ: Mapping[str, str]) -> tuple[SinkConfig, ...]:
    if raw is None:
        return DEFAULT_SINKS
    if not isinstance(raw, list):
        raise ConfigError("alerts", f"expected an array of tables ([[alerts]]), got {raw!r}")
    sinks: list[SinkConfig] = []
    for index, entry in enumerate(raw):
        key = f"alerts[{index}]"
        table = _table(key, entry)
        _reject_unknown(
            key,
            table,
            {"type", "name", "url", "headers", "services", "kinds", "severities", "timeout"},
        )
        kind = table.get("type")
        if kind not in SINK_TYPES:
            raise ConfigError(
                f"{key}.type", f"expected one of {', '.join(SINK_TYPES)}, got {kind!r}"
            )
        name = _str(f"{key}.name", table.get("name", kind if index == 0 else f"{kind}-{index}"))
        if any(sink.name == name for sink in sinks):
            raise ConfigError(f"{key}.name", f"another sink is already named {name!r}")
        url = _expand(f"{key}.url", _str(f"{key}.url", table.get("url", "")), environ)
        if kind != "log" and not url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}.url", f"a {kind} sink needs an http(s) url, got {url!r}")
        headers = _table(f"{key}.headers", table.get("headers", {}))
        expanded = {
            str(h): _expand(f"{key}.headers.{h}", _str(f"{key}.headers.{h}", v), environ)
            for h, v in headers.items()
        }
        sinks.append(
            SinkConfig(
                type=str(kind),
                name=name,
                url=url,
                headers=expanded,
                services=_globs(f"{key}.services", table.get("services", []), None),
                kinds=_globs(f"{key}.kinds", table.get("kinds", []), KINDS),
                severities=_globs(f"{key}.severities", table.get("severities", []), SEVERITIES),
                timeout=_seconds(f"{key}.timeout", table.get("timeout", 10.0)),
            )
        )
    return tuple(sinks)


def _incidents(raw: Mapping[str, object], environ: Mapping[str, str]) -> IncidentConfig:
    _reject_unknown(
        "incidents", raw, {"enabled", "path", "max_age_days", "max_count", "reconcile_seconds"}
    )
    d = IncidentConfig()
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("incidents.enabled", f"expected true or false, got {enabled!r}")
    path = _str("incidents.path", raw.get("path", "")) or default_incident_path(environ)
    return IncidentConfig(
        enabled=enabled,
        path=path,
        max_age_days=_seconds("incidents.max_age_days", raw.get("max_age_days", d.max_age_days)),
        max_count=_int("incidents.max_count", raw.get("max_count", d.max_count), 1, 10**9),
        reconcile_seconds=_seconds(
            "incidents.reconcile_seconds", raw.get("reconcile_seconds", d.reconcile_seconds)
        ),
    )
