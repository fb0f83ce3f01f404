"""The `bus worker` process: a Redis connection, a Worker, and its /metrics and /healthz."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from bus.observe import metrics
from bus.store.connect import connect
from bus.store.queue import Queue
from bus.worker.loop import Worker, WorkerSettings

log = logging.getLogger("bus.worker")


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


async def run_worker(redis_url: str, functions_dir: str | None, settings: WorkerSettings,
                     metrics_port: int | None, stop: asyncio.Event, host: str = "127.0.0.1") -> None:
    redis = connect(redis_url)
    runner = await metrics_app_runner(host, metrics_port) if metrics_port else None
    if metrics_port:
        log.info("worker metrics on http://%s:%d/metrics", host, metrics_port)
    try:
        await Worker(Queue(redis), functions_dir, settings).run(stop)
    finally:
        if runner:
            await runner.cleanup()
        await redis.aclose()
