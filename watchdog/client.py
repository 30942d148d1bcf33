"""The command line's client of a running sidecar, shared by ``status``, ``incidents``
and ``abort``.

One :class:`SidecarClient` knows where the sidecar is (``http://``, ``https://`` or
``unix:///path/to/socket``), the bearer token and the timeout, and turns every way a
request can fail into a :class:`SidecarError` whose message says what went wrong and
how to fix it, and whose ``exit_code`` is one of the three the commands share:

- ``0`` (``EXIT_OK``) the question was answered and nothing needs attention;
- ``1`` (``EXIT_ATTENTION``) the answer needs attention — each command says what that
  means; for requests, the sidecar answered that the thing asked about is not there
  (404) or not one thing (409): a :class:`Refused`;
- ``2`` (``EXIT_CANNOT_ASK``) the question could not be asked: a bad URL, the sidecar
  unreachable or silent, a token missing or refused (401/403), an answer that is not
  the sidecar's (not JSON, a 5xx, an unexpected status): a :class:`CannotAsk`.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from types import TracebackType
from typing import Any, Final

import httpx

__all__ = [
    "DEFAULT_URL",
    "EXIT_ATTENTION",
    "EXIT_CANNOT_ASK",
    "EXIT_OK",
    "CannotAsk",
    "Refused",
    "SidecarClient",
    "SidecarError",
    "print_failure",
    "sidecar_url",
]

DEFAULT_URL: Final = "http://127.0.0.1:9750"
DEFAULT_TIMEOUT: Final = 10.0
EXIT_OK: Final = 0
EXIT_ATTENTION: Final = 1
EXIT_CANNOT_ASK: Final = 2
# The answers that are about the thing asked for, not about the asking.
_REFUSALS: Final = frozenset({404, 409})
_TOKEN_HINT: Final = "--token TOKEN or AGENTS_WATCHDOG_TOKEN=TOKEN"
_URL_FORMS: Final = (
    "give http://HOST:PORT, https://HOST[:PORT] or unix:///path/to/socket "
    "(--url or AGENTS_WATCHDOG_URL)"
)


class SidecarError(Exception):
    """A request that did not get the answer it wanted; ``str()`` says why."""

    exit_code: int = EXIT_CANNOT_ASK


class CannotAsk(SidecarError):
    """The sidecar could not be asked, or its answer cannot be used (exit code 2)."""

    exit_code = EXIT_CANNOT_ASK


class Refused(SidecarError):
    """The sidecar answered: the span or incident asked about is not there, or is not
    one (exit code 1). ``status`` is the HTTP status, ``error`` the sidecar's reason."""

    exit_code = EXIT_ATTENTION

    def __init__(self, message: str, status: int, error: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class SidecarClient:
    """HTTP to one sidecar: ``url`` is ``http://HOST:PORT``, ``https://…`` or
    ``unix:///path/to/socket``; ``token``, when given, goes in ``Authorization: Bearer``.

    Construction raises :class:`CannotAsk` for a URL of any other form. Use it as a
    context manager, or call :meth:`close`, to release its connections.
    """

    def __init__(
        self, url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.url = url
        self.token = token or None
        self.timeout = timeout
        transport: httpx.HTTPTransport | None = None
        self._socket_path: str | None = None
        if url.startswith("unix:///"):
            # The socket path is the whole rest of the URL; the host name is only
            # what the Host header says.
            self._socket_path = url.removeprefix("unix://")
            transport = httpx.HTTPTransport(uds=self._socket_path)
            base = "http://agents-watchdog"
        else:
            base = url.rstrip("/")
        try:
            parsed = httpx.URL(base)
        except httpx.InvalidURL as exc:
            raise CannotAsk(f"bad sidecar URL {url!r}: {exc}; {_URL_FORMS}") from None
        if parsed.scheme not in {"http", "https"} or not parsed.host:
            raise CannotAsk(f"bad sidecar URL {url!r}: {_URL_FORMS}")
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        # trust_env=False: the sidecar is near; a proxy from the environment would only
        # add a way to fail.
        self._http = httpx.Client(
            base_url=parsed, headers=headers, timeout=timeout, transport=transport, trust_env=False
        )

    @classmethod
    def configured(
        cls, url: str | None, token: str | None, timeout: float | None = None
    ) -> SidecarClient:
        """A client for :func:`sidecar_url` of ``url``, with ``token`` (else
        ``$AGENTS_WATCHDOG_TOKEN``; empty means none)."""
        return cls(
            sidecar_url(url),
            token or os.environ.get("AGENTS_WATCHDOG_TOKEN") or None,
            DEFAULT_TIMEOUT if timeout is None else timeout,
        )

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """The JSON body of ``GET path`` (``None`` params left out) when it answers 200;
        raises :class:`SidecarError` otherwise."""
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any, expect: int = 200) -> Any:
        """The JSON body of ``POST path`` with ``body`` as JSON when it answers
        ``expect``; raises :class:`SidecarError` otherwise."""
        return self.request("POST", path, body=body, expect=expect)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        expect: int = 200,
    ) -> Any:
        """Send one request; the decoded JSON body when the status is ``expect``.

        Raises :class:`CannotAsk` when the sidecar is unreachable or silent for
        ``timeout`` seconds, refuses the token (401/403), or answers anything that is
        not its JSON; :class:`Refused` when it answers 404 or 409 with its reason.
        """
        if self._socket_path is not None:
            self._check_socket(self._socket_path)
        try:
            response = self._http.request(
                method,
                path,
                params={k: v for k, v in (params or {}).items() if v is not None},
                json=body,
            )
        except httpx.TimeoutException:
            raise CannotAsk(
                f"the sidecar at {self.url} did not answer {method} {path} within "
                f"{self.timeout:g} s (--timeout)"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CannotAsk(f"cannot reach the sidecar at {self.url}: {exc}") from None
        try:
            reply = response.json()
        except ValueError:
            reply = None
        code = response.status_code
        if code == expect and reply is not None:
            return reply
        if code == expect:
            raise CannotAsk(
                f"unexpected answer from {self.url}: {method} {path} answered {code} "
                f"with no JSON: {response.text[:200]!r}"
            )
        raise self._failure(method, path, code, reply, response.text)

    def _check_socket(self, path: str) -> None:
        # Said before connecting, because "no such file" alone does not say which
        # file, and because httpcore leaves the socket of a failed connect unclosed.
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise CannotAsk(
                f"cannot reach the sidecar at {self.url}: no socket at {path} "
                f"({exc.strerror}); is the sidecar running with --unix-socket {path}?"
            ) from None
        if not stat.S_ISSOCK(mode):
            raise CannotAsk(f"cannot reach the sidecar at {self.url}: {path} is not a socket")

    def _failure(self, method: str, path: str, code: int, reply: Any, text: str) -> SidecarError:
        if not (isinstance(reply, dict) and "error" in reply):
            # Not the sidecar's error shape: another server, a proxy, or an old sidecar.
            return CannotAsk(
                f"unexpected answer from {self.url}: {method} {path} answered {code}: "
                f"{text[:200]!r}"
            )
        error, detail = str(reply["error"]), str(reply.get("detail", ""))
        said = f"{method} {path} answered {code} {error}: {detail}"
        if code == 401 and self.token is None:
            return CannotAsk(
                f"the sidecar at {self.url} needs a token and none was given ({said}); "
                f"give it with {_TOKEN_HINT}"
            )
        if code == 401:
            return CannotAsk(
                f"the sidecar at {self.url} refused the token given as wrong ({said}); "
                f"give the sidecar's own token with {_TOKEN_HINT}"
            )
        if code in _REFUSALS:
            return Refused(f"{error}: {detail}", code, error)
        if code >= 500:
            return CannotAsk(f"the sidecar at {self.url} failed: {said}")
        return CannotAsk(f"the sidecar at {self.url} refused: {said}")

    def close(self) -> None:
        """Release the client's connections; safe to call twice."""
        self._http.close()

    def __enter__(self) -> SidecarClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def sidecar_url(url: str | None) -> str:
    """``url``, else ``$AGENTS_WATCHDOG_URL``, else :data:`DEFAULT_URL`."""
    return url or os.environ.get("AGENTS_WATCHDOG_URL") or DEFAULT_URL


def print_failure(error: SidecarError, url: str, as_json: bool) -> int:
    """Report ``error`` as ``--json`` output on stdout (``url``, ``exit_code``,
    ``error``) or as one line on stderr; returns its exit code."""
    if as_json:
        print(json.dumps({"url": url, "exit_code": error.exit_code, "error": str(error)}))
    else:
        print(f"agents-watchdog: {error}", file=sys.stderr)
    return error.exit_code
