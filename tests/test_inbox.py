"""The brokers' inbox against a real Redis: routed items go, unroutable ones become dead letters
(atomically with their ack), and a Redis error leaves an item pending for a retry."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from bus.broker.inbox import consume_inbox
from bus.store import deadletters, keys
from bus.store.inbox import Inbox

EVENT = {"id": "ev-1", "source": "lambda", "detail-type": "Lambda Function Invocation Result - Success", "detail": {}}
INBOX_DLQ = keys.dlq_key(keys.INBOX_DLQ)


def item(bus: str = "default", event: dict = EVENT) -> dict:
    return {keys.FIELD: json.dumps({"bus": bus, "event": event})}


class Publisher:
    """Records what it routes; raises for buses in `unknown`, and `failures` times first."""

    def __init__(self, unknown: tuple[str, ...] = (), failures: int = 0):
        self.unknown = unknown
        self.failures = failures
        self.routed: list[tuple[str, dict]] = []

    async def __call__(self, bus: str, event: dict, received: float, hops: int = 0) -> int:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("Redis went away")
        if bus in self.unknown:
            raise KeyError(bus)
        self.routed.append((bus, event))
        return 1


def consume(redis_url: str, publish: Publisher, until: Callable[[Any], bool], idle_ms: int = 10_000) -> None:
    """Run a broker's inbox consumer until `until(sync redis client)` holds (10 s at most)."""
    import redis as redis_lib

    async def main() -> None:
        client = aioredis.from_url(redis_url)
        sync = redis_lib.Redis.from_url(redis_url)
        stop = asyncio.Event()
        task = asyncio.create_task(consume_inbox(Inbox(client), publish, stop, idle_ms=idle_ms))
        try:
            for _ in range(200):
                if until(sync):
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("timed out")
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
            await client.aclose()
            sync.close()
    asyncio.run(main())


def settled(r) -> bool:
    """The inbox is empty and nothing of it is pending."""
    return r.xlen(keys.INBOX) == 0 and r.xpending(keys.INBOX, keys.INBOX_GROUP)["pending"] == 0


def letters(redis_url: str) -> list[deadletters.Letter]:
    async def main():
        client = aioredis.from_url(redis_url)
        try:
            return await deadletters.list_letters(client)
        finally:
            await client.aclose()
    return asyncio.run(main())


def test_a_routed_item_is_acked_and_deleted(redis_url, r):
    r.xadd(keys.INBOX, item())
    publish = Publisher()
    consume(redis_url, publish, lambda s: publish.routed and settled(s))
    assert publish.routed == [("default", EVENT)]


def test_an_undecodable_item_becomes_an_inbox_dead_letter_and_routing_goes_on(redis_url, r):
    r.xadd(keys.INBOX, {keys.FIELD: b"not json"})
    r.xadd(keys.INBOX, item())
    publish = Publisher()
    consume(redis_url, publish, lambda s: publish.routed and settled(s) and s.xlen(INBOX_DLQ) == 1)
    [found] = letters(redis_url)
    assert (found.dlq, found.letter.error_code) == (keys.INBOX_DLQ, deadletters.INBOX_UNDECODABLE)
    assert "not json" in found.letter.error_message, "the record says what could not be read"


def test_an_item_without_the_delivery_field_becomes_a_dead_letter(redis_url, r):
    r.xadd(keys.INBOX, {b"other": b"1"})
    consume(redis_url, Publisher(), lambda s: settled(s) and s.xlen(INBOX_DLQ) == 1)
    [found] = letters(redis_url)
    assert found.letter.error_code == deadletters.INBOX_UNDECODABLE


def test_an_item_for_an_unknown_bus_becomes_a_dead_letter_keeping_bus_and_event(redis_url, r):
    r.xadd(keys.INBOX, item(bus="gone"))
    consume(redis_url, Publisher(unknown=("gone",)), lambda s: settled(s) and s.xlen(INBOX_DLQ) == 1)
    [found] = letters(redis_url)
    assert (found.letter.error_code, found.letter.bus) == (deadletters.INBOX_UNKNOWN_BUS, "gone")
    assert found.as_dict()["event"] == EVENT


def test_a_redriven_inbox_dead_letter_is_routed_once_its_bus_exists(redis_url, r):
    r.xadd(keys.INBOX, item(bus="late"))
    consume(redis_url, Publisher(unknown=("late",)), lambda s: settled(s) and s.xlen(INBOX_DLQ) == 1)

    async def redrive_all() -> int:
        client = aioredis.from_url(redis_url)
        try:
            return await deadletters.redrive(client, await deadletters.list_letters(client))
        finally:
            await client.aclose()
    assert asyncio.run(redrive_all()) == 1
    publish = Publisher()
    consume(redis_url, publish, lambda s: publish.routed and settled(s))
    assert publish.routed == [("late", EVENT)] and r.xlen(INBOX_DLQ) == 0


def test_an_undecodable_dead_letter_is_not_redriven(redis_url, r):
    r.xadd(keys.INBOX, {keys.FIELD: b"\xff"})
    consume(redis_url, Publisher(), lambda s: settled(s) and s.xlen(INBOX_DLQ) == 1)

    async def redrive_all() -> int:
        client = aioredis.from_url(redis_url)
        try:
            return await deadletters.redrive(client, await deadletters.list_letters(client))
        finally:
            await client.aclose()
    assert asyncio.run(redrive_all()) == 0
    assert r.xlen(keys.INBOX) == 0 and r.xlen(INBOX_DLQ) == 1


def test_a_redis_error_while_routing_leaves_the_item_pending_and_it_is_routed_on_retry(redis_url, r):
    r.xadd(keys.INBOX, item())
    publish = Publisher(failures=1)
    consume(redis_url, publish, lambda s: publish.routed and settled(s), idle_ms=100)
    assert publish.routed == [("default", EVENT)]
    assert r.exists(INBOX_DLQ) == 0, "a Redis error is no reason to give up on an item"
