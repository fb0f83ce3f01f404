"""The broker's live rule set: YAML rules (reloaded when their files change) merged with the
rules created through the AWS API (reloaded when their version in Redis moves), and the
Router built from them; every target of a new rule set is published before it routes.
"""
from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from bus.broker.ingest import Ingestor
from bus.broker.router import Router
from bus.config.model import Config, Rule
from bus.config.ruleset import merge
from bus.config.rulesfile import ConfigError, load_config, rule_files
from bus.config.validate import validate_rule
from bus.store import apirules
from bus.store.queue import Queue

log = logging.getLogger("bus.broker")


class Broker:
    """Holds the live Router; rebuilds it when the YAML files or the API rules change."""

    def __init__(self, redis: aioredis.Redis, rules_path: str | None, config: Config):
        self.redis = redis
        self.rules_path = rules_path
        self.yaml_config = config
        self.api_rules: dict = {}
        self._api_version = -1
        self.queue = Queue(redis)
        self.router = Router(config)
        self.ingestor = Ingestor(self.queue, lambda: self.router)
        self._stamp = self._rules_stamp()

    async def start(self) -> None:
        await self.reload_api_rules()
        await self.queue.publish_targets(self.router.all_targets())

    async def _rebuild(self) -> None:
        router = Router(merge(self.yaml_config, self.api_rules))
        await self.queue.publish_targets(router.all_targets())
        self.router = router

    async def reload_api_rules(self) -> bool:
        version = await apirules.version(self.redis)
        if version == self._api_version:
            return False
        self.api_rules = usable_api_rules(await apirules.load(self.redis), self.yaml_config.buses)
        self._api_version = version
        await self._rebuild()
        return True

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
        self.yaml_config = config
        await self._rebuild()
        log.info("rules reloaded: %d rules on %d buses", len(config.rules), len(config.buses))
        return True

    async def watch(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload_if_changed()
                await self.reload_api_rules()
            except Exception:  # a watcher that dies silently would freeze the rules
                log.exception("rules reload failed")


def usable_api_rules(rules: dict[tuple[str, str], Rule], buses) -> dict[tuple[str, str], Rule]:
    """The stored API rules a Router can be built from. The API validates before it stores, but a
    rule written by hand or by an older busway may not pass (a pattern that no longer compiles
    would stop every rebuild): it is logged and left out, and the others route."""
    out = {}
    for key, rule in rules.items():
        # A rule on a bus YAML no longer declares is not broken: merge leaves it out until it is back.
        problems = [p for p in validate_rule(rule, buses) if p.check != "bus"]
        if problems:
            log.error("stored API rule skipped: %s/%s: %s", rule.bus, rule.name, problems[0].message)
            continue
        out[key] = rule
    return out
