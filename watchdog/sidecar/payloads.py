"""An alert as sinks see it (:class:`Alert`), and the formats it is sent in.

Alertmanager's webhook payload (version 4) and its v2 API, and Slack's blocks: built
here, shared by the sinks (``sinks.py``). :class:`~watchdog.sidecar.alerts.AlertBook`
decides when an alert fires and resolves; nothing here knows about spans.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = [
    "ZERO_TIME",
    "Alert",
    "Status",
    "alertmanager_alert",
    "iso",
    "slack_message",
    "webhook_alert",
    "webhook_payload",
]

# Alertmanager's "no end time": an alert that is still firing.
ZERO_TIME: Final = "0001-01-01T00:00:00Z"

Status = Literal["firing", "resolved"]


# The years 1 to 9999, which is all datetime (and RFC 3339) can write.
_EARLIEST: Final = -62_135_596_800.0
_LATEST: Final = 253_402_300_799.0


def iso(seconds: float) -> str:
    """RFC 3339 UTC with milliseconds, as Alertmanager writes it. Times an app made
    up (a span that starts in the year 40000) are written as the nearest one there is."""
    seconds = min(max(seconds, _EARLIEST), _LATEST) if not math.isnan(seconds) else 0.0
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclass(frozen=True)
class Alert:
    """One alert as sinks see it: a snapshot, safe to hand to another task."""

    key: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    generator_url: str
    status: Status = "firing"
    ends_at: float | None = None
    announce: bool = True  # False: already announced before a sidecar restart

    @property
    def fingerprint(self) -> str:
        """A stable id for the alert, from its labels (as Alertmanager derives one)."""
        text = "\x00".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def alertname(self) -> str:
        """The alert's name label."""
        return self.labels["alertname"]


def webhook_alert(alert: Alert) -> dict[str, Any]:
    """One entry of a webhook payload's ``alerts`` list."""
    return {
        "status": alert.status,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": iso(alert.starts_at),
        "endsAt": ZERO_TIME if alert.ends_at is None else iso(alert.ends_at),
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }


def webhook_payload(alert: Alert, receiver: str, external_url: str) -> dict[str, Any]:
    """The Alertmanager webhook payload, version 4, for one alert (a group of one)."""
    group = ",".join(f'{k}="{v}"' for k, v in sorted(alert.labels.items()))
    return {
        "version": "4",
        "groupKey": f"{{}}:{{{group}}}",
        "truncatedAlerts": 0,
        "status": alert.status,
        "receiver": receiver,
        "groupLabels": {"alertname": alert.alertname},
        "commonLabels": alert.labels,
        "commonAnnotations": alert.annotations,
        "externalURL": external_url,
        "alerts": [webhook_alert(alert)],
    }


def alertmanager_alert(alert: Alert, resend_until: float) -> dict[str, Any]:
    """One alert for Alertmanager's ``POST /api/v2/alerts``.

    A firing alert carries ``endsAt`` a little past the next re-send, so Alertmanager
    resolves it by itself if the sidecar disappears; a resolved one carries its end.
    """
    ends = resend_until if alert.ends_at is None else alert.ends_at
    return {
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": iso(alert.starts_at),
        "endsAt": iso(ends),
        "generatorURL": alert.generator_url,
    }


def slack_message(alert: Alert) -> dict[str, Any]:
    """An incoming-webhook message: plain ``text`` for notifications, ``blocks`` to read."""
    firing = alert.status == "firing"
    icon = ":rotating_light:" if firing else ":white_check_mark:"
    title = f"{'FIRING' if firing else 'RESOLVED'}: {alert.annotations['summary']}"
    body = alert.annotations["description"]
    if not firing:
        body += f"\n*Resolved:* {alert.annotations.get('resolution', '')}"
    elif alert.annotations.get("cause"):
        body += f"\n*Probable cause:* {alert.annotations['cause']}"
    where = []
    stack = alert.annotations.get("stack")
    if firing and stack:
        where.append({"type": "section", "text": {"type": "mrkdwn", "text": _stack_excerpt(stack)}})
    return {
        "text": f"{icon} {title}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": body[:2900]}},
            *where,
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"<{alert.generator_url}|Open in agents-watchdog> · "
                        f"severity {alert.labels['severity']} · {alert.alertname}",
                    }
                ],
            },
        ],
    }


def _stack_excerpt(stack: str, limit: int = 2800) -> str:
    """The innermost lines of the span's task that fit one Slack section (3,000
    characters): where it waits. The whole stack is on the page and in the incident."""
    lines = stack.splitlines()
    # The task's chain comes first, its thread's frames after ("Thread ..."): keep the task.
    end = next(
        (i for i, line in enumerate(lines) if i > 0 and line.startswith("Thread ")), len(lines)
    )
    kept: list[str] = []
    size = 0
    for line in reversed(lines[:end]):
        size += len(line) + 1
        if size > limit:
            break
        kept.append(line)
    kept.reverse()
    omitted = "...\n" if len(kept) < end else ""
    return "*Where it is stuck:*\n```" + omitted + "\n".join(kept) + "```"
