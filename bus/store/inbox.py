"""The inbox stream's Redis side: destination records workers wrote, for brokers to route.

Brokers share one consumer group; an item is acknowledged and deleted only when routed
(`done`) or, if it can never be routed, moved to the `inbox` DLQ in the same script call
(`dead_letter`).
"""
from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bus.store.deadletters import DeadLetter, encode_dead_letter, trim_min_id
from bus.store.keys import FIELD, INBOX, INBOX_DLQ, INBOX_GROUP, as_str, dlq_key
from bus.store.scripts import FINISH, INBOX_DEAD_LETTER, run_script


class Inbox:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(INBOX, INBOX_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def take(self, consumer: str, idle_ms: int, count: int = 50, block_ms: int = 1000) -> list[tuple[str, dict]]:
        """Items another broker left pending for `idle_ms`, then new ones: (entry id, fields)."""
        _, claimed, *_ = await self.redis.xautoclaim(INBOX, INBOX_GROUP, consumer, idle_ms, "0-0", count=count)
        fresh = await self.redis.xreadgroup(INBOX_GROUP, consumer, {INBOX: ">"}, count=count, block=block_ms)
        entries = claimed + [e for _, batch in fresh or [] for e in batch]
        return [(as_str(entry_id), fields) for entry_id, fields in entries]

    async def done(self, entry_id: str) -> None:
        await run_script(self.redis, FINISH, [INBOX], [INBOX_GROUP, entry_id, 0])  # XACK + XDEL, one call

    async def dead_letter(self, entry_id: str, letter: DeadLetter) -> None:
        """Ack and delete the item and keep `letter` in the `inbox` DLQ, atomically."""
        await run_script(self.redis, INBOX_DEAD_LETTER, [INBOX, dlq_key(INBOX_DLQ)],
                         [INBOX_GROUP, entry_id, FIELD, encode_dead_letter(letter), trim_min_id()])
