"""The Router changed one rule at a time routes exactly as one built afresh, and so do the brokers
that change it: the one serving an API change (store_api_rule) and the ones that learn it from
the version in Redis (reload_api_rules)."""
import asyncio
import random

import msgspec
import pytest
import redis.asyncio as aioredis

from bus.broker.live import Broker, usable_api_rules
from bus.broker.router import Router
from bus.config.model import Bus, Config, FunctionSettings, FunctionTarget, Rule
from bus.config.ruleset import merge, merged_rule
from bus.config.rulesfile import load_config
from bus.store import apirules
from bus.store.queue import Queue

BUSES = {"default": Bus("default"), "shop": Bus("shop")}
SOURCES = ["a", "b", "c"]
TYPES = ["x", "y", "z"]
NAMES = [f"r{i}" for i in range(12)]
YAML = Config(
    buses=BUSES,
    rules={("default", "r0"): Rule(name="r0", event_pattern={"source": ["a"]},
                                   targets=[FunctionTarget(id="yaml", function="app.yaml")]),
           ("shop", "y1"): Rule(name="y1", bus="shop", event_pattern={"detail-type": ["x"]}),
           ("default", "tick"): Rule(name="tick", schedule="rate(1 minute)",
                                     targets=[FunctionTarget(id="t", function="app.tick")])},
    functions={"app.slow": FunctionSettings(timeout=30.0)},
)
# Every combination of source and detail-type on both buses (and an unknown field value).
EVENTS = [(bus, {"source": s, "detail-type": t, "detail": {"n": n}})
          for bus in BUSES for s in SOURCES + ["other"] for t in TYPES for n in (1, 5)]


def random_pattern(rng: random.Random) -> dict:
    pattern: dict = {}
    if rng.random() < 0.8:
        pattern["source"] = rng.sample(SOURCES, rng.randint(1, 2))
    if rng.random() < 0.5:
        pattern["detail-type"] = [{"prefix": rng.choice(TYPES)}] if rng.random() < 0.3 else rng.sample(TYPES, 1)
    if rng.random() < 0.3:
        pattern["detail"] = {"n": [{"numeric": [">", rng.choice([0, 3])]}]}
    return pattern or {"source": [rng.choice(SOURCES)]}


def random_targets(rng: random.Random) -> list[FunctionTarget]:
    return [FunctionTarget(id=f"t{i}", function=rng.choice(["app.fast", "app.slow"]))
            for i in range(rng.randint(0, 3))]


def random_change(rng: random.Random, api: dict) -> tuple[tuple[str, str], Rule | None]:
    """One API call's effect: put (new or changed pattern), put targets, enable/disable, or delete.
    Names may clash with YAML's r0 (YAML wins) and may sit on a bus YAML does not declare."""
    bus = rng.choice(["default", "default", "shop", "gone"])
    key = (bus, rng.choice(NAMES))
    old = api.get(key)
    op = rng.choice(["put", "put", "targets", "state", "delete", "schedule"])
    if old is None or op == "put":
        return key, Rule(name=key[1], bus=bus, event_pattern=random_pattern(rng),
                         targets=old.targets if old else [], state=rng.choice(["ENABLED", "ENABLED", "DISABLED"]))
    if op == "targets":
        return key, msgspec.structs.replace(old, targets=random_targets(rng))
    if op == "state":
        return key, msgspec.structs.replace(old, state="DISABLED" if old.state == "ENABLED" else "ENABLED")
    if op == "schedule":
        return key, msgspec.structs.replace(old, event_pattern=None, schedule="rate(5 minutes)")
    return key, None


def routing(router: Router) -> list:
    """Everything a Router answers: per event the matched rules and their targets (as sets: the
    order of rules in one answer follows the order they were added, which means nothing), and
    the rules, targets and buses it holds."""
    routes = [sorted((name, records) for name, records in router.route(bus, event)) for bus, event in EVENTS]
    targets = sorted(router.all_targets(), key=lambda r: r.key)
    return [routes, targets, dict(sorted(router.config.rules.items())), sorted(router.config.buses)]


def apply(router: Router, yaml: Config, api: dict, key: tuple[str, str]) -> None:
    rule = merged_rule(yaml, api, key)
    if rule is None:
        router.remove_rule(*key)
    else:
        router.put_rule(rule)


@pytest.mark.parametrize("seed", range(8))
def test_a_router_changed_rule_by_rule_routes_as_a_fresh_one(seed):
    rng = random.Random(seed)
    api: dict = {}
    router = Router(merge(YAML, api))
    for step in range(150):
        key, rule = random_change(rng, api)
        if rule is None:
            api.pop(key, None)
        else:
            api[key] = rule
        apply(router, YAML, api, key)
        if step % 25 == 24:
            assert routing(router) == routing(Router(merge(YAML, api))), f"seed {seed} step {step}"
    assert routing(router) == routing(Router(merge(YAML, api)))


def test_a_new_target_routes_without_touching_the_pattern():
    router = Router(merge(YAML, {}))
    rule = Rule(name="api", event_pattern={"source": ["b"]})
    router.put_rule(rule)
    router.put_rule(msgspec.structs.replace(rule, targets=[FunctionTarget(id="t", function="app.slow")]))
    [(name, [record])] = router.route("default", {"source": "b"})
    assert (name, record.key, record.function.timeout) == ("api", "default/api/t", 30.0)


