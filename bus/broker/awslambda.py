"""Lambda's API on the broker (REST-JSON at /2015-03-31/..., as boto3's `lambda` client sends it):
Invoke (RequestResponse, Event, DryRun), ListFunctions, GetFunction, GetFunctionConfiguration.

The functions are the `functions:` of the rules files; nothing else can be invoked, so a client
can run only code a rules file names (and bus.config.function_refs allows), in the functions
directory. Shapes, statuses and error codes are Lambda's (../shared/reference/aws-auth-invoke-sqs.md
§2); errors carry `x-amzn-ErrorType`, which botocore reads first for this service.
"""
from __future__ import annotations

import base64
import json
import math
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any

import msgspec
from aiohttp import web

from bus import identity
from bus.broker.awsapi import origin_of
from bus.broker.envelope import MAX_JSON_DEPTH, TooDeep, decode_json
from bus.broker.invocations import invoke_event, invoke_sync
from bus.config.model import FunctionSettings
from bus.ids import new_id
from bus.observe import metrics
from bus.store.replies import FUNCTION_ERROR, OK, THROTTLED, InvokeReply

LAMBDA_PATH = "/2015-03-31/functions"
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024  # Lambda's: 6 MB in (the broker's body limit may be lower)
MAX_EVENT_PAYLOAD = 1024 * 1024  # Lambda's: 1 MB for InvocationType Event
DEFAULT_MAX_ITEMS = 50
# A function named as Lambda allows: name, name:qualifier, a full or partial ARN.
_NAME = re.compile(r"^(?:arn:[^:]*:lambda:[^:]*:)?(?:\d{12}:)?(?:function:)?([^:]+)(?::([^:]+))?$")


