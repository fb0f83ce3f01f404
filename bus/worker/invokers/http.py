"""The http invoker: an HttpTarget's input sent to its API destination, as EventBridge sends it.

One request per attempt, from one pooled aiohttp session per worker (made in the worker's
loop on first use, closed by close()): the destination's method and endpoint (each `*`
filled in order from the target's path_parameter_values), header and query parameters from
the target and then the connection (the connection's win, as AWS merges them), the
connection's authorization, the target's input as the body, `Content-Type: application/json;
charset=utf-8` and `User-Agent: Amazon/EventBridge/ApiDestinations`, and a TIMEOUT (5 s, as
AWS's). A parameter value that is a JSONPath (`$.detail.id`) is read from the original event,
as AWS's dynamic parameters are; one that finds nothing leaves its header or query parameter
out (a path segment empty).

How answers end (as AWS classifies them): 2xx delivered; 401, 407, 409, 429, 5xx, timeouts
and network errors retried under the retry policy (Retry-After, seconds or a date, asks for
a later retry); any other status, a redirect included (not followed: it would send the event,
and the credentials, somewhere else), goes straight to the DLQ with the status and the first
1 KB of the answer in its message. A 401 or 407 also drops the connection's OAuth token.

Each destination's invocation_rate_limit_per_second holds across all workers: a turn is taken
in Redis before each request (bus.worker.rate_turns: the calls of one loop turn share one
Queue.take_rates call, and a busy worker keeps a small reserve of turns taken ahead; its
docstring has the bound this keeps). A turn due within RATE_MAX_WAIT is waited for here
(pacing); a later one is not taken, and the delivery is THROTTLED for the wait the limit names
(no attempt used), as it is while Redis cannot be asked. Secrets are resolved just
before the request (bus.secrets) and scrubbed from every message this module makes.
"""
from __future__ import annotations

import asyncio
import datetime
import email.utils
import functools
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
from multidict import CIMultiDict
from yarl import URL

from bus import secrets
from bus.config.model import ApiDestination, Connection, HttpParameters
from bus.store.connect import unreachable
from bus.store.queue import Queue
from bus.transform.jsonpath import Path, PathError, compile_path
from bus.worker.invoker import Invocation, Result, throttled
from bus.worker.oauth import TokenCache, TokenError
from bus.worker.rate_turns import Refused, Turns, reserve_cap

TIMEOUT = float(os.environ.get("BUS_HTTP_TIMEOUT") or 5.0)  # seconds per request, as AWS's
USER_AGENT = "Amazon/EventBridge/ApiDestinations"
CONTENT_TYPE = "application/json; charset=utf-8"
RETRIED_STATUSES = frozenset({401, 407, 409, 429})  # and every 5xx
REFRESH_STATUSES = frozenset({401, 407})  # the OAuth token is fetched again
ERROR_BODY_BYTES = 1024  # of a failed answer, kept in the dead letter's message
ANSWER_LIMIT = 1 << 20  # of a 2xx answer, read (and dropped) so its connection can be reused
RATE_MAX_WAIT = 0.1  # seconds a call may wait in the worker for its turn under the rate limit
FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})  # aiohttp's to set
DYNAMIC = re.compile(r"^\$(\.[\w/_-]+(\[(\d+|\*)\])*)*$")  # a JSONPath value (AWS's pattern for them)
_PLACED = object()


