"""In the app: the timeouts an OpenAI client will actually apply — the first thing to
know about a model call that never returns (the client's default read timeout is ten
minutes)."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["ClientTimeouts", "default_client_timeouts", "timeouts_of"]

# openai.DEFAULT_TIMEOUT, without importing openai into an app that does not use it.
_OPENAI_DEFAULT = (5.0, 600.0)


class ClientTimeouts(NamedTuple):
    """Seconds a client waits to connect and for each read (None: no limit), its
    retries, and where the figures come from (``client``, ``openai default``)."""

    connect: float | None
    read: float | None
    max_retries: int | None
    source: str

    def describe(self) -> str:
        """``read timeout 600 s, connect 5 s, 2 retries (openai default)``."""

        def seconds(value: float | None) -> str:
            return "none" if value is None else f"{value:g} s"

        retries = "" if self.max_retries is None else f", {self.max_retries} retries"
        return (
            f"read timeout {seconds(self.read)}, connect {seconds(self.connect)}"
            f"{retries} ({self.source})"
        )


def timeouts_of(client: Any, source: str = "client") -> ClientTimeouts | None:
    """The timeouts of an ``openai.AsyncOpenAI``/``OpenAI`` client (or anything with the
    same ``timeout`` attribute: a number, an ``httpx.Timeout`` or None), or None when
    ``client`` has no such attribute."""
    if client is None or not hasattr(client, "timeout"):
        return None
    timeout = client.timeout
    retries = getattr(client, "max_retries", None)
    retries = retries if isinstance(retries, int) else None
    if timeout is None:
        return ClientTimeouts(None, None, retries, source)
    if isinstance(timeout, int | float):
        return ClientTimeouts(float(timeout), float(timeout), retries, source)
    read = getattr(timeout, "read", None)
    connect = getattr(timeout, "connect", None)
    if not isinstance(read, int | float | None) or not isinstance(connect, int | float | None):
        return None  # NOT_GIVEN or an unknown shape: nothing to say
    return ClientTimeouts(
        None if connect is None else float(connect),
        None if read is None else float(read),
        retries,
        source,
    )


def default_client_timeouts() -> ClientTimeouts:
    """The timeouts of the client the SDK uses when an agent names no client of its own:
    the one set by ``set_default_openai_client``, or else a fresh ``AsyncOpenAI()``."""
    try:
        from agents.models._openai_shared import get_default_openai_client

        client = get_default_openai_client()
    except Exception:  # an SDK without that helper: assume its default client
        client = None
    found = timeouts_of(client, "the SDK's default client")
    if found is not None:
        return found
    return ClientTimeouts(*_OPENAI_DEFAULT, 2, "openai default")
