"""Alert delivery: one bounded queue and one worker task per sink.

A sink that is down or slow only delays its own queue: the detector hands alerts over
with ``put_nowait`` and never waits. Each delivery is retried with exponential backoff
and jitter until ``give_up_after`` seconds have passed; a 429 waits as long as the
receiver's ``Retry-After`` asks. Failures are logged once per streak, and every
outcome is counted for ``agents_watchdog_alerts_sent_total{sink,outcome}``:
``sent``, ``retried``, ``failed`` (gave up), ``dropped`` (queue full).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import httpx

from watchdog.sidecar.alerts import (
    Alert,
    alertmanager_alert,
    slack_message,
    webhook_payload,
)
from watchdog.sidecar.config import AlertingConfig, SinkConfig
from watchdog.sidecar.logs import log_event

__all__ = ["Delivery", "Dispatcher", "Sink", "build_sink"]

logger = logging.getLogger("watchdog.sidecar")
_BACKOFF_FIRST: Final = 0.5
_BACKOFF_CAP: Final = 30.0

# (sink name, alert, outcome, detail): lets the incident history record each delivery.
Delivery = Callable[[str, Alert, str, str], None]


class RetryLater(Exception):
    """The receiver asked to be retried after ``delay`` seconds (HTTP 429)."""

    def __init__(self, delay: float, detail: str) -> None:
        super().__init__(detail)
        self.delay = delay


class Sink:
    """A destination for alerts, with its own queue, worker, retries and counters."""

    def __init__(
        self,
        config: SinkConfig,
        alerting: AlertingConfig,
        outcomes: Counter[tuple[str, str]],
        external_url: Callable[[], str],
        on_delivery: Delivery | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.alerting = alerting
        self.outcomes = outcomes
        self.external_url = external_url
        self.on_delivery = on_delivery
        self.queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=alerting.queue_size)
        self._failing = False
        self._dropping = False
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def wants(self, alert: Alert) -> bool:
        """True when this sink's filter accepts the alert, and it is news for this sink."""
        labels = alert.labels
        return self.config.accepts(
            labels["service"], labels.get("kind", ""), labels["severity"]
        ) and (alert.announce)

    def offer(self, alert: Alert) -> None:
        """Queue an alert without waiting; a full queue drops it (counted, logged once)."""
        try:
            self.queue.put_nowait(alert)
            self._dropping = False
        except asyncio.QueueFull:
            self.outcomes[(self.name, "dropped")] += 1
            if not self._dropping:
                self._dropping = True
                log_event(logging.ERROR, "alert_dropped", sink=self.name, reason="queue full")

    async def start(self) -> None:
        """Start the worker task (and whatever else the sink runs)."""
        self._client = httpx.AsyncClient(
            timeout=self.config.timeout, headers=dict(self.config.headers), trust_env=False
        )
        self._tasks.append(asyncio.create_task(self._work(), name=f"sink-{self.name}"))

    async def stop(self) -> None:
        """Cancel the workers and close the HTTP client."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()

    async def _work(self) -> None:
        while True:
            alert = await self.queue.get()
            try:
                await self._deliver(alert)
            except Exception:
                # A bug in one sink must not end its worker.
                logger.exception("sink_failed")

    async def _deliver(self, alert: Alert) -> None:
        give_up_at = time.monotonic() + self.alerting.give_up_after
        attempt = 0
        while True:
            try:
                detail = await self.post(alert)
            except RetryLater as exc:
                delay, detail = exc.delay, str(exc)
            except Exception as exc:
                delay = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2**attempt) * random.uniform(0.5, 1.5)
                detail = _describe(exc)
            else:
                self.outcomes[(self.name, "sent")] += 1
                if self._failing:
                    self._failing = False
                    log_event(logging.INFO, "alert_sink_recovered", sink=self.name)
                self._report(alert, "sent", detail)
                return
            attempt += 1
            if not self._failing:
                # Once per streak of failures, not once per try.
                self._failing = True
                log_event(logging.WARNING, "alert_sink_failing", sink=self.name, error=detail)
            if time.monotonic() + delay > give_up_at:
                self.outcomes[(self.name, "failed")] += 1
                log_event(
                    logging.ERROR,
                    "alert_not_delivered",
                    sink=self.name,
                    alertname=alert.alertname,
                    status=alert.status,
                    attempts=attempt,
                    error=detail,
                )
                self._report(alert, "failed", f"gave up after {attempt} attempts: {detail}")
                return
            self.outcomes[(self.name, "retried")] += 1
            await asyncio.sleep(delay)

    def _report(self, alert: Alert, outcome: str, detail: str) -> None:
        if self.on_delivery is not None:
            try:
                self.on_delivery(self.name, alert, outcome, detail)
            except Exception:
                logger.exception("delivery_report_failed")

    async def post(self, alert: Alert) -> str:
        """Deliver one alert; return a short note, or raise to have it retried."""
        raise NotImplementedError

    async def _post_json(self, body: Any) -> httpx.Response:
        assert self._client is not None
        response = await self._client.post(self.config.url, json=body)
        if response.status_code == 429:
            raise RetryLater(_retry_after(response), "HTTP 429 Too Many Requests")
        if response.status_code >= 300:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        return response


def _retry_after(response: httpx.Response) -> float:
    text = response.headers.get("retry-after", "")
    try:
        return max(0.0, min(float(text), 3600.0))
    except ValueError:
        return 1.0


def _describe(exc: BaseException) -> str:
    # Never the URL: for Slack and many webhooks, the URL is the secret.
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}"
    return str(exc)[:300] or type(exc).__name__


class LogSink(Sink):
    """Alerts as JSON lines in the sidecar's log."""

    async def post(self, alert: Alert) -> str:
        """Write the alert to the log."""
        log_event(
            logging.WARNING if alert.status == "firing" else logging.INFO,
            f"alert_{alert.status}",
            sink=self.name,
            labels=alert.labels,
            annotations=alert.annotations,
            starts_at=alert.starts_at,
            generator_url=alert.generator_url,
        )
        return "logged"