class HttpInvoker:
    def __init__(self, queue: Queue, timeout: float = TIMEOUT, rate_max_wait: float = RATE_MAX_WAIT):
        self.queue = queue
        self.timeout = timeout
        self.rate_max_wait = rate_max_wait
        self.tokens = TokenCache()
        self._turns: dict[tuple[str, int], Turns] = {}
        self._session: aiohttp.ClientSession | None = None

    def place(self, call: Invocation, may_run: bool) -> object | None:
        return _PLACED if may_run else None  # nothing to queue behind: a request runs when it may

    async def invoke(self, call: Invocation, placed: Any) -> Result:
        destination, connection = call.record.destination, call.record.connection
        if destination is None or connection is None:
            call.begin()
            missing = f"api destination {call.record.target.http}" if destination is None else \
                f"connection {destination.connection} of api destination {destination.name}"
            return _unusable("NoSuchResource", f"{missing} does not exist")
        waited = await self._turn(destination)
        if waited is not None:
            return waited
        call.begin()
        started = time.perf_counter()
        result = await self._send(call, destination, connection)
        result.seconds = time.perf_counter() - started
        return result

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the rate limit -------------------------------------------------------------------

    async def _turn(self, destination: ApiDestination) -> Result | None:
        """None once this call may go (after waiting for its turn), or the THROTTLED result."""
        rate = destination.invocation_rate_limit_per_second
        try:
            turn = await self._turns_of(destination.name, rate).next()
        except Exception as exc:
            if not unreachable(exc):
                raise
            # No turn can be had while Redis is away: wait like a throttled delivery (no attempt
            # used); its outcome is written once Redis answers.
            return throttled("Redis is unreachable: no turn under the invocation rate limit")
        if isinstance(turn, Refused):
            over = throttled(f"over api destination {destination.name}'s invocation_rate_limit_per_second ({rate})")
            return msgspec.structs.replace(over, retry_after=turn.wait)
        wait = turn - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        return None

    def _turns_of(self, name: str, rate: int) -> Turns:
        """The destination's turns in this worker (one per name and rate: a new rate starts afresh)."""
        turns = self._turns.get((name, rate))
        if turns is None:
            turns = self._turns[(name, rate)] = Turns(
                lambda count: self.queue.take_rates(name, rate, self.rate_max_wait, count),
                self.rate_max_wait, reserve_cap(rate))
        return turns

    # --- the request ----------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No cookie jar: one destination's cookies must not reach another's requests.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def _send(self, call: Invocation, destination: ApiDestination, connection: Connection) -> Result:
        if connection.deauthorized:
            return _unusable("ConnectionDeauthorized", f"connection {connection.name} is deauthorized: "
                             "update it with new credentials to send to it again")
        session = self._client()
        credentials = Credentials()
        try:
            credentials = await self._credentials(session, connection)
            request = build_request(destination, call.record.target.http_parameters,
                                    connection.invocation_http_parameters, bytes(call.delivery.event))
            request.headers[credentials.header] = credentials.value
            result, status = await self._request(session, request, destination, call.body())
        except secrets.SecretsUnavailable as exc:  # names the variable or the key, never a value
            return _unusable("SecretsUnavailable", str(exc))
        except TokenError as exc:
            return Result(False, exc.kind, "OAuthTokenError", credentials.scrub(str(exc)), retryable=exc.retryable)
        if status in REFRESH_STATUSES and credentials.token:
            self.tokens.forget(connection, credentials.token)
        return msgspec.structs.replace(result, message=credentials.scrub(result.message))

    async def _credentials(self, session: aiohttp.ClientSession, connection: Connection) -> Credentials:
        auth = connection.authorization
        if auth.api_key:
            key = secrets.resolve(auth.api_key.value_from_env, auth.api_key.value_sealed)
            return Credentials(auth.api_key.header, key, [key])
        if auth.basic:
            password = secrets.resolve(auth.basic.password_from_env, auth.basic.password_sealed)
            value = aiohttp.encode_basic_auth(auth.basic.username, password)
            return Credentials("Authorization", value, [password, value])
        if auth.oauth_client_credentials:
            oauth = auth.oauth_client_credentials
            secret = secrets.resolve(oauth.client_secret_from_env, oauth.client_secret_sealed)
            hidden = Credentials(hidden=[secret])  # scrubs a TokenError's message
            try:
                token = await self.tokens.token(session, connection, secret, self.timeout)
            except TokenError as exc:
                raise TokenError(hidden.scrub(str(exc)), exc.kind, exc.retryable) from None
            return Credentials("Authorization", f"Bearer {token}", [secret, token], token=token)
        raise secrets.SecretsUnavailable(f"connection {connection.name} has no authorization")

    async def _request(self, session: aiohttp.ClientSession, request: Request, destination: ApiDestination,
                       body: bytes) -> tuple[Result, int | None]:
        """How the request ended, and the answer's status if there was one."""
        try:
            async with session.request(request.method, request.url, data=body, headers=request.headers,
                                       allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    await read_start(resp, ANSWER_LIMIT)
                    return Result(True), resp.status
                start = (await read_start(resp, ERROR_BODY_BYTES)).decode("utf-8", errors="replace")
                return answer_result(destination.name, resp.status, resp.reason or "", start,
                                     resp.headers.get("Retry-After"), time.time()), resp.status
        except asyncio.TimeoutError:  # before ClientError: aiohttp's timeouts are both
            return Result(False, "timeout", "Timeout",
                          f"api destination {destination.name} did not answer within {self.timeout:g} s"), None
        except aiohttp.ClientError as exc:
            if isinstance(exc, aiohttp.InvalidURL):
                return _unusable("InvalidRequest", f"api destination {destination.name}: invalid URL: {exc}"), None
            return Result(False, "network", type(exc).__name__, f"api destination {destination.name}: {exc}"), None
        except ValueError as exc:  # a header value aiohttp refuses (a newline read from the event)
            return _unusable("InvalidRequest", f"api destination {destination.name}: {exc}"), None


@dataclass
class Credentials:
    """The authorization header of one request, and every secret text to keep out of messages."""

    header: str = "Authorization"
    value: str = ""
    hidden: list[str] = field(default_factory=list)
    token: str | None = None  # an OAuth token, dropped from the cache if refused

    def scrub(self, text: str) -> str:
        for secret in self.hidden:
            if secret:
                text = text.replace(secret, "***")
        return text


def _unusable(error_type: str, message: str) -> Result:
    """A delivery no retry can help (configuration): straight to the DLQ."""
    return Result(False, "config", error_type, message, retryable=False)


async def read_start(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Up to `limit` bytes of an answer's body."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await resp.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# --- pure decisions: the request, and what an answer means -----------------------------------

@dataclass
class Request:
    method: str
    url: URL
    headers: CIMultiDict[str]


def build_request(destination: ApiDestination, target: HttpParameters | None, connection: HttpParameters | None,
                  event: bytes) -> Request:
    """The request for one event, without its authorization header."""
    values = _Values(event)
    target, connection = target or HttpParameters(), connection or HttpParameters()
    url = URL(fill_path(destination.endpoint, [values.text(v) or "" for v in target.path_parameter_values]))
    query: dict[str, str] = {}
    headers: CIMultiDict[str] = CIMultiDict({"Content-Type": CONTENT_TYPE, "User-Agent": USER_AGENT})
    for params in (target, connection):  # the connection's win (AWS: "values from the Connection take precedence")
        query.update(values.present(params.query_string_parameters))
        for name, value in values.present(params.header_parameters).items():
            if name.lower() not in FRAMING_HEADERS:
                headers[name] = value
    return Request(destination.method, url.extend_query(query) if query else url, headers)


def fill_path(endpoint: str, values: list[str]) -> str:
    """Each `*` of the endpoint, in order, replaced by the next value (percent-encoded; none left: empty)."""
    parts = endpoint.split("*")
    filled = [parts[0]]
    for i, part in enumerate(parts[1:]):
        filled.append(quote(values[i], safe="") if i < len(values) else "")
        filled.append(part)
    return "".join(filled)


class _Values:
    """Parameter values: constants, or JSONPaths read from the original event (decoded once, if needed)."""

    def __init__(self, event: bytes):
        self.event = event
        self._doc: Any = _UNREAD

    def text(self, value: str) -> str | None:
        if not DYNAMIC.match(value):
            return value
        if self._doc is _UNREAD:
            self._doc = msgspec.json.decode(self.event)
        found = path_value(value, self._doc)
        if found is _MISSING:
            return None
        return found if isinstance(found, str) else msgspec.json.encode(found).decode()

    def present(self, params: dict[str, str]) -> dict[str, str]:
        out = {}
        for name, value in params.items():
            text = self.text(value)
            if text is not None:
                out[name] = text
        return out


_UNREAD = object()
_MISSING = object()


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Path | None:
    try:
        return compile_path(text)
    except PathError:  # looks like a path, but EventBridge's would refuse it: a constant, then
        return None


def path_value(text: str, doc: Any) -> Any:
    """What a JSONPath finds in `doc`: the value (all matches, as a list, for a wildcard path),
    `text` itself if it is no path EventBridge accepts, or _MISSING."""
    path = _compiled(text)
    if path is None:
        return text
    found = path.find(doc)
    if not found:
        return _MISSING
    return found[0] if path.definite else found


def answer_result(destination: str, status: int, reason: str, body_start: str, retry_after: str | None,
                  now: float) -> Result:
    """A non-2xx answer as a failed Result: retried as AWS retries, or straight to the DLQ."""
    retryable = status in RETRIED_STATUSES or 500 <= status < 600
    kind = f"http_{status // 100}xx" if 100 <= status < 600 else "http_other"
    answered = f"api destination {destination} answered {status} {reason}".rstrip()
    message = f"{answered}: {body_start}" if body_start else answered
    return Result(False, kind, f"HTTP {status}", message, retryable=retryable,
                  retry_after=parse_retry_after(retry_after, now) if retryable else None)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After in seconds from `now`: delay-seconds (a negative one, as AWS reads it, stops the
    retries) or an HTTP date (one in the past: retry as soon as the policy says); None if unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - now)
