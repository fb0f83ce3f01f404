"""OAuth client-credentials tokens for `http` targets' connections: fetched, cached, refreshed.

A connection with `oauth_client_credentials` trades its client id and secret for an access
token at its `token_url` (RFC 6749 section 4.4: `grant_type=client_credentials`, the client
authenticated with HTTP Basic, section 2.3.1), plus the connection's `oauth_http_parameters`
(extra headers and query parameters). The token is kept per connection until shortly before
its `expires_in` (EventBridge refreshes a token about to expire), or until the endpoint
answers 401 or 407 (`forget`; EventBridge refreshes then too). Concurrent calls of one
connection share one fetch. Neither the secret nor the token is logged or put in an error.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

import aiohttp
import msgspec

from bus.config.model import Connection, OAuthClientCredentials

REFRESH_MARGIN = 30.0  # seconds before expiry a token is fetched again (at most a tenth of its life)
ANSWER_BYTES = 1024  # of a refusal, kept for the error message


class TokenError(Exception):
    """The token endpoint gave no token. `kind`/`retryable` as the http invoker classifies answers."""

    def __init__(self, message: str, kind: str, retryable: bool):
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable


class _TokenAnswer(msgspec.Struct):
    access_token: str
    expires_in: float | str | None = None


@dataclass(frozen=True)
class _Token:
    value: str
    good_until: float  # monotonic seconds; inf: no expires_in given, kept until refused


def _cache_key(connection: Connection, auth: OAuthClientCredentials) -> tuple:
    # A connection updated through the API (new secret, new endpoint) has a new `modified`.
    return connection.name, connection.uuid, connection.modified, auth.token_url, auth.client_id


class TokenCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._tokens: dict[tuple, _Token] = {}
        self._fetching: dict[tuple, asyncio.Future[_Token]] = {}

    async def token(self, session: aiohttp.ClientSession, connection: Connection, secret: str,
                    timeout: float) -> str:
        """A token for `connection` (its authorization is oauth_client_credentials); TokenError if none."""
        auth = connection.authorization.oauth_client_credentials
        assert auth is not None
        key = _cache_key(connection, auth)
        cached = self._tokens.get(key)
        if cached and self.clock() < cached.good_until:
            return cached.value
        fetching = self._fetching.get(key)
        if fetching is None:
            fetching = asyncio.ensure_future(self._fetch(session, auth, secret, timeout))
            self._fetching[key] = fetching
            fetching.add_done_callback(lambda _: self._fetching.pop(key, None))
        token = await asyncio.shield(fetching)  # one caller's cancellation must not end the others' fetch
        self._tokens[key] = token
        return token.value

    def forget(self, connection: Connection, token: str) -> None:
        """The endpoint refused `token` (401/407): the next call fetches a new one. A newer token
        that a concurrent call already fetched is kept."""
        auth = connection.authorization.oauth_client_credentials
        if auth is None:
            return
        key = _cache_key(connection, auth)
        cached = self._tokens.get(key)
        if cached and cached.value == token:
            del self._tokens[key]

    async def _fetch(self, session: aiohttp.ClientSession, auth: OAuthClientCredentials, secret: str,
                     timeout: float) -> _Token:
        extra = auth.oauth_http_parameters
        form = {"grant_type": "client_credentials", **({"scope": auth.scope} if auth.scope else {})}
        params = dict(extra.query_string_parameters) if extra else {}
        headers = {**(extra.header_parameters if extra else {}), "Accept": "application/json",
                   "Authorization": aiohttp.encode_basic_auth(auth.client_id, secret)}
        if auth.http_method == "GET":  # no body on a GET: the grant goes in the query
            params, form = {**params, **form}, None
        started = self.clock()
        try:
            async with session.request(auth.http_method, auth.token_url, params=params, data=form, headers=headers,
                                       allow_redirects=False,
                                       timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if not 200 <= resp.status < 300:
                    start = (await resp.content.read(ANSWER_BYTES)).decode("utf-8", errors="replace")
                    raise _refused(resp.status, start)
                body = await resp.read()
        except asyncio.TimeoutError:
            raise TokenError(f"OAuth token endpoint did not answer within {timeout:g} s", "timeout", True) from None
        except aiohttp.ClientError as exc:
            raise TokenError(f"OAuth token endpoint unreachable: {type(exc).__name__}: {exc}", "network",
                             True) from None
        return _token_of(body, started)


def _refused(status: int, start: str) -> TokenError:
    retryable = status >= 500 or status in (408, 429)
    kind = f"http_{status // 100}xx"
    return TokenError(f"OAuth token endpoint answered HTTP {status}: {start}", kind, retryable)


def _token_of(body: bytes, started: float) -> _Token:
    try:
        answer = msgspec.json.decode(body, type=_TokenAnswer)
        lifetime = None if answer.expires_in in (None, "") else float(answer.expires_in)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        raise TokenError("OAuth token endpoint answered without a JSON access_token", "auth", False) from None
    if lifetime is None:
        return _Token(answer.access_token, float("inf"))
    # Counted from when we asked: the endpoint's clock started no earlier.
    return _Token(answer.access_token, started + lifetime - min(REFRESH_MARGIN, lifetime / 10))
