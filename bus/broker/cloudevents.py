"""CloudEvents 1.0 in over HTTP: POST /cloudevents[/{bus}] turns binary, structured and batched
CloudEvents into PutEvents entries and ingests them through the same Ingestor as PutEvents.

The mode is the Content-Type's (the HTTP binding, v1.0.2): `application/cloudevents-batch...` is a
batch (a JSON array of structured events), `application/cloudevents...` one structured event, any
other type (or none) binary mode: the attributes in percent-encoded `ce-*` headers and the body is
`data`, typed by Content-Type. Only the JSON event format is spoken.

Mapping: source -> source, type -> detail-type, data (a JSON object; none: {}) -> detail,
id -> the event's id (kept: it is what the producer dedups by), time -> time, subject ->
resources [subject]. dataschema and extension attributes are dropped: an EventBridge event has
no place for them. The bus is the path's (a name, or a percent-encoded bus ARN), else "default".

Answers: one event -> 200 {"id"} or its entry error as {"__type", "message"} (403 access denied,
404 unknown bus, else 400); a batch -> 200 with PutEvents' {"FailedEntryCount", "Entries"}.
Whole-request faults (bad JSON, a batch over 10, sizes) are 4xx; a Redis failure the 500
InternalException of PutEvents, with nothing of the request accepted.
"""
from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote

import msgspec
from aiohttp import web
from multidict import CIMultiDictProxy

from bus.broker.awsapi import decode_request, origin_of, request_key
from bus.broker.envelope import (
    MAX_ENTRIES,
    MAX_REQUEST_BYTES,
    Entry,
    EntryError,
    RequestError,
    TooDeep,
    bus_name,
    decode_json,
    entry_size,
)
from bus.observe import metrics

Mode = Literal["binary", "structured", "batch"]

API = "cloudevents"  # the `api` label of the PutEvents metrics
SPECVERSION = "1.0"
REQUIRED = ("id", "source", "specversion", "type")
MAX_BATCH = MAX_ENTRIES  # PutEvents' limit: one batch is one PutEvents, stored in one atomic step
HEADER_PREFIX = "ce-"
JSON_TYPE = re.compile(r"^(application|text)/([a-z0-9.+-]+\+)?json$")  # the SDK's rule, case-folded
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
ENTRY_STATUS = {"AccessDeniedException": 403, "ResourceNotFoundException": 404}  # others: 400
ParsedEntry = Entry | EntryError


# --- the HTTP route ------------------------------------------------------------------------

async def post_cloudevents(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        body = await _read_body(request)
        metrics.PUT_EVENTS_SIZE.labels(API).observe(len(body))
        mode = mode_of(request.headers.get("Content-Type"))
        bus = request.match_info.get("bus")
        parsed = parse_request(mode, request.headers, body, bus)
        results = await _ingest(request, parsed)
    except RequestError as err:
        metrics.PUT_EVENTS_REQUESTS.labels(API, "failed").inc()
        return _error(err.type, err.message, err.status)
    finally:
        metrics.PUT_EVENTS_DURATION.labels(API).observe(time.perf_counter() - started)
    failed = sum(1 for r in results if "ErrorCode" in r)
    metrics.PUT_EVENTS_REQUESTS.labels(API, "partial" if failed else "success").inc()
    if mode == "batch":
        return _json({"FailedEntryCount": failed, "Entries": results})
    [result] = results
    if "ErrorCode" in result:
        return _error(result["ErrorCode"], result["ErrorMessage"], ENTRY_STATUS.get(result["ErrorCode"], 400))
    return _json({"id": result["EventId"]})


async def _read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestError("ValidationException", "Total size of the entries in the request is over the limit.",
                           status=413) from None


async def _ingest(request: web.Request, parsed: list[ParsedEntry]) -> list[dict[str, Any]]:
    """PutEvents on the entries that parsed; the others keep their place with their error."""
    entries = [p for p in parsed if isinstance(p, Entry)]
    broker = request.app["broker"]
    accepted = iter(await broker.ingestor.put_events(entries, origin_of(request), request=request_key(request)) if entries else ())
    results = []
    for p in parsed:
        if isinstance(p, Entry):
            results.append(next(accepted))
        else:
            metrics.EVENTS_REJECTED.labels(_bus_label(broker, request.match_info.get("bus")), p.code).inc()
            results.append({"ErrorCode": p.code, "ErrorMessage": p.message})
    return results


def _bus_label(broker: Any, bus: str | None) -> str:
    # As bus.broker.ingest labels: a bus name that does not exist is user input, never a label value.
    try:
        name = bus_name(bus)
    except EntryError:
        return "(invalid)"
    return name if broker.router.has_bus(name) else "(unknown)"


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status, content_type="application/json")


