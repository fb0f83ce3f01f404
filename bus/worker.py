"""The worker process: read deliveries from target streams and run handlers like Lambda.

One XREADGROUP over every known target stream, at most `concurrency` handlers at once.
A delivery is acknowledged and deleted only after its handler returned.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Any

import msgspec
import redis.asyncio as aioredis
from aiohttp import web

from bus import metrics
from bus.context import make_context
from bus.functions import FunctionLoader, FunctionLoadError
from bus.queue import FIELD, GROUP, WORKERS, Delivery, TargetInfo, decode_delivery, read_targets

log = logging.getLogger("bus.worker")

REFRESH_SECONDS = 2.0
BLOCK_MS = 1000
HEARTBEAT_SECONDS = 1.0


class Outcome(msgspec.Struct):
    ok: bool
    kind: str = ""  # exception | timeout | killed | import
    error_type: str = ""
    message: str = ""
    result: Any = None


class Worker:
    def __init__(self, redis: aioredis.Redis, functions_dir: str | None, concurrency: int = 10,
                 consumer: str | None = None):
        self.redis = redis
        self.loader = FunctionLoader(functions_dir)
        self.concurrency = concurrency
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.targets: dict[str, TargetInfo] = {}  # stream key -> target
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task] = set()
        self._refreshed = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker %s started (concurrency %d)", self.consumer, self.concurrency)
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._loop(stop)
        finally:
            heartbeat.cancel()
            await self.redis.zrem(WORKERS, self.consumer)

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self.redis.zadd(WORKERS, {self.consumer: time.time()})
            except Exception:  # Redis hiccups must not kill the heartbeat; the next beat retries
                log.warning("heartbeat failed", exc_info=True)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._refresh_targets()
            if not self.targets:
                await _sleep_or_stop(stop, 0.5)
                continue
            await self._slots.acquire()
            self._slots.release()
            await self._read_once()
        await self.drain()

    async def drain(self, grace: float | None = None) -> None:
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=grace)

    async def _refresh_targets(self) -> None:
        if time.monotonic() - self._refreshed < REFRESH_SECONDS:
            return
        infos = await read_targets(self.redis)
        self.targets = {info.stream: info for info in infos.values()}
        self._refreshed = time.monotonic()

    async def _read_once(self) -> None:
        free = max(1, self._free_slots())
        streams = {s: ">" for s in self.targets}
        replies = await self.redis.xreadgroup(GROUP, self.consumer, streams, count=free, block=BLOCK_MS)
        for stream, entries in replies or []:
            info = self.targets[_s(stream)]
            for entry_id, fields in entries:
                await self._slots.acquire()
                task = asyncio.create_task(self._process(info, entry_id, fields))
                self._inflight.add(task)
                task.add_done_callback(self._done)

    def _free_slots(self) -> int:
        return self.concurrency - len(self._inflight)

    def _done(self, task: asyncio.Task) -> None:
        self._inflight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception():
            log.error("delivery task crashed", exc_info=task.exception())

    async def _process(self, info: TargetInfo, entry_id: bytes, fields: dict) -> None:
        delivery = decode_delivery(fields[FIELD])
        attempt = delivery.retries + 1
        outcome = await self._invoke(info, delivery, attempt)
        if outcome.ok:
            await self._ack(info, entry_id)
            log.info("delivered event to %s (request %s, attempt %d)", info.key, delivery.id, attempt)
        else:
            # Retries and dead letters are issue 4: for now the entry stays pending in Redis.
            log.error("handler %s failed (%s: %s); delivery %s left pending", info.function,
                      outcome.error_type or outcome.kind, outcome.message, delivery.id)

    async def _invoke(self, info: TargetInfo, delivery: Delivery, attempt: int) -> Outcome:
        labels = (info.function, info.key)
        metrics.INVOCATIONS.labels(*labels).inc()
        metrics.INGESTION_TO_START.labels(info.key).observe(max(0.0, time.time() - delivery.ingested))
        started = time.perf_counter()
        metrics.CONCURRENT.labels(info.function).inc()
        try:
            outcome = await self._call(info, delivery, attempt)
        finally:
            metrics.CONCURRENT.labels(info.function).dec()
            metrics.HANDLER_DURATION.labels(info.function).observe(time.perf_counter() - started)
        if not outcome.ok:
            metrics.ERRORS.labels(*labels, outcome.kind).inc()
        return outcome

    async def _call(self, info: TargetInfo, delivery: Delivery, attempt: int) -> Outcome:
        timeout = info.settings.timeout
        try:
            function = self.loader.load(info.function)
        except FunctionLoadError as exc:
            return Outcome(False, "import", "Runtime.ImportModuleError", str(exc))
        event = msgspec.json.decode(delivery.event)
        context = make_context(
            request_id=delivery.id, function=info.function, rule=info.rule, target=info.target,
            bus=info.bus, attempt=attempt, timeout=timeout, memory=info.settings.memory_limit_in_mb,
        )
        try:
            if function.is_async:
                result = await asyncio.wait_for(function.handler(event, context), timeout)
            else:
                result = await asyncio.wait_for(asyncio.to_thread(function.handler, event, context), timeout)
        except asyncio.TimeoutError:
            return Outcome(False, "timeout", "Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds")
        except Exception as exc:  # the handler's failure is the delivery's outcome
            return Outcome(False, "exception", type(exc).__name__, str(exc))
        return Outcome(True, result=result)

    async def _ack(self, info: TargetInfo, entry_id: bytes) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(info.stream, GROUP, entry_id)
            pipe.xdel(info.stream, entry_id)
            await pipe.execute()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def metrics_app_runner(host: str, port: int) -> web.AppRunner:
    async def get_metrics(request: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_worker(redis_url: str, functions_dir: str | None, concurrency: int,
                     metrics_port: int | None, stop: asyncio.Event, host: str = "127.0.0.1") -> None:
    redis = aioredis.from_url(redis_url)
    runner = await metrics_app_runner(host, metrics_port) if metrics_port else None
    if metrics_port:
        log.info("worker metrics on http://%s:%d/metrics", host, metrics_port)
    try:
        await Worker(redis, functions_dir, concurrency).run(stop)
    finally:
        if runner:
            await runner.cleanup()
        await redis.aclose()
