"""``[alerting]`` and ``[[alerts]]``: where alerts go, which ones, and how they are sent.

Declared as the msgspec Structs the loader decodes (``config.py`` re-exports them);
``shape_sinks`` and ``check_sinks`` do what no field says alone: a sink's default name,
``${VAR}`` read from the environment, a receiver URL for every sink but ``log``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Annotated, Final, Literal, get_args

import msgspec
from msgspec import Meta

from watchdog.sidecar._config_forms import (
    ConfigError,
    NonNegativeSeconds,
    Seconds,
    integer,
    marked,
    one_of,
    struct_info,
    tables,
)
from watchdog.sidecar.policy import Kind, Severity

__all__ = [
    "DEFAULT_SINKS",
    "SINK_TYPES",
    "AlertingConfig",
    "SinkConfig",
    "SinkType",
    "check_sinks",
    "shape_sinks",
]

SinkType = Literal["log", "webhook", "alertmanager", "slack"]
SINK_TYPES: Final[tuple[str, ...]] = get_args(SinkType)
_HTTP_URL: Final = r"^(https?://.*)?$"


class SinkConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[alerts]]`` table: where alerts go, and which ones."""

    type: Annotated[
        SinkType, Meta(description="Where alerts go.", extra={"form": one_of(SINK_TYPES)})
    ]
    name: Annotated[
        str, Meta(description="Label of the sink; default: its type (then `type-<index>`).")
    ] = ""
    url: Annotated[
        str, Meta(description="Receiver URL (not for `log`); `${VAR}` reads the environment.")
    ] = ""
    headers: Annotated[
        dict[str, str], Meta(description="HTTP headers sent with each alert; `${VAR}` expands.")
    ] = msgspec.field(default_factory=dict)
    services: Annotated[
        tuple[str, ...],
        Meta(
            description="Only alerts of services matching these globs.", extra={"one_or_many": True}
        ),
    ] = ()
    kinds: Annotated[
        tuple[Kind, ...],
        Meta(description="Only alerts of spans of these kinds.", extra={"one_or_many": True}),
    ] = ()
    severities: Annotated[
        tuple[Severity, ...],
        Meta(description="Only alerts of these severities.", extra={"one_or_many": True}),
    ] = ()
    timeout: Annotated[Seconds, Meta(description="Seconds one delivery may take.")] = 10.0

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


class AlertingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[alerting]``: delivery settings shared by every sink."""

    external_url: Annotated[
        str,
        Meta(
            pattern=_HTTP_URL,
            description="The sidecar's URL as receivers should link to it.",
            extra={"form": "an http(s) URL"},
        ),
    ] = ""
    resend_interval: Annotated[
        Seconds, Meta(description="Seconds between re-sends of a firing alert.")
    ] = 60.0
    give_up_after: Annotated[
        Seconds, Meta(description="Seconds a failing delivery is retried.")
    ] = 300.0
    queue_size: Annotated[int, integer(1, 1_000_000, "Alerts waiting for delivery, at most.")] = (
        1000
    )
    # How long a hung-span alert waits for the span's stack before it is announced
    # without one (stateful Alertmanager gets it at once, and the stack as an update).
    stack_wait: Annotated[
        NonNegativeSeconds,
        Meta(description="Seconds a hung-span alert waits for the span's stack."),
    ] = 1.5


_ONE_OR_MANY: Final = marked(struct_info(SinkConfig), "one_or_many")


def shape_sinks(entries: object, environ: Mapping[str, str]) -> None:
    """Read ``[[alerts]]`` tables the way :class:`SinkConfig` holds them, in place: a
    default name, a lone string as a list of one, ``${VAR}`` expanded from ``environ``.
    Raises :class:`ConfigError` for a header that is no string or an unset variable."""
    for index, sink in enumerate(tables(entries)):
        key = f"alerts[{index}]"
        kind = sink.get("type")
        if "name" not in sink and isinstance(kind, str):
            sink["name"] = kind if index == 0 else f"{kind}-{index}"
        for name in _ONE_OR_MANY & sink.keys():
            if isinstance(sink[name], str):
                sink[name] = [sink[name]]
        if isinstance(sink.get("url"), str):
            sink["url"] = _expand(f"{key}.url", sink["url"], environ)
        headers = sink.get("headers")
        if isinstance(headers, dict):
            for header, value in headers.items():
                where = f"{key}.headers.{header}"
                if not isinstance(value, str):
                    raise ConfigError(where, f"expected a string, got {value!r}")
                headers[header] = _expand(where, value, environ)


def _expand(key: str, text: str, environ: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` with the environment's value: secrets stay out of the file."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ConfigError(key, f"refers to ${{{name}}}, which is not set in the environment")
        return environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value, text)


def check_sinks(sinks: tuple[SinkConfig, ...]) -> None:
    """Unique names, and a receiver URL for every sink but ``log``; raises
    :class:`ConfigError`."""
    names: set[str] = set()
    for index, sink in enumerate(sinks):
        key = f"alerts[{index}]"
        if sink.name in names:
            raise ConfigError(f"{key}.name", f"another sink is already named {sink.name!r}")
        names.add(sink.name)
        if sink.type != "log" and not sink.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{key}.url", f"a {sink.type} sink needs an http(s) url, got {sink.url!r}"
            )
