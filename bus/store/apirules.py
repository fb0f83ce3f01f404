"""Rules created through the AWS API (PutRule, PutTargets, ...), kept in Redis for every broker.

YAML stays the source of truth for the rules it declares; the API adds rules of its own.
Each change bumps a version number, and every broker reloads when it sees a new one.
"""
from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from bus.config.model import Rule, with_kind
from bus.store.keys import API_RULES, API_VERSION, api_rule_field


def decode_rule(raw: bytes) -> Rule:
    """A stored rule; targets stored before they had a `kind` get it from their kind's key."""
    data = msgspec.json.decode(raw)
    if isinstance(data, dict) and isinstance(data.get("targets"), list):
        data["targets"] = [with_kind(t) for t in data["targets"]]
    return msgspec.convert(data, Rule)


async def load(redis: aioredis.Redis) -> dict[tuple[str, str], Rule]:
    raw = await redis.hgetall(API_RULES)
    rules = (decode_rule(v) for v in raw.values())
    return {(r.bus, r.name): r for r in rules}


async def version(redis: aioredis.Redis) -> int:
    return int(await redis.get(API_VERSION) or 0)


async def save(redis: aioredis.Redis, rule: Rule) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(API_RULES, api_rule_field(rule.bus, rule.name), msgspec.json.encode(rule))
        pipe.incr(API_VERSION)
        await pipe.execute()


async def delete(redis: aioredis.Redis, bus: str, name: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hdel(API_RULES, api_rule_field(bus, name))
        pipe.incr(API_VERSION)
        await pipe.execute()