class WebhookSink(Sink):
    """Alertmanager's webhook payload (version 4): any Alertmanager receiver takes it."""

    async def post(self, alert: Alert) -> str:
        """POST the payload."""
        response = await self._post_json(webhook_payload(alert, self.name, self.external_url()))
        return f"HTTP {response.status_code}"


class SlackSink(Sink):
    """A Slack incoming webhook: text plus blocks."""

    async def post(self, alert: Alert) -> str:
        """POST the message."""
        response = await self._post_json(slack_message(alert))
        return f"HTTP {response.status_code}"


class AlertmanagerSink(Sink):
    """Alertmanager's v2 API. Firing alerts are re-sent every ``resend_interval`` —
    well inside Alertmanager's ``resolve_timeout`` — and resolved with ``endsAt``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.firing: dict[str, Alert] = {}

    def wants(self, alert: Alert) -> bool:
        """Alertmanager needs even already-announced alerts: they expire unless re-sent."""
        labels = alert.labels
        return self.config.accepts(labels["service"], labels.get("kind", ""), labels["severity"])

    async def start(self) -> None:
        """Start the worker and the re-send loop."""
        await super().start()
        self._tasks.append(asyncio.create_task(self._resend(), name=f"sink-{self.name}-resend"))

    async def _resend(self) -> None:
        while True:
            await asyncio.sleep(self.alerting.resend_interval)
            for alert in list(self.firing.values()):
                self.offer(alert)

    def offer(self, alert: Alert) -> None:
        """Track what is firing, then queue."""
        if alert.status == "firing":
            self.firing[alert.key] = alert
        else:
            self.firing.pop(alert.key, None)
        super().offer(alert)

    async def post(self, alert: Alert) -> str:
        """POST the alert to ``/api/v2/alerts``."""
        if alert.status == "firing" and alert.key not in self.firing:
            return "skipped: resolved meanwhile"
        # Valid until a little after the next re-send: if the sidecar dies, Alertmanager
        # resolves the alert by itself instead of showing it forever.
        until = time.time() + 3 * self.alerting.resend_interval
        url = self.config.url.rstrip("/")
        if not url.endswith("/api/v2/alerts"):
            url += "/api/v2/alerts"
        assert self._client is not None
        response = await self._client.post(url, json=[alertmanager_alert(alert, until)])
        if response.status_code == 429:
            raise RetryLater(_retry_after(response), "HTTP 429 Too Many Requests")
        if response.status_code >= 300:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        return f"HTTP {response.status_code}"


_TYPES: Final[dict[str, type[Sink]]] = {
    "log": LogSink,
    "webhook": WebhookSink,
    "slack": SlackSink,
    "alertmanager": AlertmanagerSink,
}


def build_sink(
    config: SinkConfig,
    alerting: AlertingConfig,
    outcomes: Counter[tuple[str, str]],
    external_url: Callable[[], str],
    on_delivery: Delivery | None = None,
) -> Sink:
    """The sink for ``config.type``."""
    return _TYPES[config.type](config, alerting, outcomes, external_url, on_delivery)


class Dispatcher:
    """Hands each alert change to every sink that wants it; never waits."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def send(self, alert: Alert) -> None:
        """Offer ``alert`` to the sinks."""
        for sink in self.sinks:
            if sink.wants(alert):
                sink.offer(alert)

    async def start(self) -> None:
        """Start every sink."""
        for sink in self.sinks:
            await sink.start()

    async def stop(self) -> None:
        """Stop every sink."""
        for sink in self.sinks:
            await sink.stop()
