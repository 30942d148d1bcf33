"""Sidecar configuration: TOML file, then ``AGENTS_WATCHDOG_*`` environment, then flags.

Each key is declared once, as a field of a msgspec Struct below (or, for the threshold
policy, in ``policy.py``): type, constraints, default and meaning. The loader decodes
the file with ``msgspec.convert``, the environment's text with ``strict=False``, and
checks what one field alone cannot (a token when not on loopback, unique sink names).
The same Structs make ``config.schema.json`` (for editors) and the key tables of
``docs/configuration.md``: ``python -m watchdog.sidecar.config --write`` rewrites both.

Every error names the key and the expected form, e.g.
``config error: thresholds.response: expected a number of seconds > 0, got 'fast'``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from watchdog.sidecar._config_alerts import (
    DEFAULT_SINKS,
    SINK_TYPES,
    AlertingConfig,
    SinkConfig,
    check_sinks,
    shape_sinks,
)
from watchdog.sidecar._config_env import ENV_PREFIX, env_sections
from watchdog.sidecar._config_forms import (
    ConfigError,
    Seconds,
    integer,
    known_keys,
    positive,
    struct_info,
    translate,
)
from watchdog.sidecar.policy import (
    ACTIONS,
    CONTAINER_KINDS,
    DEFAULT_THRESHOLDS,
    KINDS,
    SEVERITIES,
    Action,
    AutoThreshold,
    LearningConfig,
    MaxDurationTable,
    Resolved,
    Rule,
    Thresholds,
    ThresholdTable,
    check_rules,
    kind_table,
    shape_rules,
)

__all__ = [
    "ACTIONS",
    "CONTAINER_KINDS",
    "DEFAULT_PORT",
    "DEFAULT_SINKS",
    "DEFAULT_THRESHOLDS",
    "ENV_PREFIX",
    "KINDS",
    "RATE_BURST_SECONDS",
    "SEVERITIES",
    "SINK_TYPES",
    "AbortConfig",
    "Action",
    "AlertingConfig",
    "AutoThreshold",
    "Config",
    "ConfigError",
    "ConfigFile",
    "IncidentConfig",
    "LearningConfig",
    "LimitsConfig",
    "ProcessConfig",
    "Resolved",
    "Rule",
    "ServerConfig",
    "SinkConfig",
    "Thresholds",
    "default_incident_path",
    "load_config",
]

DEFAULT_PORT: Final = 9750
# How many seconds of max_events_per_second a process may send at once: a processor
# back from an outage sends what it kept (65,536 events by default) in one go.
RATE_BURST_SECONDS: Final = 5.0


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[server]``: where the sidecar listens and what it accepts."""

    host: Annotated[
        str, Meta(description="Address to listen on; anything but loopback requires `token`.")
    ] = "127.0.0.1"
    port: Annotated[int, integer(0, 65535, "TCP port; 0 picks a free one.")] = DEFAULT_PORT
    token: Annotated[
        str | None,
        Meta(description="Bearer token clients must send; better set by the environment."),
    ] = None
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"],
        Meta(description="Log level.", extra={"form": "debug, info, warning or error"}),
    ] = "info"
    max_body_bytes: Annotated[
        int, integer(1024, 2**30, "Largest request body accepted, in bytes.")
    ] = 16 * 1024 * 1024
    unix_socket: Annotated[
        str,
        Meta(
            pattern=r"^(/.*)?$",
            description="Also listen on this Unix socket (an absolute path).",
            extra={"form": "an absolute path"},
        ),
    ] = ""

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class AbortConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[abort]``: how the abort ladder climbs."""

    grace_seconds: Annotated[
        Seconds, Meta(description="Seconds each rung of the abort ladder waits.")
    ] = 10.0
    dry_run: Annotated[bool, Meta(description="Log what abort would do, and do nothing.")] = False
    max_signals: Annotated[
        int, integer(0, 10_000, "Signals sent per window, at most; 0 sends none.")
    ] = 5
    window_seconds: Annotated[Seconds, Meta(description="The window of `max_signals`.")] = 300.0


class ProcessConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[processes]``: when a silent process is unresponsive, how long the dead linger."""

    unresponsive_after: Annotated[
        float,
        positive(
            "a number of heartbeat intervals > 0",
            "Heartbeat intervals of silence before a process is unresponsive.",
        ),
    ] = 5.0
    orphan_retention: Annotated[
        Seconds, Meta(description="Seconds a dead process's orphaned spans stay listed.")
    ] = 300.0
    loop_blocked_after: Annotated[
        Seconds, Meta(description="Seconds an event loop may lag before it is blocked.")
    ] = 1.0


class LimitsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[limits]``: what one client, or all of them, may cost the sidecar.

    Past a limit the sidecar refuses with a clear 4xx/503 and counts the refusal in
    ``events_rejected_total{reason}``; what it already holds stays as it was. Past
    ``max_label_services`` nothing is refused: metrics fold the service into one label
    value, counted in ``label_overflow_total{label="service"}``.
    """

    max_processes: Annotated[
        int, integer(1, 10_000_000, "Process records kept: live, unresponsive, dead.")
    ] = 10_000
    max_open_spans: Annotated[
        int, integer(1, 100_000_000, "Open spans per process; span starts past it are refused.")
    ] = 100_000
    # Per process, sustained; a burst of RATE_BURST_SECONDS' worth passes at once.
    max_events_per_second: Annotated[
        float,
        positive(
            "a number of events per second > 0",
            "Events per second per process, sustained (bursts of 5 s pass).",
        ),
    ] = 100_000.0
    max_connections: Annotated[
        int, integer(1, 1_000_000, "Connections open at once; requests past it get 503.")
    ] = 4096
    request_timeout: Annotated[
        Seconds, Meta(description="Seconds a client may take to send one whole request.")
    ] = 10.0
    # A pod runs a few services, a host dozens; each costs up to one histogram per kind.
    max_label_services: Annotated[
        int, integer(1, 100_000, "Distinct `service` label values; later ones share `_overflow`.")
    ] = 100


class IncidentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[incidents]``: the SQLite incident history."""

    enabled: Annotated[bool, Meta(description="Keep an incident history.")] = True
    path: Annotated[
        str,
        Meta(description="The database; default: `$XDG_DATA_HOME/agents-watchdog/incidents.db`."),
    ] = ""
    max_age_days: Annotated[
        float, positive("a number of days > 0", "Days an incident is kept.")
    ] = 30.0
    max_count: Annotated[int, integer(1, 10**9, "Incidents kept, at most.")] = 10_000
    reconcile_seconds: Annotated[
        Seconds, Meta(description="Seconds between checks of open incidents against spans.")
    ] = 30.0


class ConfigFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The TOML document: every section and array of tables the sidecar reads."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    thresholds: ThresholdTable = msgspec.field(default_factory=ThresholdTable)  # type: ignore[valid-type]
    max_duration: MaxDurationTable = msgspec.field(default_factory=MaxDurationTable)  # type: ignore[valid-type]
    rules: tuple[Rule, ...] = ()
    alerting: AlertingConfig = msgspec.field(default_factory=AlertingConfig)
    alerts: tuple[SinkConfig, ...] = DEFAULT_SINKS
    incidents: IncidentConfig = msgspec.field(default_factory=IncidentConfig)
    abort: AbortConfig = msgspec.field(default_factory=AbortConfig)
    processes: ProcessConfig = msgspec.field(default_factory=ProcessConfig)
    learning: LearningConfig = msgspec.field(default_factory=LearningConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)


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

    # The environment's text, converted by msgspec's lax rules, then laid over the file.
    from_env: dict[str, Any] = env_sections(environ, known_keys(struct_info(ServerConfig)))
    _lower_log_level(from_env)
    lax = _convert(from_env, strict=False)
    for section, keys in from_env.items():
        _section(data, section).update({k: getattr(getattr(lax, section), k) for k in keys})
    _section(data, "server").update({k: v for k, v in (overrides or {}).items() if v is not None})

    raw_rules = _prepare(data, environ)
    document = _convert(data, strict=True)
    check_rules(document.rules, raw_rules)
    check_sinks(document.alerts)
    server = _server(document.server)
    incidents = document.incidents
    if not incidents.path:
        incidents = msgspec.structs.replace(incidents, path=default_incident_path(environ))
    learning = document.learning
    if not learning.path:
        beside = os.path.join(os.path.dirname(incidents.path), "learned-durations.json")
        learning = msgspec.structs.replace(learning, path=beside)
    alerting = document.alerting
    alerting = msgspec.structs.replace(alerting, external_url=alerting.external_url.rstrip("/"))
    return Config(
        server=server,
        thresholds=Thresholds(
            by_kind=kind_table(document.thresholds),
            max_duration=kind_table(document.max_duration),
            rules=document.rules,
        ),
        alerting=alerting,
        sinks=document.alerts,
        incidents=incidents,
        abort=document.abort,
        processes=document.processes,
        learning=learning,
        limits=document.limits,
        source=source,
    )


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The file's table ``name``, made when absent; a non-table is left for the check
    that reports it, behind a stand-in that takes the overlay."""
    table = data.setdefault(name, {})
    return table if isinstance(table, dict) else {}


def _convert(data: Mapping[str, Any], strict: bool) -> ConfigFile:
    try:
        return msgspec.convert(data, ConfigFile, strict=strict)
    except msgspec.ValidationError as exc:
        raise translate(exc, data, ConfigFile) from None


def _prepare(data: dict[str, Any], environ: Mapping[str, str]) -> list[set[str]]:
    """Shape the TOML tables the way the Structs read them, in place. Returns the keys
    each rule was written with: some checks depend on presence."""
    _lower_log_level(data)
    shape_sinks(data.get("alerts"), environ)
    return shape_rules(data.get("rules"))


def _lower_log_level(data: Mapping[str, Any]) -> None:
    server = data.get("server")
    if isinstance(server, dict) and isinstance(server.get("log_level"), str):
        server["log_level"] = server["log_level"].lower()


def _server(server: ServerConfig) -> ServerConfig:
    # An empty token is no token: the variable may be set and blank.
    server = msgspec.structs.replace(server, token=server.token or None)
    if not server.loopback and not server.token:
        raise ConfigError(
            "server.token",
            f"binding to {server.host!r} (not loopback) requires a token "
            "(set server.token or AGENTS_WATCHDOG_TOKEN)",
        )
    return server


if __name__ == "__main__":
    from watchdog.sidecar._config_docs import main

    raise SystemExit(main())
