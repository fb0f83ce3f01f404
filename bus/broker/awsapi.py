"""AWS JSON 1.1 (`POST /` + `X-Amz-Target: AWSEvents.<Op>`), as boto3 and the aws CLI speak it.

Parses requests into the same calls the native routes make, and shapes every answer and
error the way botocore parses them: `{"__type": ..., "message": ...}` with HTTP 400/500.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Awaitable, Callable

import msgspec
from aiohttp import web

from bus import identity
from bus.broker.envelope import MAX_JSON_DEPTH, Entry, Origin, RequestError, TooDeep, decode_json
from bus.ids import new_id

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "AWSEvents."
_CREDENTIAL = re.compile(r"Credential=[^/]*/\d{8}/([^/]+)/")
_AWS_ENTRY_KEYS = {"Source", "DetailType", "Detail", "Resources", "Time", "EventBusName", "TraceHeader"}

Operation = Callable[[web.Request, dict[str, Any], Origin], Awaitable[dict[str, Any]]]


# What names one logical request across its retries: botocore (boto3, the aws CLI) sends a fresh
# amz-sdk-invocation-id per call and the same one on each retry of it; other clients may send an
# Idempotency-Key. On Redis Cluster it names the request's writes (bus.store.once).
REQUEST_ID_HEADERS = ("amz-sdk-invocation-id", "Idempotency-Key")
MAX_REQUEST_ID = 128


def request_key(request: web.Request) -> str | None:
    """The client's name for this request, scoped to the caller (another caller's same id is
    another request); None when the client gives none, or one too long to keep."""
    for header in REQUEST_ID_HEADERS:
        value = request.headers.get(header)
        if value and len(value) <= MAX_REQUEST_ID:
            principal = request.get("principal")
            return f"{principal.access_key_id if principal else '-'}/{value}"
    return None


def origin_of(request: web.Request) -> Origin:
    """Account from BUS_ACCOUNT; region from the SigV4 credential scope, else BUS_REGION."""
    m = _CREDENTIAL.search(request.headers.get("Authorization", ""))
    return identity.from_env(region_override=m.group(1) if m else None)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body), status=status, content_type=CONTENT_TYPE,
        headers={"x-amzn-RequestId": new_id()},
    )


def error_response(type_: str, message: str, status: int = 400) -> web.Response:
    return json_response({"__type": type_, "message": message}, status)


def decode_request(raw: bytes) -> Any:
    """A request body as JSON; not JSON (or not UTF-8), or nested too deep, is a SerializationException."""
    try:
        return decode_json(raw)
    except msgspec.DecodeError as exc:
        raise RequestError("SerializationException", f"Request body is not valid JSON: {exc}") from None
    except TooDeep:
        raise RequestError("SerializationException",
                           f"Request body is nested deeper than {MAX_JSON_DEPTH} levels.") from None


def decode_body(raw: bytes) -> dict[str, Any]:
    body = decode_request(raw) if raw else {}
    if not isinstance(body, dict):
        raise RequestError("SerializationException", "Request body must be a JSON object.")
    return body


def takes(shape: type[msgspec.Struct]) -> Callable[[Operation], Operation]:
    """Type-check an operation's request members against `shape` before the operation runs.

    AWS does this in its protocol layer: a member of the wrong type (a number for a name, a
    string for a count) fails the whole request with SerializationException, before anything
    is read or written. Unknown members pass, as they do on AWS (newer clients send more)."""
    def wrap(op: Operation) -> Operation:
        @functools.wraps(op)
        async def checked(request: web.Request, body: dict[str, Any], origin: Origin) -> dict[str, Any]:
            check_members(body, shape)
            return await op(request, body, origin)
        return checked
    return wrap


def check_members(body: dict[str, Any], shape: type[msgspec.Struct]) -> None:
    try:
        msgspec.convert(body, shape)
    except msgspec.ValidationError as exc:
        raise RequestError("SerializationException", f"Request is not valid: {exc}") from None


def aws_entries(body: dict[str, Any]) -> list[Entry]:
    raw = body.get("Entries")
    if not isinstance(raw, list):
        raise RequestError("ValidationException", "1 validation error detected: Value null at 'entries' failed to satisfy constraint: Member must not be null")
    entries = []
    for item in raw:
        if not isinstance(item, dict):
            raise RequestError("SerializationException", "Each of Entries must be a JSON object.")
        unknown = set(item) - _AWS_ENTRY_KEYS
        if unknown:
            raise RequestError("SerializationException", f"Unknown field(s) in an entry: {', '.join(sorted(unknown))}")
        entries.append(Entry(
            source=item.get("Source"), detail_type=item.get("DetailType"), detail=item.get("Detail"),
            resources=item.get("Resources"), time=item.get("Time"), bus=item.get("EventBusName"),
        ))
    return entries


async def dispatch(request: web.Request, operations: dict[str, Operation], raw: bytes) -> web.Response:
    target = request.headers.get("X-Amz-Target", "")
    op = operations.get(target[len(TARGET_PREFIX):]) if target.startswith(TARGET_PREFIX) else None
    if op is None:
        return error_response("UnknownOperationException", f"Operation {target or '(no X-Amz-Target)'} is not supported.")
    try:
        return json_response(await op(request, decode_body(raw), origin_of(request)))
    except RequestError as err:
        return error_response(err.type, err.message, err.status)
