"""Connection hygiene for the broker: how long a client may take to send its request, how many
connections it may hold, how long an idle keep-alive connection lives, and how big a body may be.

aiohttp bounds none of the first two itself (its keep-alive timer is the only clock, and it runs
for an hour by default), so a client trickling its headers one byte at a time, or opening
connections and never using them, would hold them forever. Here:

- `GuardedHandler` (aiohttp's RequestHandler) closes a connection whose request headers are not
  complete `header_timeout` s after the connection opened or after the request's first byte, and
  refuses a connection beyond `max_connections` at once (503, then close);
- `body_limits` (a middleware, first in the chain) reads every request body within
  `body_timeout` s and `max_body` bytes, on every route, GET included: a slow body is a 408, an
  oversize one a 413 (on the AWS API and the native event routes a 400 ValidationException, as
  AWS answers), never a 5xx;
- `LimitedRunner` (web.AppRunner) serves the app through them, with aiohttp's keep-alive timer
  set to `idle_timeout`.

The figures come from `Limits.from_env()` (BUS_HEADER_TIMEOUT, BUS_BODY_TIMEOUT,
BUS_KEEPALIVE_TIMEOUT, BUS_MAX_CONNECTIONS), so tests and operators set them without a flag.
Written against aiohttp 3.14: GuardedHandler reads RequestHandler's `_request_count`, `_messages`,
`_keepalive_handle`, `_request_in_progress` and `_force_close`, GuardedServer Server's `_kwargs`
and `_loop` (aiohttp offers no hook for any of this); tests/test_connections.py fails if they change.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

import msgspec
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server
from aiohttp.streams import StreamReader

from bus.broker.awsapi import CONTENT_TYPE, error_response

log = logging.getLogger("bus.broker")

# The routes whose oversize bodies were a 400 ValidationException before this module (AWS's answer
# for PutEvents over the limit); every other route answers 413.
EVENT_PATHS = frozenset({"/", "/events", "/test-event-pattern"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Limits:
    """Seconds and counts; the defaults are what `bus serve` uses."""

    header_timeout: float = 10.0   # request line + headers, from connect or from the request's first byte
    body_timeout: float = 30.0     # the whole body, from the end of the headers: ~140 KiB/s for a 4 MiB body
    idle_timeout: float = 75.0     # idle keep-alive; above the 60 s of a load balancer in front, so it closes first
    max_connections: int = 1000    # per broker process; more are answered 503 and closed
    max_body: int = 4 * 1024 * 1024  # beyond AWS's 1 MiB of entries, so PutEvents gets AWS's own error first

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Limits":
        env = os.environ if env is None else env
        default = cls()

        def number(name: str, fallback: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return fallback
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a positive number, not {raw!r}") from None
            if value <= 0:
                raise ValueError(f"{name} must be a positive number, not {raw!r}")
            return value

        return cls(
            header_timeout=number("BUS_HEADER_TIMEOUT", default.header_timeout),
            body_timeout=number("BUS_BODY_TIMEOUT", default.body_timeout),
            idle_timeout=number("BUS_KEEPALIVE_TIMEOUT", default.idle_timeout),
            max_connections=int(number("BUS_MAX_CONNECTIONS", default.max_connections)),
        )


def _raw_response(status: str, body: dict[str, str] | None, extra: str = "") -> bytes:
    """A whole HTTP/1.1 answer for a connection aiohttp is not handling a request on."""
    payload = msgspec.json.encode(body) if body else b""
    head = (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {len(payload)}\r\n{extra}"
            + (f"Content-Type: {CONTENT_TYPE}\r\n" if payload else "") + "\r\n")
    return head.encode() + payload


# ThrottlingException on a 503: botocore backs off and retries it, as it does AWS's own throttling.
_REFUSED = _raw_response("503 Service Unavailable", {
    "__type": "ThrottlingException", "message": "Too many open connections to this broker; retry shortly."},
    "Retry-After: 1\r\n")
_HEADERS_TOO_SLOW = _raw_response("408 Request Timeout", None)


class _Sparse:
    """Logs a repeated event at most once per `period` s, saying how many went unlogged: a
    flood of refusals or slow clients must not become a flood of log lines."""

    def __init__(self, level: int, period: float = 10.0):
        self.level, self.period = level, period
        self.next_at = 0.0
        self.unlogged = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.unlogged += 1
            return
        if self.unlogged:
            message += " (and %d more like it since the last such line)"
            args = (*args, self.unlogged)
        log.log(self.level, message, *args)
        self.unlogged, self.next_at = 0, now + self.period


_log_refused = _Sparse(logging.WARNING)
_log_slow_headers = _Sparse(logging.INFO)
_log_slow_body = _Sparse(logging.INFO)


class ConnectionGate:
    """Counts a server's open connections against its cap."""

    def __init__(self, cap: int):
        self.cap = cap
        self.open = 0

    def admit(self) -> bool:
        if self.open >= self.cap:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1


