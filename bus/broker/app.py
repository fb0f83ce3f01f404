"""The broker process: HTTP ingest (native and AWS), YAML rules with live reload, /metrics.

Routes stay thin: they parse the request and call bus.broker.ingest / bus.broker.testpattern.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
import redis.asyncio as aioredis
from aiohttp import web

from bus.store import apirules
from bus.broker import awsrules
from bus.store import deadletters
from bus.observe import metrics
from bus.broker.awsapi import aws_entries, dispatch, error_response, json_response, origin_of
from bus.broker.envelope import Entry, Origin, RequestError
from bus.broker.inbox import consume_inbox
from bus.broker.ingest import Ingestor
from bus.observe.queuestats import update_queue_gauges
from bus.config.model import Config, empty_config
from bus.store.queue import Queue
from bus.store.connect import connect
from bus.broker.router import Router
from bus.scheduler.loop import Scheduler
from bus.config.rulesfile import ConfigError, load_config, rule_files
from bus.broker.testpattern import event_matches_pattern

log = logging.getLogger("bus.broker")

MAX_BODY = 4 * 1024 * 1024  # beyond AWS's 1 MB entry limit, so oversize requests get AWS's error
_NATIVE_KEYS = {"source", "detail-type", "detail", "resources", "time", "bus"}
_IGNORED_KEYS = {"version", "id", "account", "region"}  # a full event can be re-posted as is


class Broker:
    """Holds the live Router; reloads it when the rules files change."""

    def __init__(self, redis: aioredis.Redis, rules_path: str | None, config: Config):
        self.redis = redis
        self.rules_path = rules_path
        self.yaml_config = config
        self.api_rules: dict = {}
        self._api_version = -1
        self.queue = Queue(redis)
        self.router = Router(config)
        self.ingestor = Ingestor(self.queue, lambda: self.router)
        self._stamp = self._rules_stamp()

    async def start(self) -> None:
        await self.reload_api_rules()
        await self.queue.publish_targets(self.router.all_targets())

    async def _rebuild(self) -> None:
        router = Router(apirules.merge(self.yaml_config, self.api_rules))
        await self.queue.publish_targets(router.all_targets())
        self.router = router

    async def reload_api_rules(self) -> bool:
        version = await apirules.version(self.redis)
        if version == self._api_version:
            return False
        self.api_rules = await apirules.load(self.redis)
        self._api_version = version
        await self._rebuild()
        return True

    def _rules_stamp(self) -> tuple:
        if not self.rules_path:
            return ()
        try:
            return tuple((str(f), f.stat().st_mtime_ns) for f in rule_files(self.rules_path))
        except (ConfigError, OSError):
            return ()

    async def reload_if_changed(self) -> bool:
        stamp = self._rules_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            config = load_config(self.rules_path)
        except ConfigError as exc:
            log.error("rules not reloaded, keeping the previous ones:\n%s", exc)
            return False
        self.yaml_config = config
        await self._rebuild()
        log.info("rules reloaded: %d rules on %d buses", len(config.rules), len(config.buses))
        return True

    async def watch(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload_if_changed()
                await self.reload_api_rules()
            except Exception:  # a watcher that dies silently would freeze the rules
                log.exception("rules reload failed")


# --- routes -----------------------------------------------------------------------------

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
        results = await broker.ingestor.put_events(native_entries(body), origin_of(request))
    except RequestError as err:
        metrics.PUT_EVENTS_REQUESTS.labels("native", "failed").inc()
        return error_response(err.type, err.message, err.status)
    finally:
        metrics.PUT_EVENTS_DURATION.labels("native").observe(time.perf_counter() - started)
    return json_response(_put_events_result(results, "native"))


def native_entries(raw: bytes) -> list[Entry]:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise RequestError("SerializationException", f"Request body is not valid JSON: {exc}") from None
    items = body if isinstance(body, list) else [body]
    entries = []
    for item in items:
        if not isinstance(item, dict):
            raise RequestError("SerializationException", "Each event must be a JSON object.")
        entry = Entry(
            source=item.get("source"), detail_type=item.get("detail-type"), detail=item.get("detail"),
            resources=item.get("resources"), time=item.get("time"), bus=item.get("bus"),
        )
        unknown = set(item) - _NATIVE_KEYS - _IGNORED_KEYS
        if unknown:
            entry.extra = {"unknown": sorted(unknown)}
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
    return await dispatch(request, request.app["aws_operations"], raw)


async def op_put_events(request: web.Request, body: dict[str, Any], origin: Origin) -> dict[str, Any]:
    broker: Broker = request.app["broker"]
    started = time.perf_counter()
    metrics.PUT_EVENTS_SIZE.labels("aws").observe(request.content_length or 0)
    try:
        results = await broker.ingestor.put_events(aws_entries(body), origin)
    except RequestError:
        metrics.PUT_EVENTS_REQUESTS.labels("aws", "failed").inc()
        raise
    finally:
        metrics.PUT_EVENTS_DURATION.labels("aws").observe(time.perf_counter() - started)
    return _put_events_result(results, "aws")


async def op_test_event_pattern(request: web.Request, body: dict[str, Any], origin: Origin) -> dict[str, Any]:
    if not isinstance(body.get("EventPattern"), str) or not isinstance(body.get("Event"), str):
        raise RequestError("ValidationException", "EventPattern and Event are required strings.")
    return {"Result": event_matches_pattern(body["EventPattern"], body["Event"])}


async def post_test_event_pattern(request: web.Request) -> web.Response:
    try:
        body = msgspec.json.decode(await _read_body(request))
        if not isinstance(body, dict) or "pattern" not in body or "event" not in body:
            raise RequestError("ValidationException", 'Send {"pattern": ..., "event": ...}.')
        return json_response({"result": event_matches_pattern(body["pattern"], body["event"])})
    except msgspec.DecodeError as exc:
        return error_response("SerializationException", f"Request body is not valid JSON: {exc}")
    except RequestError as err:
        return error_response(err.type, err.message, err.status)


async def get_metrics(request: web.Request) -> web.Response:
    broker: Broker = request.app["broker"]
    try:
        await update_queue_gauges(broker.redis, broker.router.all_targets())
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


# --- dead letters: the same operations as `bus dlq` ----------------------------------------

async def _letters(request: web.Request, body: dict | None = None) -> list[deadletters.Letter]:
    body = body or {}
    target = body.get("target") or request.query.get("target")
    ids = body.get("ids") or (request.query["ids"].split(",") if request.query.get("ids") else None)
    return await deadletters.list_letters(request.app["broker"].redis, target=target, ids=ids)


async def get_dlq(request: web.Request) -> web.Response:
    return web.json_response({"dead_letters": [item.as_dict() for item in await _letters(request)]})


async def get_dead_letter(request: web.Request) -> web.Response:
    found = await deadletters.list_letters(request.app["broker"].redis, ids=[request.match_info["id"]])
    if not found:
        return web.json_response({"__type": "ResourceNotFoundException",
                                  "message": f"Dead letter {request.match_info['id']} does not exist."}, status=404)
    return web.json_response(found[0].as_dict())


async def post_dlq_action(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    letters = await _letters(request, body if isinstance(body, dict) else {})
    action = deadletters.redrive if request.match_info["action"] == "redrive" else deadletters.purge
    count = await action(request.app["broker"].redis, letters)
    return web.json_response({request.match_info["action"] + "d": count})


AWS_OPERATIONS = {
    "PutEvents": op_put_events,
    "TestEventPattern": op_test_event_pattern,
    **awsrules.OPERATIONS,
}


def make_app(broker: Broker) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app["broker"] = broker
    app["aws_operations"] = dict(AWS_OPERATIONS)
    app.router.add_post("/", aws_root)
    app.router.add_post("/events", post_events)
    app.router.add_post("/test-event-pattern", post_test_event_pattern)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/dlq", get_dlq)
    app.router.add_get("/dlq/{id}", get_dead_letter)
    app.router.add_post("/dlq/{action:redrive|purge}", post_dlq_action)
    return app


async def serve(redis_url: str, rules_path: str | None, host: str, port: int, ready: asyncio.Event | None = None) -> None:
    """Run a broker until cancelled."""
    config = load_config(rules_path) if rules_path else empty_config()
    redis = connect(redis_url)
    broker = Broker(redis, rules_path, config)
    await broker.start()
    runner = web.AppRunner(make_app(broker), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("broker listening on http://%s:%d (%d rules)", host, port, len(config.rules))
    chores = [asyncio.create_task(broker.watch()), asyncio.create_task(broker.ingestor.tracer.watch()),
              asyncio.create_task(consume_inbox(redis, broker.ingestor.publish))]
    stop_scheduler = asyncio.Event()
    scheduler = asyncio.create_task(Scheduler(redis, lambda: broker.router).run(stop_scheduler))
    if ready:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        stop_scheduler.set()  # hands the leader lock over at once instead of letting it expire
        try:
            await asyncio.wait_for(scheduler, 5)
        except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
            log.warning("scheduler did not stop cleanly", exc_info=True)
        for chore in chores:
            chore.cancel()
        await runner.cleanup()
        await redis.aclose()