def _error(type_: str, message: str, status: int) -> web.Response:
    return _json({"__type": type_, "message": message}, status)


# --- parsing (pure) ------------------------------------------------------------------------

def mode_of(content_type: str | None) -> Mode:
    """The binding's content mode, by media type (parameters and case ignored)."""
    media = _media_type(content_type)
    if media.startswith("application/cloudevents-batch"):
        return "batch"
    if media.startswith("application/cloudevents"):
        return "structured"
    return "binary"


def parse_request(mode: Mode, headers: CIMultiDictProxy[str] | dict[str, str], body: bytes,
                  bus: str | None) -> list[ParsedEntry]:
    """The request's events as entries, or each one's error; RequestError for the whole request."""
    if mode == "binary":
        return _checked_size([_or_error(binary_entry, headers, body, bus)])
    _require_json_format(mode, headers.get("Content-Type"))
    document = decode_request(body)
    if mode == "structured":
        if not isinstance(document, dict):
            raise RequestError("SerializationException", "A structured CloudEvent must be a JSON object.")
        return _checked_size([_or_error(structured_entry, document, bus)])
    if not isinstance(document, list):
        raise RequestError("SerializationException", "A CloudEvents batch must be a JSON array of events.")
    if len(document) > MAX_BATCH:
        raise RequestError("ValidationException", f"A CloudEvents batch holds at most {MAX_BATCH} events, "
                                                   f"not {len(document)}.")
    return _checked_size([_or_error(structured_entry, item, bus) for item in document])


def _or_error(parse, *args: Any) -> ParsedEntry:
    try:
        return parse(*args)
    except EntryError as err:
        return err


def _checked_size(parsed: list[ParsedEntry]) -> list[ParsedEntry]:
    # PutEvents' 1 MiB, with the kept id counted as the text it is (PutEvents has no id to count).
    size = sum(entry_size(p) + len(p.id.encode()) for p in parsed if isinstance(p, Entry) and p.id)
    if size > MAX_REQUEST_BYTES:
        raise RequestError("ValidationException", "Total size of the entries in the request is over the limit.")
    return parsed


def _require_json_format(mode: Mode, content_type: str | None) -> None:
    media = _media_type(content_type)
    wanted = "application/cloudevents-batch+json" if mode == "batch" else "application/cloudevents+json"
    if media != wanted:
        raise RequestError("UnsupportedMediaType", f"Content-Type {media} is not supported: the only event "
                                                    f"format is JSON ({wanted}).", status=415)


def binary_entry(headers: CIMultiDictProxy[str] | dict[str, str], body: bytes, bus: str | None) -> Entry:
    """Binary mode: attributes from ce-* headers, data = the body, typed by Content-Type."""
    attributes = binary_attributes(headers)
    _check_attributes(attributes, "ce-* headers")
    content_type = headers.get("Content-Type")
    detail = _detail_from_body(body, content_type) if body else {}
    return _entry(attributes, detail, bus)


def binary_attributes(headers: CIMultiDictProxy[str] | dict[str, str]) -> dict[str, str]:
    """The ce-* headers as attributes: names lower-cased, values unquoted then percent-decoded once."""
    attributes: dict[str, str] = {}
    for name, value in headers.items():
        name = name.lower()
        if not name.startswith(HEADER_PREFIX):
            continue
        attribute = name[len(HEADER_PREFIX):]
        if attribute == "datacontenttype":  # the binding: Content-Type carries it in binary mode
            raise EntryError("InvalidArgument", "Header ce-datacontenttype is not allowed in binary mode: "
                                                "Content-Type is the data's content type.")
        if attribute in attributes:
            raise EntryError("InvalidArgument", f"Header {name} is given more than once.")
        attributes[attribute] = _header_value(name, value)
    return attributes