class GuardedHandler(RequestHandler):
    """RequestHandler with a header deadline and the connection cap.

    The deadline runs while the parser holds an incomplete request line or headers: from
    connection_made, and on a keep-alive connection from the first byte after the previous body.
    aiohttp's own keep-alive timer stays in charge of idle connections (no byte of a next request).
    """

    __slots__ = ("_gate", "_header_timeout", "_header_timer", "_admitted", "_body", "_bytes_of_request")

    def __init__(self, manager: "GuardedServer", **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._gate = manager.gate
        self._header_timeout = manager.limits.header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._admitted = False
        self._body: StreamReader | None = None  # the last parsed request's body, while it may still be arriving
        self._bytes_of_request = False  # bytes of the headers under the deadline have arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._gate.admit():
            # Refused before aiohttp starts a task or reads a byte: a flood costs one write each.
            _log_refused("connection refused: %d connections open (BUS_MAX_CONNECTIONS)", self._gate.open)
            # No isinstance check: uvloop's transports write but are not asyncio.WriteTransport subclasses.
            transport.write(_REFUSED)  # type: ignore[attr-defined]
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return  # never handed to aiohttp: nothing of it to tear down
        self._admitted = False
        self._gate.release()
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        in_body = self._body is not None and not self._body.is_eof()
        requests_before = self._request_count  # aiohttp counts every parsed request line + headers
        super().data_received(data)
        if self._request_count != requests_before:
            # Headers complete: the body has its own deadline (body_limits), the next request starts
            # when its first byte arrives. data_received has just queued it: start() pops later.
            self._cancel_header_timer()
            self._body = self._messages[-1][1] if self._messages else None
        elif data and not in_body:
            # The first bytes of a request on a kept-alive connection (or more of a fresh one's):
            # the idle timer no longer applies, the header deadline does. start() re-arms aiohttp's
            # keep-alive timer after the response, only when its handle is None.
            self._bytes_of_request = True
            if self._header_timer is None:
                self._arm_header_timer()
            if self._keepalive_handle is not None:
                self._keepalive_handle.cancel()
                self._keepalive_handle = None

    def _arm_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(self._header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        self._bytes_of_request = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport is None or self._force_close:
            return
        _log_slow_headers("closed a connection from %s: request headers not complete within %g s",
                 self.peername, self._header_timeout)
        # A 408 only to a client that began a request and is not being answered; to a silent one
        # it could be read as the answer to the request it sends next, so it is just closed.
        if self._bytes_of_request and not self._request_in_progress and not self._messages:
            self.transport.write(_HEADERS_TOO_SLOW)
        self.force_close()


class GuardedServer(Server):
    """aiohttp's Server (the protocol factory a site listens with), making GuardedHandlers."""

    def __init__(self, handler: Any, *, limits: Limits, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.gate = ConnectionGate(limits.max_connections)

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)


class LimitedRunner(web.AppRunner):
    """web.AppRunner serving through GuardedServer, with the idle keep-alive timeout set."""

    __slots__ = ("_limits",)

    def __init__(self, app: web.Application, limits: Limits, **kwargs: Any):
        super().__init__(app, keepalive_timeout=limits.idle_timeout, **kwargs)
        self._limits = limits

    async def _make_server(self) -> Server:
        plain = await super()._make_server()  # the app's startup and freeze, as AppRunner does them
        # aiohttp has no hook for the protocol class: the same Server, rebuilt as a GuardedServer.
        return GuardedServer(plain.request_handler, request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation, loop=plain._loop,
                             limits=self._limits, **plain._kwargs)


def body_limits(limits: Limits):
    """Middleware: read the body of every request, on every route, within the limits.

    The routes read bodies themselves, but GET routes never do (aiohttp then drains what came
    unread), and a slow body would hold a route forever. aiohttp keeps the bytes read here, so
    the auth middleware and the route read them again for free."""
    @web.middleware
    async def read_body_within_limits(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            if request.content_length is not None and request.content_length > limits.max_body:
                return _too_large(request, limits)  # refused before a byte of it is buffered
            try:
                if request.content.is_eof():  # all of it has arrived: no clock needed (wait_for makes a task)
                    await request.read()
                else:
                    await asyncio.wait_for(request.read(), limits.body_timeout)
            except web.HTTPRequestEntityTooLarge:  # chunked, or a Content-Length that lied
                return _too_large(request, limits)
            except asyncio.TimeoutError:
                _log_slow_body("answered 408 to %s %s from %s: body not received within %g s",
                         request.method, request.path, request.remote, limits.body_timeout)
                return _closing(error_response(
                    "RequestTimeoutException",
                    f"The request body was not received within {limits.body_timeout:g} seconds.", 408))
        return await handler(request)
    return read_body_within_limits


def _too_large(request: web.Request, limits: Limits) -> web.Response:
    if request.path in EVENT_PATHS:
        # What AWS (and botocore's callers) expect for a PutEvents over the limit, and what these
        # routes answered before this check existed.
        return _closing(error_response("ValidationException",
                                       "Total size of the entries in the request is over the limit."))
    return _closing(error_response("RequestEntityTooLargeException",
                                   f"The request body is over the limit of {limits.max_body} bytes.", 413))


def _closing(response: web.Response) -> web.Response:
    # The rest of the body is not wanted: aiohttp drains it for a while (lingering), then closes.
    response.force_close()
    return response
