"""The aiohttp middleware: authenticate every request (SigV4, or a bearer token on the native
API), check the policy for its action, and hand the principal's bus check (its `buses:` and the
bus policies of PutPermission) to ingest: PutEvents, POST /events and POST /cloudevents alike.

/metrics and /healthz stay open: Prometheus and the orchestrators' probes carry no keys.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bus.auth import policy, sigv4
from bus.auth.credentials import Credentials, Principal
from bus.auth.errors import INCOMPLETE, MISSING, SQS_CODES, STATUS, UNRECOGNIZED, AuthError
from bus.broker.awsapi import error_response, origin_of
from bus.broker.awslambda import is_lambda_path
from bus.broker.ingest import bus_denial

log = logging.getLogger("bus.auth")

OPEN_PATHS = frozenset({"/metrics", "/healthz"})
AWS_PATH = "/"
BEARER = "Bearer "

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def auth_middleware(credentials: Credentials):
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        try:
            principal = await _principal(request, credentials)
            action = _action(request)
            if action is not None:
                policy.check(principal, action)
        except AuthError as err:
            log.info("refused %s %s from %s: %s", request.method, request.path, request.remote, err.code)
            return _error(err, request.path, _is_sqs(request))
        except web.HTTPRequestEntityTooLarge:
            # The body is needed for its hash; answer as the routes do for an oversize request.
            return error_response("ValidationException", "Total size of the entries in the request is over the limit.")
        request["principal"] = principal
        token = bus_denial.set(policy.bus_denial(principal, origin_of(request), _policies(request)))
        try:
            return await handler(request)
        finally:
            bus_denial.reset(token)  # keep-alive: the next request on this task starts clean
    return authenticate


async def _principal(request: web.Request, credentials: Credentials) -> Principal:
    authorization = request.headers.get("Authorization", "")
    if not authorization:
        raise AuthError(MISSING)
    if authorization.startswith(BEARER):
        if request.path == AWS_PATH:
            raise AuthError(INCOMPLETE, "The AWS API takes SigV4 signatures only; bearer tokens are for the native API.")
        principal = credentials.by_token(authorization[len(BEARER):].strip())
        if principal is None:
            raise AuthError(UNRECOGNIZED)
        return principal
    if not sigv4.is_sigv4(authorization):
        raise AuthError(INCOMPLETE, "Authorization header must be AWS4-HMAC-SHA256 (SigV4) or Bearer <token>.")
    body = await request.read()  # aiohttp keeps it: the route reads the same bytes again

    def secret_for(key_id: str) -> str | None:
        p = credentials.by_access_key(key_id)
        return p.secret_access_key if p else None

    headers = {name.lower(): ",".join(request.headers.getall(name)) for name in request.headers}
    service = "lambda" if is_lambda_path(request.path) else "sqs" if _is_sqs(request) else sigv4.SERVICE
    signed = sigv4.verify(request.method, request.rel_url.raw_path, request.rel_url.raw_query_string,
                          headers, body, secret_for, service=service)
    principal = credentials.by_access_key(signed.access_key_id)
    assert principal is not None  # verify() found its secret
    return principal


def _policies(request: web.Request) -> policy.PolicyLookup | None:
    """The broker's bus policies (bus.broker.policies), checked per PutEvents entry."""
    broker = request.app.get("broker")
    held = getattr(broker, "policies", None)
    return held.get if held is not None else None


def _action(request: web.Request) -> str | None:
    """The action to authorize; None lets the route answer (unknown operation, 404)."""
    if request.path == AWS_PATH:
        op = policy.aws_action(request.headers.get("X-Amz-Target", ""))
        return op if op in request.app["aws_operations"] else None
    return policy.native_action(request.method, request.path)


def _is_sqs(request: web.Request) -> bool:
    return request.path == AWS_PATH and request.headers.get("X-Amz-Target", "").startswith("AmazonSQS.")


def _error(err: AuthError, path: str, sqs: bool = False) -> web.Response:
    # Lambda and SQS answer authentication failures with 403 (events: 400; the reference, §1.6)
    resp = error_response(err.code, err.message, 403 if sqs or is_lambda_path(path) else STATUS[err.code])
    resp.headers["x-amzn-ErrorType"] = err.code
    if sqs:
        resp.headers["x-amzn-query-error"] = f"{SQS_CODES[err.code]};Sender"
    return resp
