"""The `bus worker` process: a Redis connection, a Worker, and its /metrics and /healthz.

/healthz is 200 while Redis answers the worker's calls and 503 while it does not (the worker
keeps running and reconnects by itself; the 503 tells an operator, or a readiness probe, why
nothing is delivered). It reports what the worker's own calls found, so a probe costs Redis
nothing.
"""
from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from bus.observe import metrics
from bus.store.connect import Reachability, connect
from bus.store.queue import Queue
from bus.worker.loop import Worker, WorkerSettings

log = logging.getLogger("bus.worker")


def health(reach: Reachability | None) -> tuple[int, dict]:
    """/healthz's status and body: 503 while Redis is unreachable (or not reached yet)."""
    if reach is None or reach.ok:
        return 200, {"status": "ok"}
    return 503, {"status": "unhealthy", "redis": "unreachable", "for_seconds": round(time.monotonic() - reach.since, 1)}


async def metrics_app_runner(host: str, port: int, reach: Reachability | None = None) -> web.AppRunner:
    async def get_metrics(request: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(request: web.Request) -> web.Response:
        status, body = health(reach)
        return web.json_response(body, status=status)

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
    worker = Worker(Queue(redis), functions_dir, settings)
    runner = await metrics_app_runner(host, metrics_port, worker.reach) if metrics_port else None
    if metrics_port:
        log.info("worker metrics on http://%s:%d/metrics", host, metrics_port)
    try:
        await worker.run(stop)
    finally:
        if runner:
            await runner.cleanup()
        await redis.aclose()
