"""Rules created through the AWS API (PutRule, PutTargets, ...), kept in Redis for every broker.

YAML stays the source of truth for the rules it declares; the API adds rules of its own.
Each change bumps a version number, and every broker reloads when it sees a new one.
"""
from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from bus.config.model import Config, Rule
from bus.store.keys import API_RULES, API_VERSION, api_rule_field

_decode_rule = msgspec.json.Decoder(Rule).decode


async def load(redis: aioredis.Redis) -> dict[tuple[str, str], Rule]:
    raw = await redis.hgetall(API_RULES)
    rules = (_decode_rule(v) for v in raw.values())
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


def merge(yaml_config: Config, api_rules: dict[tuple[str, str], Rule]) -> Config:
    """YAML rules win a name clash (the API refuses to create one, but YAML may add it later)."""
    rules = dict(api_rules)
    rules.update(yaml_config.rules)
    rules = {k: r for k, r in rules.items() if r.bus in yaml_config.buses}
    return Config(buses=yaml_config.buses, rules=rules, functions=yaml_config.functions)
