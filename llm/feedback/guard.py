"""What every request to the feedback server passes before a route sees it, and what every answer carries.

- Host: on a loopback address only the loopback names are accepted, so a page of another site whose name
  resolves to 127.0.0.1 (DNS rebinding) is refused; a server exposed beyond loopback checks a token instead.
- Origin: a browser names the page that sent a request; one from another origin is refused, and a POST
  must say `Content-Type: application/json`, which no form and no "simple" cross-site request can send.
- A token: with tokens set (a server exposed beyond loopback), every /api/ and /v1/ request carries one in
  `Authorization: Bearer <token>` (an OpenAI client's API key); the rater it belongs to is the name written
  with that person's answers. An API client sends no Origin, so only the Host and token checks concern it.
- Headers that forbid framing, sniffing and referrers; a body over the limit is refused before it is read.
- A deadline for reading a request (uvicorn has none for headers): a client that has not sent its whole
  request in time is disconnected, so idle half-open connections cannot pile up.
"""

from __future__ import annotations

import json
import sys
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_BODY_BYTES = 1 << 20
READ_TIMEOUT_S = 20.0
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'; default-src 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


def host_name(host: str) -> str:
    """The name part of a Host header: `[::1]:8000` -> `::1`, `localhost:8000` -> `localhost`."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware: refuses what must not reach a route, adds the security headers, logs when asked."""

    def __init__(self, app, hosts: frozenset[str] | None = LOOPBACK_NAMES, tokens: dict[str, str] | None = None,
                 log: bool = False):
        self.app, self.hosts, self.tokens, self.log = app, hosts, tokens, log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        scope.setdefault("state", {})["rater"] = self.rater(headers)
        status_of: list[int] = []

        async def send_secured(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
                status_of.append(message["status"])
            await send(message)

        refusal = self.refusal(scope, headers)
        if refusal:
            await refuse(*refusal, scope["path"], send_secured)
        else:
            await self.app(scope, receive, send_secured)
        if self.log:
            client = scope.get("client") or ("?", 0)
            print(f"{time.strftime('%H:%M:%S')} {client[0]} {scope['method']} {scope['path']} "
                  f"{status_of[0] if status_of else '-'} rater={scope['state']['rater'] or '-'}", file=sys.stderr, flush=True)

    def rater(self, headers: dict[str, str]) -> str | None:
        if self.tokens is None:
            return ""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return self.tokens.get(token) if scheme.lower() == "bearer" else None

    def refusal(self, scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if self.hosts is not None and host_name(host) not in self.hosts:
            return 403, f"Host {host[:60]!r} is not this server's name; open the address the server printed"
        origin = headers.get("origin")
        if origin is not None and origin != f"{scope.get('scheme', 'http')}://{host}":
            return 403, "a request from another site's page is refused"
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return 403, "a request from another site's page is refused"
        if scope["path"].startswith(("/api/", "/v1/")) and scope["state"]["rater"] is None:
            if scope["path"].startswith("/v1/"):
                return 401, "this server needs a token: give a rater's token (printed at start) as the API key"
            return 401, "this server needs a token: open the address with #token=... that the server printed for you"
        if scope["method"] == "POST":
            if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
                return 415, "a POST must have Content-Type: application/json"
            length = headers.get("content-length", "0")
            if not length.isdigit():
                return 400, f"Content-Length must be a number of bytes; got {length[:30]!r}"
            if int(length) > MAX_BODY_BYTES:
                return 413, f"the request body is over {MAX_BODY_BYTES} bytes"
        return None


async def refuse(status: int, message: str, path: str, send) -> None:
    """The refusal as its client reads it: the pages' one line, or under /v1/ the OpenAI API's error object."""
    error = openai_error(status, message) if path.startswith("/v1/") else {"error": message}
    body = json.dumps(error).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """An error as the OpenAI API words it (its clients raise a typed exception from the status and read this)."""
    if code is None:
        code = {401: "invalid_api_key", 413: "request_too_large", 429: "rate_limit_exceeded"}.get(status)
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline to read each request, headers and body: at READ_TIMEOUT_S from
    the connection (or the previous response) a request not yet read whole closes the connection."""

    read_timeout_s = READ_TIMEOUT_S

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.read_deadline = self.loop.call_later(self.read_timeout_s, self.read_too_slow)

    def on_response_complete(self) -> None:
        self.read_deadline.cancel()
        self.read_deadline = self.loop.call_later(self.read_timeout_s, self.read_too_slow)
        super().on_response_complete()

    def connection_lost(self, exc) -> None:
        self.read_deadline.cancel()
        super().connection_lost(exc)

    def read_too_slow(self) -> None:
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.transport.close()
