"""An archive's stored events: their count and size, retention trimming, and dropping them all.

The events themselves are written by ENQUEUE with the deliveries of the request that brought
them (bus.store.queue.Queue.enqueue): a sorted set per archive, member = the event's JSON as its
deliveries carry it, score = the event's `time` in epoch ms (replays read windows of it, retention
trims by it), beside a counter of the members' bytes (DescribeArchive's SizeBytes, kept exact by
every script that adds or removes members). Definitions live with the other API resources
(bus.store.resources, kind "archive") or in YAML.
"""
from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis

from bus.store.keys import ARCHIVE_EVENTS_PATTERN, archive_bytes_key, archive_events_key, archive_of_events_key
from bus.store.scripts import ARCHIVE_TRIM, run_script

TRIM_CHUNK = 1000  # events per trim call: Redis stays responsive while a long retention is cut back


async def stats(redis: aioredis.Redis, names: Iterable[str]) -> dict[str, tuple[int, int]]:
    """name -> (EventCount, SizeBytes), in one round trip."""
    names = list(names)
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcard(archive_events_key(name))
            pipe.get(archive_bytes_key(name))
        replies = await pipe.execute()
    return {name: (int(replies[2 * i]), int(replies[2 * i + 1] or 0)) for i, name in enumerate(names)}


async def trim(redis: aioredis.Redis, name: str, cutoff_ms: int, chunk: int = TRIM_CHUNK) -> int:
    """Remove the archive's events older than `cutoff_ms`, `chunk` per call; the number removed."""
    removed = 0
    while True:
        n = int(await run_script(redis, ARCHIVE_TRIM, [archive_events_key(name), archive_bytes_key(name)],
                                 [cutoff_ms, chunk]))
        removed += n
        if n < chunk:
            return removed


async def drop(redis: aioredis.Redis, name: str) -> None:
    """Delete every event of the archive (DeleteArchive, or an archive no longer declared)."""
    await redis.delete(archive_events_key(name), archive_bytes_key(name))


async def stored_names(redis: aioredis.Redis) -> set[str]:
    """The names of every archive that has events in Redis."""
    return {archive_of_events_key(key) async for key in redis.scan_iter(match=ARCHIVE_EVENTS_PATTERN, count=500)}


async def page(redis: aioredis.Redis, name: str, start_ms: int, end_ms: int, offset: int, count: int
               ) -> list[tuple[bytes, float]]:
    """Up to `count` events scored in [start_ms, end_ms), skipping the first `offset`, oldest first."""
    return await redis.zrangebyscore(archive_events_key(name), start_ms, f"({end_ms}", start=offset, num=count,
                                     withscores=True)
