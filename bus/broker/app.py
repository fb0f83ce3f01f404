"""The broker process: the aiohttp application and `bus serve`, which runs it with the live
rule set (bus.broker.live), the inbox router and the scheduler."""
from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web

from bus.auth.credentials import Credentials, load_credentials
from bus.auth.middleware import auth_middleware
from bus.broker import (
    awsarchives, awslambda, awsbuses, awsconnections, awsdestinations, awspermissions, awsreplays, awsrules, awstags,
)
from bus.broker.cloudevents import post_cloudevents
from bus.broker.retention import trim_archives
from bus.broker.dlq_routes import get_dead_letter, get_dlq, post_dlq_action
from bus.broker.inbox import consume_inbox
from bus.broker.limits import Limits, LimitedRunner, body_limits
from bus.store.inbox import Inbox
from bus.broker.live import Broker
from bus.broker.routes import (
    aws_root, get_metrics, healthz, op_put_events, op_test_event_pattern, post_events, post_test_event_pattern,
)
from bus.config.model import empty_config
from bus.config.rulesfile import load_config
from bus.replay.runner import ReplayRunner
from bus.scheduler.loop import Scheduler
from bus.store.connect import connect

log = logging.getLogger("bus.broker")

MAX_BODY = Limits.max_body  # beyond AWS's 1 MB entry limit, so oversize requests get AWS's error
# How long a killed replay leader blocks the others (the tests shorten it).
REPLAY_LOCK_TTL = float(os.environ.get("BUS_REPLAY_LOCK_TTL", "10"))


AWS_OPERATIONS = {
    "PutEvents": op_put_events,
    "TestEventPattern": op_test_event_pattern,
    **awsrules.OPERATIONS,
    **awsbuses.OPERATIONS,
    **awsconnections.OPERATIONS,
    **awsdestinations.OPERATIONS,
    **awsarchives.OPERATIONS,
    **awsreplays.OPERATIONS,
    **awstags.OPERATIONS,
    **awspermissions.OPERATIONS,
}


def make_app(broker: Broker, credentials: Credentials | None = None, limits: Limits | None = None) -> web.Application:
    """With `credentials`, every route but /metrics and /healthz needs a signature or token (bus.auth).

    Every body is read first, within `limits` (bus.broker.limits): oversize or slow bodies are
    answered before authentication or a route spends anything on them."""
    limits = limits or Limits()
    middlewares = [body_limits(limits), *([auth_middleware(credentials)] if credentials else [])]
    app = web.Application(client_max_size=limits.max_body, middlewares=middlewares)
    app["broker"] = broker
    app["aws_operations"] = dict(AWS_OPERATIONS)
    app.router.add_post("/", aws_root)
    app.router.add_post("/events", post_events)
    app.router.add_post("/test-event-pattern", post_test_event_pattern)
    app.router.add_post("/cloudevents", post_cloudevents)
    app.router.add_post("/cloudevents/{bus:.+}", post_cloudevents)  # a bus ARN has "/"
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/dlq", get_dlq)
    app.router.add_get("/dlq/{id}", get_dead_letter)
    app.router.add_post("/dlq/{action:redrive|purge}", post_dlq_action)
    awslambda.add_routes(app)
    return app


async def serve(redis_url: str, rules_path: str | None, host: str, port: int, ready: asyncio.Event | None = None,
                credentials_path: str | None = None, limits: Limits | None = None, durability: str = "acked") -> None:
    """Run a broker until cancelled; `credentials_path` (a credentials YAML) turns authentication on.
    `limits` default to Limits.from_env() (BUS_HEADER_TIMEOUT, BUS_MAX_CONNECTIONS, ...).
    `durability` "replicated": PutEvents answers only once a replica has the writes (WAIT 1)."""
    limits = limits or Limits.from_env()
    config = load_config(rules_path) if rules_path else empty_config()
    credentials = load_credentials(credentials_path) if credentials_path else None
    redis = connect(redis_url)
    broker = Broker(redis, rules_path, config, replicas=1 if durability == "replicated" else 0)
    await broker.start()
    runner = LimitedRunner(make_app(broker, credentials, limits), limits, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("broker listening on http://%s:%d (%d rules; %s, durability %s)", host, port, len(config.rules),
             "Redis Cluster" if broker.queue.cluster else "one Redis", durability)
    log.info("limits: headers %gs, body %gs, idle keep-alive %gs, %d connections, %d-byte bodies",
             limits.header_timeout, limits.body_timeout, limits.idle_timeout, limits.max_connections,
             limits.max_body)
    if credentials:
        log.info("authentication on: %d principals from %s", len(credentials.principals), credentials_path)
    else:
        log.warning("authentication off: no credentials configured")
    chores = [asyncio.create_task(broker.watch()), asyncio.create_task(broker.ingestor.tracer.watch()),
              asyncio.create_task(consume_inbox(Inbox(redis), broker.ingestor.publish)),
              asyncio.create_task(trim_archives(broker))]
    stop_scheduler = asyncio.Event()  # also stops the replay runner: both hand their lease over
    scheduler = asyncio.create_task(Scheduler(redis, lambda: broker.router).run(stop_scheduler))
    replays = asyncio.create_task(ReplayRunner(redis, lambda: broker.router,
                                               lock_ttl=REPLAY_LOCK_TTL).run(stop_scheduler))
    if ready:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        stop_scheduler.set()  # hands the leader lock over at once instead of letting it expire
        try:
            await asyncio.wait_for(asyncio.gather(scheduler, replays), 5)
        except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
            log.warning("scheduler or replay runner did not stop cleanly", exc_info=True)
        for chore in chores:
            chore.cancel()
        await runner.cleanup()
        await broker.replies.close()
        await redis.aclose()

