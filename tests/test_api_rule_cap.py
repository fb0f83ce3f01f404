"""The per-bus cap on API rules holds in Redis itself, so brokers racing for the last place cannot both win."""
from __future__ import annotations

import asyncio

from bus.config.model import Rule
from bus.store import apirules
from bus.store.keys import API_RULES
from tests.conftest import with_client


def rule(name: str, bus: str = "default") -> Rule:
    return Rule(name=name, bus=bus, event_pattern={"source": [name]})


def test_concurrent_new_rules_past_the_cap_store_exactly_the_cap(redis_url, r):
    async def race(client):
        results = await asyncio.gather(*(apirules.save(client, rule(f"r{i}"), cap=3) for i in range(8)),
                                       return_exceptions=True)
        return [type(x).__name__ for x in results]
    outcomes = with_client(redis_url, race)
    assert outcomes.count("RuleLimitExceeded") == 5 and outcomes.count("NoneType") == 3
    assert r.hlen(API_RULES) == 3


def test_changing_a_stored_rule_at_the_cap_is_allowed(redis_url):
    async def body(client):
        for name in ("a", "b"):
            await apirules.save(client, rule(name), cap=2)
        await apirules.save(client, Rule(name="a", event_pattern={"source": ["changed"]}), cap=2)
        return await apirules.load(client)
    assert with_client(redis_url, body)[("default", "a")].event_pattern == {"source": ["changed"]}


def test_a_deleted_rule_frees_its_place_and_other_buses_count_apart(redis_url):
    async def body(client):
        await apirules.save(client, rule("a"), cap=1)
        await apirules.save(client, rule("a", bus="shop/eu"), cap=1)  # bus names may hold "/"
        await apirules.delete(client, "default", "a")
        await apirules.save(client, rule("b"), cap=1)
        return sorted(await apirules.load(client))
    assert with_client(redis_url, body) == [("default", "b"), ("shop/eu", "a")]


def test_rules_stored_before_counting_began_are_counted_once(redis_url, r):
    r.hset(API_RULES, "default/old", b'{"name": "old", "event_pattern": {"source": ["x"]}}')

    async def body(client):
        await apirules.save(client, rule("new"), cap=2)
        try:
            await apirules.save(client, rule("third"), cap=2)
        except apirules.RuleLimitExceeded:
            return "refused"
        return "stored"
    assert with_client(redis_url, body) == "refused"