class LambdaError(Exception):
    def __init__(self, code: str, message: str, status: int, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.headers, self.extra = headers or {}, extra


def add_routes(app: web.Application) -> None:
    app.router.add_get(LAMBDA_PATH, list_functions)
    app.router.add_get(LAMBDA_PATH + "/", list_functions)
    app.router.add_get(LAMBDA_PATH + "/{name}", get_function)
    app.router.add_get(LAMBDA_PATH + "/{name}/configuration", get_function_configuration)
    app.router.add_post(LAMBDA_PATH + "/{name}/invocations", invoke)


def is_lambda_path(path: str) -> bool:
    return path == LAMBDA_PATH or path.startswith(LAMBDA_PATH + "/")


def error_response(code: str, message: str, status: int, headers: dict[str, str] | None = None,
                   **extra: Any) -> web.Response:
    body = {"__type": code, "Type": "User", "message": message, **extra}
    return web.Response(body=msgspec.json.encode(body), status=status, content_type="application/json",
                        headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": new_id(), **(headers or {})})


def _answers(handler):
    async def route(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except LambdaError as err:
            return error_response(err.code, err.message, err.status, err.headers, **err.extra)
    route.__name__ = handler.__name__
    return route


# --- reads -------------------------------------------------------------------------------------

@_answers
async def list_functions(request: web.Request) -> web.Response:
    names = [ref for ref in sorted(_functions(request)) if _may(request, ref)]
    max_items = _int_query(request, "MaxItems", DEFAULT_MAX_ITEMS, 1, 10000)
    marker = request.query.get("Marker")
    start = 0
    if marker:
        start = next((i for i, ref in enumerate(names) if ref > marker), len(names))
    page = names[start:start + max_items]
    body: dict[str, Any] = {"Functions": [_configuration(request, ref) for ref in page]}
    if start + max_items < len(names):
        body["NextMarker"] = page[-1]
    return _json(body)


@_answers
async def get_function(request: web.Request) -> web.Response:
    ref = _function(request, "lambda:GetFunction")
    settings = _functions(request)[ref]
    body = {"Configuration": _configuration(request, ref), "Code": {"RepositoryType": "busway"}, "Tags": {}}
    if settings.reserved_concurrency is not None:
        body["Concurrency"] = {"ReservedConcurrentExecutions": settings.reserved_concurrency}
    return _json(body)


@_answers
async def get_function_configuration(request: web.Request) -> web.Response:
    return _json(_configuration(request, _function(request, "lambda:GetFunctionConfiguration")))


def _configuration(request: web.Request, ref: str) -> dict[str, Any]:
    """Lambda's FunctionConfiguration of one `functions:` entry."""
    s: FunctionSettings = _functions(request)[ref]
    who = origin_of(request)
    started = request.app["broker"].started
    config: dict[str, Any] = {
        "FunctionName": ref, "FunctionArn": identity.function_arn(who, ref),
        "Runtime": f"python{sys.version_info.major}.{sys.version_info.minor}", "Handler": ref,
        "Role": f"arn:aws:iam::{who.account}:role/busway", "Description": s.description,
        "Timeout": math.ceil(s.timeout), "MemorySize": s.memory_limit_in_mb, "CodeSize": 0, "CodeSha256": "",
        "LastModified": _lambda_time(started), "Version": "$LATEST", "State": "Active",
        "LastUpdateStatus": "Successful", "PackageType": "Zip", "Architectures": ["x86_64"],
    }
    if s.environment:
        config["Environment"] = {"Variables": dict(s.environment)}
    return config


def _lambda_time(epoch: float) -> str:
    """Lambda's LastModified: 2024-01-01T00:00:00.000+0000."""
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


# --- Invoke ------------------------------------------------------------------------------------

@_answers
async def invoke(request: web.Request) -> web.StreamResponse:
    ref = _function(request, "lambda:InvokeFunction")
    kind = request.headers.get("X-Amz-Invocation-Type") or "RequestResponse"  # boto3 sends none by default
    log_type = request.headers.get("X-Amz-Log-Type") or "None"
    if kind not in ("RequestResponse", "Event", "DryRun"):
        raise LambdaError("InvalidParameterValueException",
                          f"Unsupported invocation type {kind!r}: use RequestResponse, Event or DryRun", 400)
    if log_type not in ("None", "Tail"):
        raise LambdaError("InvalidParameterValueException", f"Unsupported log type {log_type!r}: use None or Tail", 400)
    if kind == "DryRun":
        metrics.INVOKE_REQUESTS.labels(ref, kind, "dry_run").inc()
        return web.Response(status=204)
    payload = await request.read()
    limit = MAX_EVENT_PAYLOAD if kind == "Event" else MAX_SYNC_PAYLOAD
    try:
        if len(payload) > limit:
            raise LambdaError("RequestTooLargeException",
                              f"Request must be smaller than {limit} bytes for the InvokeFunction operation", 413)
        payload = _json_payload(payload)
    except LambdaError:
        metrics.INVOKE_REQUESTS.labels(ref, kind, "invalid").inc()
        raise
    settings = _functions(request)[ref]
    broker = request.app["broker"]
    if kind == "Event":
        await invoke_event(broker.queue, ref, payload)
        metrics.INVOKE_REQUESTS.labels(ref, kind, "queued").inc()
        return web.Response(status=202)
    client_context = _client_context(request.headers.get("X-Amz-Client-Context", ""))
    started = time.perf_counter()
    reply = await invoke_sync(broker.queue, broker.replies, ref, settings, payload, tail=log_type == "Tail",
                              client_context=client_context)
    metrics.INVOKE_DURATION.labels(ref).observe(time.perf_counter() - started)
    metrics.INVOKE_REQUESTS.labels(ref, kind, {OK: "ok", FUNCTION_ERROR: "function_error"}.get(reply.status, "throttled")).inc()
    return _invoke_response(reply)


def _json_payload(payload: bytes) -> bytes:
    """The payload as the handler's event: JSON (an empty body is {}, as Lambda's console sends)."""
    if not payload.strip():
        return b"{}"
    try:
        decode_json(payload)
    except msgspec.DecodeError as exc:
        raise LambdaError("InvalidRequestContentException", f"Could not parse request body into json: {exc}", 400) from None
    except TooDeep:
        raise LambdaError("InvalidRequestContentException",
                          f"Could not parse request body into json: nested deeper than {MAX_JSON_DEPTH} levels", 400) from None
    return payload


MAX_CLIENT_CONTEXT = 3583  # Lambda's, in base64 characters


def _client_context(header: str) -> str:
    """X-Amz-Client-Context (base64 JSON, synchronous calls only) as JSON text; "" when absent."""
    if not header:
        return ""
    try:
        if len(header) > MAX_CLIENT_CONTEXT:
            raise ValueError
        text = base64.b64decode(header, validate=True).decode()
        if not isinstance(json.loads(text), dict):
            raise ValueError
    except ValueError:
        raise LambdaError("InvalidRequestContentException", "Client context must be a valid Base64-encoded JSON "
                          f"object of at most {MAX_CLIENT_CONTEXT} characters", 400) from None
    return text


def _invoke_response(reply: InvokeReply) -> web.Response:
    if reply.status == THROTTLED:
        raise LambdaError("TooManyRequestsException", "Rate Exceeded.", 429, {"Retry-After": "1"},
                          Reason=reply.reason)
    headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": reply.request_id}
    if reply.log:
        headers["X-Amz-Log-Result"] = base64.b64encode(reply.log).decode()
    if reply.status == FUNCTION_ERROR:
        headers["X-Amz-Function-Error"] = "Unhandled"
    assert reply.status in (OK, FUNCTION_ERROR)
    return web.Response(body=reply.payload, status=200, content_type="application/json", headers=headers)


# --- names and permissions ---------------------------------------------------------------------

def _functions(request: web.Request) -> dict[str, FunctionSettings]:
    return request.app["broker"].declared.functions


def _function(request: web.Request, action: str) -> str:
    """The declared function the path names, which the caller may use; else Lambda's error."""
    raw = request.match_info["name"]
    m = _NAME.match(raw)
    qualifier = request.query.get("Qualifier") or (m.group(2) if m else None)
    ref = m.group(1) if m else None
    who = origin_of(request)
    if ref is None or ref not in _functions(request) or qualifier not in (None, "$LATEST"):
        arn = identity.function_arn(who, ref or raw) + (f":{qualifier}" if qualifier else "")
        raise LambdaError("ResourceNotFoundException", f"Function not found: {arn}", 404)
    if not _may(request, ref):
        principal = request["principal"]
        raise LambdaError("AccessDeniedException",
                          f"User: arn:aws:iam::{who.account}:user/{principal.name} is not authorized to perform: "
                          f"{action} on resource: {identity.function_arn(who, ref)}", 403)
    return ref


def _may(request: web.Request, ref: str) -> bool:
    principal = request.get("principal")  # None: authentication is off
    return principal is None or principal.may_use_function(ref)


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise LambdaError("InvalidParameterValueException", f"{name} must be an integer from {low} to {high}", 400)
    return value


def _json(body: Any) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), content_type="application/json",
                        headers={"x-amzn-RequestId": new_id()})

