"""What every request to the sidecar passes through: the token, the body's size and
time limits, and the shape of a refusal.

An endpoint raises :class:`RequestRejected` and returns; the Starlette app turns the
exception into ``{"error": reason, "detail": why}`` with its status (:func:`refused`,
registered in ``app.py``). Every JSON body, refusal or not, is a
:class:`MsgspecJSONResponse`.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from watchdog.sidecar.config import Config

__all__ = ["Gate", "MsgspecJSONResponse", "RequestRejected", "error_response", "refused"]


class RequestRejected(Exception):
    """A request refused with a 4xx; ``reason`` is the metric label, ``detail`` the why."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


class MsgspecJSONResponse(Response):
    """A JSON response encoded by msgspec: dicts, lists, and msgspec Structs alike."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """The compact JSON encoding of ``content``."""
        return msgspec.json.encode(content)


def error_response(status: int, reason: str, detail: str) -> MsgspecJSONResponse:
    """The body every refusal has: ``{"error": reason, "detail": detail}``."""
    return MsgspecJSONResponse({"error": reason, "detail": detail}, status_code=status)


async def refused(request: Request, exc: Exception) -> Response:
    """Starlette's handler for :class:`RequestRejected`: the refusal as JSON.

    Async on purpose: Starlette runs a plain function handler in a worker thread.
    """
    assert isinstance(exc, RequestRejected)
    return error_response(exc.status, exc.reason, exc.detail)


class Gate:
    """The checks a request meets before an endpoint acts on it, from the config."""

    def __init__(self, config: Config) -> None:
        self._max_body = config.server.max_body_bytes
        self._body_timeout = config.limits.request_timeout
        token = config.server.token
        self._token = token.encode() if token else None

    @property
    def has_token(self) -> bool:
        """Whether a token is configured (control endpoints refuse to act without one)."""
        return self._token is not None

    def authorize(self, request: Request) -> None:
        """Pass when no token is configured or the request bears it; else a 401.

        The comparison takes constant time, so a wrong guess reveals nothing.
        """
        if self._token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() != "bearer" or not supplied:
            raise RequestRejected(
                401, "unauthorized", "missing bearer token (Authorization: Bearer ...)"
            )
        if not hmac.compare_digest(supplied.strip().encode(), self._token):
            raise RequestRejected(401, "unauthorized", "wrong bearer token")

    async def read_body(self, request: Request) -> bytes:
        """The whole body, refused with a 413 past ``server.max_body_bytes``, a 408 when
        it takes longer than ``limits.request_timeout``, a 400 when the client leaves."""
        limit = self._max_body
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestRejected(400, "bad_request", f"invalid Content-Length {declared!r}")
            if int(declared) > limit:
                raise RequestRejected(
                    413, "too_large", f"body of {declared} bytes exceeds the limit of {limit}"
                )
        chunks, size = [], 0
        timeout = self._body_timeout
        try:
            # A body trickled in slowly must not hold a connection (and a task) forever.
            async with asyncio.timeout(timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise RequestRejected(
                            413, "too_large", f"body exceeds the limit of {limit} bytes"
                        )
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestRejected(
                408, "request_timeout", f"the body did not arrive within {timeout:g} s"
            ) from None
        except ClientDisconnect:
            # Nobody is left to answer; counted all the same, and no traceback in the log.
            raise RequestRejected(
                400, "client_disconnected", f"the client left after {size} bytes of the body"
            ) from None
        return b"".join(chunks)
