"""Brokers route events that workers cannot: Lambda destination records from the inbox stream.

Any broker may take an item (consumer group); it is acknowledged and deleted only after its
deliveries are in Redis, so a broker crash redelivers the item (reclaimed after IDLE_MS).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bus.worker.destinations import INBOX, INBOX_GROUP, InboxItem
from bus.store.deliveries import FIELD

log = logging.getLogger("bus.inbox")
IDLE_MS = 10_000
_decode = msgspec.json.Decoder(InboxItem).decode


async def consume_inbox(redis: aioredis.Redis, publish, stop: asyncio.Event | None = None) -> None:
    """`publish(bus, event, received)` routes one event; runs until cancelled."""
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    try:
        await redis.xgroup_create(INBOX, INBOX_GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    while stop is None or not stop.is_set():
        try:
            _, claimed, *_ = await redis.xautoclaim(INBOX, INBOX_GROUP, consumer, IDLE_MS, "0-0", count=50)
            fresh = await redis.xreadgroup(INBOX_GROUP, consumer, {INBOX: ">"}, count=50, block=1000)
            entries = claimed + [e for _, batch in fresh or [] for e in batch]
            for entry_id, fields in entries:
                if fields:
                    item = _decode(fields[FIELD])
                    await publish(item.bus, item.event, time.time())
                async with redis.pipeline(transaction=True) as pipe:
                    pipe.xack(INBOX, INBOX_GROUP, entry_id)
                    pipe.xdel(INBOX, entry_id)
                    await pipe.execute()
        except asyncio.CancelledError:
            raise
        except Exception:  # keep routing after a bad item or a Redis hiccup; the item stays pending
            log.exception("inbox routing failed; will retry")
            await asyncio.sleep(1)
