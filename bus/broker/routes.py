"""The broker's HTTP routes besides the AWS API's operations: POST /events (native PutEvents),
POST /test-event-pattern, /metrics and /healthz, and the AWS operations PutEvents and
TestEventPattern. Routes stay thin: they parse the request and call bus.broker.ingest or
bus.broker.testpattern.
"""
from __future__ import annotations

import logging
import time
from types import MappingProxyType
from typing import Any

import msgspec
from aiohttp import web

from bus.broker import awssqs
from bus.broker.awsapi import aws_entries, decode_request, dispatch, error_response, json_response, origin_of, request_key
from bus.broker.envelope import MAX_JSON_DEPTH, Entry, Origin, RequestError, TooDeep, may_nest_deeper, decode_json
from bus.broker.live import Broker
from bus.broker.testpattern import event_matches_pattern
from bus.observe import metrics
from bus.observe.queuestats import update_queue_gauges

log = logging.getLogger("bus.broker")

_NATIVE_KEYS = {"source", "detail-type", "detail", "resources", "time", "bus"}
_IGNORED_KEYS = {"version", "id", "account", "region"}  # a full event can be re-posted as is
_KNOWN_KEYS = frozenset(_NATIVE_KEYS | _IGNORED_KEYS)


async def _read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestError("ValidationException", "Total size of the entries in the request is over the limit.") from None


async def post_events(request: web.Request) -> web.Response:
    broker: Broker = request.app["broker"]
    started = time.perf_counter()
    try:
        body = await _read_body(request)
        metrics.PUT_EVENTS_SIZE.labels("native").observe(len(body))
        results = await broker.ingestor.put_events(native_entries(body), origin_of(request), request=request_key(request),
                                                   body_size=len(body))
    except RequestError as err:
        metrics.PUT_EVENTS_REQUESTS.labels("native", "failed").inc()
        return error_response(err.type, err.message, err.status)
    finally:
        metrics.PUT_EVENTS_DURATION.labels("native").observe(time.perf_counter() - started)
    return json_response(_put_events_result(results, "native"))


class _NativeEntry(msgspec.Struct, forbid_unknown_fields=True,
                   rename={"detail_type": "detail-type", "given_id": "id"}):
    """A native entry as the common request sends it, decoded in C: it has the attributes of an
    Entry that ingest reads. A body that does not decode into these (unknown keys, an item that
    is not an object, not JSON) takes native_entries' general path, which names the fault."""

    source: Any = None
    detail_type: Any = None
    detail: Any = None
    resources: Any = None
    time: Any = None
    bus: Any = None
    version: Any = None  # the keys of a full event, ignored: it can be re-posted as is
    given_id: Any = None
    account: Any = None
    region: Any = None
    # Not fields: what an Entry made by the general path would hold for such an item.
    id = None  # a re-posted event gets a fresh id, like any other
    extra = MappingProxyType({})  # never an unknown key on this path
    size = 0


_decode_native = msgspec.json.Decoder(list[_NativeEntry] | _NativeEntry).decode


def native_entries(raw: bytes) -> list[Entry | _NativeEntry]:
    """The entries of a POST /events body (one event object or a list of them)."""
    if not may_nest_deeper(raw):  # deep text goes the general way: its depth check answers it
        try:
            body = _decode_native(raw)
        except msgspec.DecodeError:  # ValidationError included
            pass
        else:
            return body if isinstance(body, list) else [body]
    return _general_entries(raw)


def _general_entries(raw: bytes) -> list[Entry]:
    body = decode_request(raw)
    items = body if isinstance(body, list) else [body]
    entries = []
    for item in items:
        if not isinstance(item, dict):
            raise RequestError("SerializationException", "Each event must be a JSON object.")
        entry = Entry(
            source=item.get("source"), detail_type=item.get("detail-type"), detail=item.get("detail"),
            resources=item.get("resources"), time=item.get("time"), bus=item.get("bus"),
        )
        if not _KNOWN_KEYS.issuperset(item):  # no set made for the usual entry
            entry.extra = {"unknown": sorted(set(item) - _KNOWN_KEYS)}
        entries.append(entry)
    return entries


