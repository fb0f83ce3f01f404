"""The broker's live rule set: YAML rules (reloaded when their files change) merged with the
rules created through the AWS API (reloaded when their version in Redis moves), and the
Router built from them; every target of a changed rule is published before it routes.

Buses, connections, API destinations and archives made through the API (bus.store.resources) have a
version of their own and are loaded first: `declared` (YAML's Config with them added) is what
API rules are merged into, so an API rule on an API bus routes after a restart too. A changed
destination or connection republishes the records of the targets that use it (workers read
both from the record); a bus created or deleted rebuilds the Router.

A YAML reload rebuilds the Router whole. API rules change it in place, one rule at a time:
`store_api_rule` (the broker serving the API call) saves the rule and applies just it; the
version poll (`reload_api_rules`, other brokers) loads every stored rule, diffs them by
content against the ones it holds and applies only the difference. Either way the Router
ends as a fresh `Router(merge(yaml, api rules))` would be (tests/test_router.py).
"""
from __future__ import annotations

import msgspec

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

import redis.asyncio as aioredis

from bus.broker.ingest import Ingestor
from bus.broker.policies import BusPolicies
from bus.broker.router import Router
from bus.config.model import Config, HttpTarget, Rule
from bus.config.ruleset import declared, merge, merged_rule
from bus.config.rulesfile import ConfigError, load_config, rule_files
from bus.config.validate import validate_rule
from bus.observe import metrics
from bus.store import apirules, resources
from bus.store.connect import unreachable
from bus.broker.awssqs import Queues
from bus.broker.invocations import Replies
from bus.store.sqs import SqsStore
from bus.store.deliveries import TargetRecord, invoke_records, mapping_records
from bus.store.sqs import queue_attributes
from bus.store.migrate import rename_legacy_keys
from bus.store.queue import Queue

log = logging.getLogger("bus.broker")

RuleKey = tuple[str, str]


