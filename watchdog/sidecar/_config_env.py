"""``AGENTS_WATCHDOG_*`` environment variables: which key each one sets.

Every ``[server]`` key has its variable (``AGENTS_WATCHDOG_<KEY>``), every kind of
``[thresholds]`` and ``[max_duration]`` too (``AGENTS_WATCHDOG_THRESHOLD_<KIND>``,
``AGENTS_WATCHDOG_MAX_DURATION_<KIND>``); the names come from the Structs' fields, so a
new key has its variable without a line here. The values stay text: the loader has
msgspec convert them (``strict=False``: ``"1.5"`` is a number, ``"true"`` a boolean).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Final

from watchdog.sidecar._config_forms import ConfigError

__all__ = ["ENV_PREFIX", "env_sections", "env_variable"]

ENV_PREFIX: Final = "AGENTS_WATCHDOG_"
# Read by the app's processor, not by the sidecar; allowed in a shared environment.
_APP_ONLY_ENV: Final = frozenset({"AGENTS_WATCHDOG_URL", "AGENTS_WATCHDOG_SERVICE"})
# Per-kind tables: the infix of their variables.
_KIND_INFIX: Final = {"thresholds": "THRESHOLD_", "max_duration": "MAX_DURATION_"}

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


def env_variable(section: str, key: str) -> str | None:
    """The variable that sets ``section.key``, or None when none does."""
    if section == "server":
        return ENV_PREFIX + key.upper()
    if section in _KIND_INFIX:
        return ENV_PREFIX + _KIND_INFIX[section] + key.upper()
    return None


def _is_service_link(rest: str, value: str) -> bool:
    """Whether ``AGENTS_WATCHDOG_<rest>=<value>`` is one that Kubernetes service links
    inject, not a setting: ``PORT`` only with a ``proto://host:port`` value."""
    if rest == "PORT":
        return _SERVICE_LINK_URL.fullmatch(value) is not None
    return _SERVICE_LINK_NAME.fullmatch(rest) is not None


def env_sections(
    environ: Mapping[str, str], server_keys: Iterable[str]
) -> dict[str, dict[str, str]]:
    """The keys ``AGENTS_WATCHDOG_*`` variables set, by section, as text.

    Variables that Kubernetes service links inject are skipped, each with a DEBUG line
    naming it; any other unknown ``AGENTS_WATCHDOG_*`` variable raises
    :class:`ConfigError` naming it. A ``THRESHOLD_<KIND>`` of no known kind is left to
    the table's own check, which names the key.
    """
    server_keys = tuple(server_keys)
    by_name = {key.upper(): key for key in server_keys}
    found: dict[str, dict[str, str]] = {"server": {}, **{s: {} for s in _KIND_INFIX}}
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
        if rest in by_name:
            found["server"][by_name[rest]] = value
            continue
        for section, infix in _KIND_INFIX.items():
            if rest.startswith(infix):
                found[section][rest[len(infix) :].lower()] = value
                break
        else:
            expected = ", _".join(key.upper() for key in server_keys)
            raise ConfigError(
                name,
                f"unknown environment variable; expected {ENV_PREFIX}{expected}, _CONFIG, "
                + " or ".join(f"_{infix}<KIND>" for infix in _KIND_INFIX.values()),
            )
    return {section: keys for section, keys in found.items() if keys}