def test_a_disabled_or_removed_rule_stops_matching_and_an_enabled_one_resumes():
    router = Router(merge(YAML, {}))
    rule = Rule(name="api", event_pattern={"source": ["b"]})
    router.put_rule(msgspec.structs.replace(rule, state="DISABLED"))
    assert router.route("default", {"source": "b"}) == []
    router.put_rule(rule)
    assert [n for n, _ in router.route("default", {"source": "b"})] == ["api"]
    router.remove_rule("default", "api")
    router.remove_rule("default", "never-there")
    assert router.route("default", {"source": "b"}) == [] and ("default", "api") not in router.config.rules


def test_a_pattern_that_does_not_compile_changes_nothing():
    router = Router(merge(YAML, {}))
    before = routing(router)
    with pytest.raises(Exception):
        router.put_rule(Rule(name="r0", event_pattern={"source": "not a list"}))
    assert routing(router) == before


def test_a_rule_on_a_bus_the_router_lacks_is_refused():
    with pytest.raises(ValueError):
        Router(merge(YAML, {})).put_rule(Rule(name="x", bus="gone", event_pattern={"source": ["a"]}))


def test_changing_the_router_leaves_the_config_it_was_built_from_alone():
    router = Router(YAML)
    router.put_rule(Rule(name="api", event_pattern={"source": ["b"]}))
    router.remove_rule("default", "r0")
    assert set(YAML.rules) == {("default", "r0"), ("shop", "y1"), ("default", "tick")}


# --- brokers against a real Redis -----------------------------------------------------------

async def fresh_routing(redis, yaml: Config) -> list:
    """What a broker starting now would route: every stored rule, loaded and merged afresh."""
    stored = usable_api_rules(await apirules.load(redis), yaml.buses)
    return routing(Router(merge(yaml, stored)))


@pytest.mark.parametrize("seed", range(3))
def test_brokers_changed_by_the_api_and_by_the_version_route_as_a_fresh_build(redis_url, seed):
    """Two brokers take API changes in turn (each applying its own at once, the version moving
    under the other); a third only polls. Each ends routing as a broker started afresh, and
    every target it routes to is published."""
    async def main():
        rng = random.Random(seed)
        clients = [aioredis.from_url(redis_url) for _ in range(3)]
        try:
            brokers = [Broker(c, None, YAML) for c in clients]
            for broker in brokers:
                await broker.start()
            writers, watcher = brokers[:2], brokers[2]
            for step in range(120):
                writer = writers[0] if rng.random() < 0.7 else writers[1]
                if rng.random() < 0.5:  # as PutRule of a new rule does, for its quota check
                    await writer.reload_api_rules()
                key, rule = random_change(rng, writer.api_rules)
                if key[0] not in YAML.buses:  # the API refuses a rule on an undeclared bus
                    continue
                if key in YAML.rules:  # ... and a rule YAML declares
                    continue
                await writer.store_api_rule(key[0], key[1], rule)
                if step % 10 == 9:
                    await watcher.reload_api_rules()
                    expected = await fresh_routing(clients[0], YAML)
                    assert routing(writer.router) == expected, f"writer, seed {seed} step {step}"
                    assert routing(watcher.router) == expected, f"watcher, seed {seed} step {step}"
            for broker in brokers:
                await broker.reload_api_rules()
            expected = await fresh_routing(clients[0], YAML)
            published = set(await Queue(clients[0]).targets())
            stored = await apirules.load(clients[0])
            for broker in brokers:
                assert routing(broker.router) == expected
                assert broker.api_rules == stored
                assert {bus: broker.api_rule_count(bus) for bus in BUSES} == \
                    {bus: sum(1 for b, _ in stored if b == bus) for bus in BUSES}
                assert {r.stream for r in broker.router.all_targets()} <= published
        finally:
            for c in clients:
                await c.aclose()
    asyncio.run(main())


def test_concurrent_api_changes_on_one_broker_all_take_effect(redis_url):
    async def main():
        client = aioredis.from_url(redis_url)
        try:
            broker = Broker(client, None, YAML)
            await broker.start()
            rules = [Rule(name=f"c{i}", event_pattern={"source": [f"s{i}"]},
                          targets=[FunctionTarget(id="t", function="app.fast")]) for i in range(20)]
            await asyncio.gather(*(broker.store_api_rule("default", r.name, r) for r in rules),
                                 *(broker.reload_api_rules() for _ in range(5)))
            assert routing(broker.router) == await fresh_routing(client, YAML)
            assert [n for n, _ in broker.router.route("default", {"source": "s7"})] == ["c7"]
            await broker.store_api_rule("default", "c3", None)
            assert broker.api_rule_count("default") == 19 and broker.api_rule_count("shop") == 0
        finally:
            await client.aclose()
    asyncio.run(main())


def test_a_stored_api_rule_a_yaml_rule_hides_comes_back_when_yaml_drops_it(redis_url, tmp_path):
    async def main():
        client = aioredis.from_url(redis_url)
        try:
            (tmp_path / "rules.yaml").write_text("rules:\n  - {name: same, event_pattern: {source: [yaml]}}\n")
            broker = Broker(client, str(tmp_path), load_config(str(tmp_path)))
            await broker.start()
            other = Broker(client, None, YAML)  # a broker without that YAML rule stores one of the name
            await other.start()
            await other.store_api_rule("default", "same", Rule(name="same", event_pattern={"source": ["api"]}))
            await broker.reload_api_rules()
            assert [n for n, _ in broker.router.route("default", {"source": "yaml"})] == ["same"]
            assert broker.router.route("default", {"source": "api"}) == []
            (tmp_path / "rules.yaml").write_text("rules: []\n")
            broker._stamp = ()  # the mtime may not have moved within the file system's resolution
            assert await broker.reload_if_changed()
            assert [n for n, _ in broker.router.route("default", {"source": "api"})] == ["same"]
        finally:
            await client.aclose()
    asyncio.run(main())