def _put_events_result(results: list[dict[str, Any]], api: str) -> dict[str, Any]:
    failed = sum(1 for r in results if "ErrorCode" in r)
    metrics.PUT_EVENTS_REQUESTS.labels(api, "partial" if failed else "success").inc()
    return {"FailedEntryCount": failed, "Entries": results}


async def aws_root(request: web.Request) -> web.Response:
    try:
        raw = await _read_body(request)
    except RequestError as err:
        return error_response(err.type, err.message, err.status)
    if request.headers.get("X-Amz-Target", "").startswith(awssqs.TARGET_PREFIX):
        return await awssqs.handle(request, raw)  # SQS's JSON 1.0 shares the AWS path
    return await dispatch(request, request.app["aws_operations"], raw)


async def op_put_events(request: web.Request, body: dict[str, Any], origin: Origin) -> dict[str, Any]:
    broker: Broker = request.app["broker"]
    started = time.perf_counter()
    metrics.PUT_EVENTS_SIZE.labels("aws").observe(request.content_length or 0)
    try:
        results = await broker.ingestor.put_events(aws_entries(body), origin, request=request_key(request),
                                                   body_size=len(await request.read()))  # read once: aiohttp keeps it
    except RequestError:
        metrics.PUT_EVENTS_REQUESTS.labels("aws", "failed").inc()
        raise
    finally:
        metrics.PUT_EVENTS_DURATION.labels("aws").observe(time.perf_counter() - started)
    return _put_events_result(results, "aws")


async def op_test_event_pattern(request: web.Request, body: dict[str, Any], origin: Origin) -> dict[str, Any]:
    if not isinstance(body.get("EventPattern"), str) or not isinstance(body.get("Event"), str):
        raise RequestError("ValidationException", "EventPattern and Event are required strings.")
    return {"Result": _test_pattern(body["EventPattern"], body["Event"])}


async def post_test_event_pattern(request: web.Request) -> web.Response:
    try:
        body = decode_request(await _read_body(request))
        if not isinstance(body, dict) or "pattern" not in body or "event" not in body:
            raise RequestError("ValidationException", 'Send {"pattern": ..., "event": ...}.')
        return json_response({"result": _test_pattern(body["pattern"], body["event"])})
    except RequestError as err:
        return error_response(err.type, err.message, err.status)


def _test_pattern(pattern: Any, event: Any) -> bool:
    """event_matches_pattern, with JSON text too deep refused here: its own decoders would
    hit the recursion limit. Text that is not JSON is passed on, to be answered in its words."""
    too_deep = "{} is not valid. Reason: nested deeper than %d levels." % MAX_JSON_DEPTH
    return event_matches_pattern(_shallow(pattern, "InvalidEventPatternException", too_deep.format("Event pattern")),
                                 _shallow(event, "ValidationException", too_deep.format("Parameter Event")))


def _shallow(value: Any, error: str, message: str) -> Any:
    if not isinstance(value, (str, bytes)):
        return value
    try:
        decode_json(value)
    except msgspec.DecodeError:
        pass
    except TooDeep:
        raise RequestError(error, message) from None
    return value


async def get_metrics(request: web.Request) -> web.Response:
    broker: Broker = request.app["broker"]
    try:
        await update_queue_gauges(broker.queue, broker.all_targets())
    except Exception:  # a scrape must still show the counters when Redis is away
        log.warning("queue gauges not updated", exc_info=True)
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def healthz(request: web.Request) -> web.Response:
    broker: Broker = request.app["broker"]
    try:
        await broker.redis.ping()
    except Exception as exc:  # health must answer, whatever broke
        return web.json_response({"status": "unhealthy", "redis": str(exc)}, status=503)
    return web.json_response({"status": "ok"})