class Broker:
    """Holds the live Router; rebuilds it when the YAML files change, updates it in place
    when API rules do."""

    def __init__(self, redis: aioredis.Redis, rules_path: str | None, config: Config, replicas: int = 0):
        self.redis = redis
        self.rules_path = rules_path
        self.yaml_config = config
        self.started = time.time()  # what the API shows as a YAML bus's CreationTime
        self.api_resources = resources.Resources()  # the stored API buses, connections, destinations
        self._resources_version = -1
        self.declared = config  # YAML's Config with api_resources added (bus.config.ruleset.declared)
        self.api_rules: dict[RuleKey, Rule] = {}  # the usable stored API rules the Router holds
        self._api_version = -1
        self._checked_buses: set[str] = set()  # the buses `api_rules` were validated against
        self._api_counts: Counter[str] = Counter()  # API rules per bus, as api_rules holds them
        # One change of the rule set at a time: an in-place change computed against the Router
        # must not interleave (at its publish await) with a rebuild or another change.
        self._changing = asyncio.Lock()
        self.queue = Queue(redis, replicas=replicas)  # replicas: --durability replicated WAITs for 1
        self.policies = BusPolicies(redis)  # bus resource policies (PutPermission), checked at ingest
        self.router = Router(config)
        self.ingestor = Ingestor(self.queue, lambda: self.router)
        self.invoke_targets: list[TargetRecord] = []
        self.replies = Replies(self.queue)  # synchronous Invokes' answers (bus.broker.invocations)
        self.sqs = Queues(SqsStore(redis))  # SQS-compatible queues (bus.broker.awssqs)
        self._stamp = self._rules_stamp()

    async def start(self) -> None:
        async with self._changing:
            await rename_legacy_keys(self.redis)  # an older version's key names, before any read
            await self.policies.reload()
            await self._load_resources()  # first: API rules may be on API buses
            await self._load_api_rules()
            await self._rebuild()

    async def _load_api_rules(self) -> None:
        version = await apirules.version(self.redis)  # before the load: a change after it is seen again
        buses = self.declared.buses
        valid = self.api_rules if self._checked_buses == buses.keys() else None  # checked against these buses
        self.api_rules = usable_api_rules(await apirules.load(self.redis), buses, valid=valid)
        self._checked_buses = set(buses)
        self._api_counts = Counter(bus for bus, _ in self.api_rules)
        self._api_version = version

    async def _rebuild(self) -> None:
        router = Router(merge(self.declared, self.api_rules))
        invoke_targets = invoke_records(self.declared)  # Lambda's Invoke (bus.broker.invocations)
        await self._declare_queues()
        await self.queue.publish_mappings(mapping_records(self.declared))
        await self.queue.publish_targets(router.all_targets() + invoke_targets)
        self.router, self.invoke_targets = router, invoke_targets

    async def _declare_queues(self) -> None:
        """The rules files' `queues:` in the store (their messages kept); a queue no file declares
        any more stays, changeable through the API again."""
        store = self.sqs.store
        for name, decl in self.declared.queues.items():
            await store.put(name, queue_attributes(decl))
        for name, attrs in (await store.all()).items():
            if attrs.declared and name not in self.declared.queues:
                await store.put(name, msgspec.structs.replace(attrs, declared=False))

    def all_targets(self) -> list[TargetRecord]:
        """Every target this broker publishes: the rules' and the functions' Invoke targets."""
        return self.router.all_targets() + self.invoke_targets

    # --- API rules ----------------------------------------------------------------------------

    async def store_api_rule(self, bus: str, name: str, rule: Rule | None, cap: int = 0) -> None:
        """Save (or, with None, delete) one API rule, validated by the caller, and put it in force
        here at once; a new rule only while its bus holds fewer than `cap` (0: no cap). If other brokers changed rules meanwhile (the version moved by more than
        this change), everything stored is loaded and diffed instead."""
        async with self._changing:
            if rule is None:
                await apirules.delete(self.redis, bus, name)
            else:
                await apirules.save(self.redis, rule, cap)  # RuleLimitExceeded: nothing changed
            version = await apirules.version(self.redis)
            if version != self._api_version + 1:
                await self._reload_api_rules()
                return
            await self._apply_api_changes({(bus, name): rule})
            self._api_version = version

    async def reload_api_rules(self) -> bool:
        """Load the stored API rules if their version moved; apply what differs. Whether it moved."""
        async with self._changing:
            return await self._reload_api_rules()

    async def _reload_api_rules(self) -> bool:
        version = await apirules.version(self.redis)
        if version == self._api_version:
            return False
        buses = self.declared.buses
        # Rules held were checked against the buses of then; a destination may name a bus YAML dropped since.
        valid = self.api_rules if self._checked_buses == buses.keys() else None
        loaded = usable_api_rules(await apirules.load(self.redis), buses, valid=valid)
        self._checked_buses = set(buses)
        held = self.api_rules
        await self._apply_api_changes({key: loaded.get(key) for key in loaded.keys() | held.keys()
                                       if loaded.get(key) is not held.get(key) and loaded.get(key) != held.get(key)})
        self._api_version = version
        return True

    async def _apply_api_changes(self, changes: Mapping[RuleKey, Rule | None]) -> None:
        """Put these API rules (None: deleted) in force, changing the Router only where the merged
        rule changes: their targets are published first, then they route."""
        updates = {}
        for key in changes:
            rule = merged_rule(self.declared, changes, key)  # None in `changes` reads as absent
            if rule != self.router.config.rules.get(key):  # else YAML's rule hides the API one
                updates[key] = rule
        # Workers must know a target (and its group must exist) before an event can be routed to it.
        await self.queue.publish_targets(
            [record for rule in updates.values() if rule is not None for record in self.router.records_of(rule)])
        for (bus, name), rule in updates.items():
            if rule is None:
                self.router.remove_rule(bus, name)
            else:
                self.router.put_rule(rule)
        for key, rule in changes.items():
            old = self.api_rules.pop(key, None) if rule is None else self.api_rules.get(key)
            if rule is not None:
                self.api_rules[key] = rule
            self._api_counts[key[0]] += (rule is not None) - (old is not None)

    def api_rule_count(self, bus: str) -> int:
        """How many API rules `bus` has (the per-bus quota), without counting them all."""
        return self._api_counts[bus]

    # --- API buses, connections and API destinations ---------------------------------------

    async def change_resources(self, write: Callable[[], Awaitable[None]]) -> None:
        """Make one change of the stored API resources (`write`, a bus.store.resources call, which
        may raise and then changes nothing) and put it in force here before this returns."""
        async with self._changing:
            await write()
            await self._reload_resources()

    async def reload_resources(self) -> bool:
        """Load the stored API resources if their version moved; apply what differs. Whether it moved."""
        async with self._changing:
            return await self._reload_resources()

    async def _load_resources(self) -> bool:
        version = await resources.version(self.redis)
        if version == self._resources_version:
            return False
        self.api_resources = await resources.load(self.redis)
        self._resources_version = version
        self.declared = self._declared()
        return True

    def _declared(self) -> Config:
        r = self.api_resources
        return declared(self.yaml_config, r.buses, r.connections, r.api_destinations, r.archives)

    async def _reload_resources(self) -> bool:
        before = self.declared
        if not await self._load_resources():
            return False
        after = self.declared
        if after.buses.keys() != before.buses.keys():
            # A bus came or went: the Router's matchers are per bus, and API rules left out (or
            # kept) for their bus are decided again, so build it whole, as at a start.
            await self._load_api_rules()
            await self._rebuild()
            return True
        changed = {name for name in before.api_destinations.keys() | after.api_destinations.keys()
                   if _http_parts(before, name) != _http_parts(after, name)}
        router = self.router
        # The Router's Config is its own (see Router.__init__): only its rules are its state; the
        # declared parts are swapped whole, then the rules whose records read them are put again.
        router.config.buses = after.buses
        router.config.connections = after.connections
        router.config.api_destinations = after.api_destinations
        if after.archives != before.archives:
            router.set_archives(after.archives)
        stale = [rule for rule in router.config.rules.values()
                 if any(isinstance(t, HttpTarget) and t.http in changed for t in rule.targets)]
        # Workers read the destination and its connection from the record: publish first.
        await self.queue.publish_targets([record for rule in stale for record in router.records_of(rule)])
        for rule in stale:
            router.put_rule(rule)  # same pattern: the Matcher is left alone, the records are redone
        return True

    # --- YAML rules ---------------------------------------------------------------------------

    def _rules_stamp(self) -> tuple:
        if not self.rules_path:
            return ()
        try:
            return tuple((str(f), f.stat().st_mtime_ns) for f in rule_files(self.rules_path))
        except (ConfigError, OSError):
            return ()

    async def reload_if_changed(self) -> bool:
        stamp = self._rules_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            config = load_config(self.rules_path)
        except ConfigError as exc:
            log.error("rules not reloaded, keeping the previous ones:\n%s", exc)
            return False
        async with self._changing:
            self.yaml_config = config
            self.declared = self._declared()
            await self._rebuild()
        log.info("rules reloaded: %d rules on %d buses", len(config.rules), len(config.buses))
        return True

    async def watch(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload_if_changed()
                await self.policies.reload()
                await self.reload_resources()  # before the rules: a new API rule may be on a new API bus
                await self.reload_api_rules()
            except Exception as exc:  # a watcher that dies silently would freeze the rules
                if unreachable(exc):  # an outage or a failover: said once per try, no traceback
                    log.warning("rules reload skipped: Redis unreachable (%s); next try in %gs", exc, interval)
                else:
                    log.exception("rules reload failed")


def _http_parts(config: Config, destination: str) -> tuple:
    """What an `http` target's record holds of `destination`: it and its connection."""
    d = config.api_destinations.get(destination)
    return d, config.connections.get(d.connection) if d else None


def usable_api_rules(rules: dict[tuple[str, str], Rule], buses,
                     valid: Mapping[RuleKey, Rule] | None = None) -> dict[tuple[str, str], Rule]:
    """The stored API rules a Router can be built from. The API validates before it stores, but a
    rule written by hand or by an older busway may not pass (a pattern that no longer compiles
    would stop every rebuild): it is logged and left out, and the others route.

    A rule equal to its entry in `valid` (rules that passed before) is not checked again: checking
    a function target looks through sys.path, and a reload of 10,000 rules did that 10,000 times."""
    out = {}
    valid = valid or {}
    for key, rule in rules.items():
        held = valid.get(key)
        if held == rule:
            out[key] = held  # the very object held: the broker's diff then skips it by identity
            continue
        # A rule on a bus YAML no longer declares is not broken: merge leaves it out until it is back.
        problems = [p for p in validate_rule(rule, buses) if p.check != "bus"]
        if problems:
            log.error("stored API rule skipped: %s/%s: %s", rule.bus, rule.name, problems[0].message)
            metrics.API_RULES_SKIPPED.labels("invalid").inc()
            continue
        out[key] = rule
    return out
