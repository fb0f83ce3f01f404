"""Rules created through the AWS API (PutRule, PutTargets, ...), kept in Redis for every broker.

YAML stays the source of truth for the rules it declares; the API adds rules of its own.
Each change bumps a version number, and every broker reloads when it sees a new one.
"""
from __future__ import annotations

import logging

import msgspec
import redis.asyncio as aioredis

from bus.config.model import Rule, with_kind
from bus.observe import metrics
from bus.store.keys import API_RULE_COUNTS, API_RULES, API_VERSION, api_rule_field
from bus.store.scripts import API_RULE_DELETE, API_RULE_SAVE, run_script

log = logging.getLogger("bus.store")


def decode_rule(raw: bytes) -> Rule:
    """A stored rule; targets stored before they had a `kind` get it from their kind's key."""
    data = msgspec.json.decode(raw)
    if isinstance(data, dict) and isinstance(data.get("targets"), list):
        data["targets"] = [with_kind(t) for t in data["targets"]]
    return msgspec.convert(data, Rule)


async def load(redis: aioredis.Redis) -> dict[tuple[str, str], Rule]:
    """Every stored rule that decodes. One that does not (written by a buggy or newer busway, or
    by hand) is logged and skipped: one bad rule must not stop a broker or hide the others."""
    rules = {}
    for field, raw in (await redis.hgetall(API_RULES)).items():
        try:
            rule = decode_rule(raw)
        except (msgspec.DecodeError, TypeError, RecursionError) as exc:  # ValidationError is a DecodeError
            log.error("stored API rule skipped: %s in %s does not load: %s", _text(field), API_RULES, exc)
            metrics.API_RULES_SKIPPED.labels("unreadable").inc()
            continue
        rules[(rule.bus, rule.name)] = rule
    return rules


def _text(field: bytes | str) -> str:
    return field.decode(errors="replace") if isinstance(field, bytes) else field


async def version(redis: aioredis.Redis) -> int:
    return int(await redis.get(API_VERSION) or 0)


class RuleLimitExceeded(Exception):
    """The bus already holds as many API rules as the cap allows: nothing was written."""


async def save(redis: aioredis.Redis, rule: Rule, cap: int = 0) -> None:
    """Store a rule and bump the version, atomically; a new rule only while its bus holds fewer
    than `cap` API rules (0: no cap), so brokers racing for the last place cannot both win."""
    version = await run_script(redis, API_RULE_SAVE, [API_RULES, API_VERSION, API_RULE_COUNTS],
                               [api_rule_field(rule.bus, rule.name), msgspec.json.encode(rule), rule.bus, cap])
    if version == -1:
        raise RuleLimitExceeded(rule.bus)


async def delete(redis: aioredis.Redis, bus: str, name: str) -> None:
    await run_script(redis, API_RULE_DELETE, [API_RULES, API_VERSION, API_RULE_COUNTS], [api_rule_field(bus, name), bus])