def _header_value(name: str, value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':  # an RFC 7230 quoted-string
        value = value[1:-1]
    try:
        decoded = unquote(value, errors="strict")
        decoded.encode("utf-8")  # raw non-UTF-8 header bytes arrive as surrogates
    except UnicodeError:
        raise EntryError("InvalidArgument", f"Header {name} is not valid UTF-8 once percent-decoded.") from None
    return decoded


def structured_entry(event: Any, bus: str | None) -> Entry:
    """One event of the JSON format (structured mode, or an item of a batch)."""
    if not isinstance(event, dict):
        raise EntryError("InvalidArgument", "A CloudEvent must be a JSON object.")
    _check_attributes(event, "the event's JSON")
    if "data_base64" in event:
        raise EntryError("MalformedDetail", "data_base64 (binary data) cannot become an event's detail: "
                                            "send the data as a JSON object in data.")
    data = event.get("data")
    if data is None:
        return _entry(event, {}, bus)
    content_type = event.get("datacontenttype")
    if content_type is not None and not isinstance(content_type, str):
        raise EntryError("InvalidArgument", "CloudEvents attribute datacontenttype must be a string.")
    _require_json_type(content_type)
    return _entry(event, _object(data), bus)


def _check_attributes(attributes: dict[str, Any], where: str) -> None:
    missing = [name for name in REQUIRED if attributes.get(name) in (None, "")]
    if missing:
        raise EntryError("InvalidArgument", f"Missing required CloudEvents attribute(s) {', '.join(missing)} "
                                            f"(in {where}).")
    for name in (*REQUIRED, "subject", "time"):
        if name in attributes and not isinstance(attributes[name], str):
            raise EntryError("InvalidArgument", f"CloudEvents attribute {name} must be a string.")
    if attributes["specversion"] != SPECVERSION:
        raise EntryError("InvalidArgument", f"Unsupported CloudEvents specversion {attributes['specversion']!r}: "
                                            f"only {SPECVERSION} is accepted.")


def _entry(attributes: dict[str, Any], detail: dict[str, Any], bus: str | None) -> Entry:
    subject = attributes.get("subject")
    return Entry(
        source=attributes["source"], detail_type=attributes["type"], detail=detail,
        resources=[subject] if subject else None, time=_time(attributes.get("time")),
        bus=bus, id=attributes["id"],
    )


def _time(value: str | None) -> str | None:
    """RFC 3339 (upper-cased: the grammar allows t and z); build_envelope formats it in UTC."""
    if value is None:
        return None
    text = value.upper()
    try:
        if not RFC3339.match(text):
            raise ValueError(text)
        datetime.fromisoformat(text)  # the calendar: no February 30th
    except ValueError:
        raise EntryError("InvalidArgument", f"CloudEvents attribute time is not valid: {value!r} is not an "
                                            f"RFC 3339 timestamp.") from None
    return text


def _detail_from_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    _require_json_type(content_type)  # no Content-Type at all: taken as JSON
    try:
        data = decode_json(body)
    except msgspec.DecodeError:
        raise EntryError("MalformedDetail", "data is not valid JSON.") from None
    except TooDeep as exc:
        raise EntryError("MalformedDetail", f"data is malformed. Reason: {exc}.") from None
    return _object(data)


def _require_json_type(content_type: str | None) -> None:
    if content_type is not None and not JSON_TYPE.match(_media_type(content_type)):
        raise EntryError("MalformedDetail", f"datacontenttype {_media_type(content_type)} is not JSON: an "
                                            f"event's detail must be a JSON object.")


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise EntryError("MalformedDetail", f"data must be a JSON object to become the event's detail, "
                                            f"not {_json_kind(data)}.")
    return data


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {list: "an array", str: "a string", int: "a number", float: "a number"}.get(type(value), "null")


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()
