"""Queue gauges read from Redis at scrape time: depth, pending, delayed, oldest age, DLQ depth.

One pipelined round trip for all targets, so scraping every 5 s stays cheap.
"""
from __future__ import annotations

import time

import redis.asyncio as aioredis

from bus.observe import metrics
from bus.store.deadletters import dlq_names
from bus.store.deliveries import TargetRecord
from bus.store.keys import GROUP, delayed_key, dlq_key

_PER_TARGET = 4  # replies per target in the pipeline below


async def update_queue_gauges(redis: aioredis.Redis, targets: list[TargetRecord]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for info in targets:
            pipe.xlen(info.stream)
            pipe.xpending(info.stream, GROUP)
            pipe.zcard(delayed_key(info.key))
            pipe.xrange(info.stream, count=1)
        results = await pipe.execute(raise_on_error=False)
    now = time.time()
    for i, info in enumerate(targets):
        depth, pending, delayed, first = results[i * _PER_TARGET:(i + 1) * _PER_TARGET]
        if isinstance(depth, Exception):
            continue
        metrics.QUEUE_DEPTH.labels(info.key).set(depth)
        metrics.QUEUE_PENDING.labels(info.key).set(pending["pending"] if isinstance(pending, dict) else 0)
        metrics.QUEUE_DELAYED.labels(info.key).set(delayed if isinstance(delayed, int) else 0)
        oldest = _entry_time(first[0][0]) if isinstance(first, list) and first else None
        metrics.OLDEST_AGE.labels(info.key).set(max(0.0, now - oldest) if oldest else 0.0)
    names = await dlq_names(redis)
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.xlen(dlq_key(name))
        lengths = await pipe.execute()
    for name, length in zip(names, lengths):
        metrics.DLQ_DEPTH.labels(name).set(length)


def _entry_time(entry_id: bytes) -> float:
    return int(entry_id.split(b"-")[0]) / 1000
