"""Which targets an event goes to: one compiled Matcher per bus, built from a Config."""
from __future__ import annotations

from typing import Any

from bus.config.model import Config
from bus.patterns import Matcher
from bus.store.deliveries import TargetRecord, target_records


class Router:
    def __init__(self, config: Config):
        self.config = config
        self._matchers: dict[str, Matcher] = {bus: Matcher() for bus in config.buses}
        self._targets: dict[tuple[str, str], list[TargetRecord]] = {}
        for (bus, name), rule in config.rules.items():
            self._targets[(bus, name)] = target_records(config, rule)
            if rule.state == "ENABLED" and rule.event_pattern is not None:
                self._matchers[bus].add(name, rule.event_pattern)

    def has_bus(self, bus: str) -> bool:
        return bus in self._matchers

    def route(self, bus: str, event: dict[str, Any]) -> list[tuple[str, list[TargetRecord]]]:
        """(rule name, its targets) for every enabled pattern rule of `bus` the event matches."""
        return [(name, self._targets[(bus, name)]) for name in self._matchers[bus].matches(event)]

    def targets_of(self, bus: str, rule: str) -> list[TargetRecord]:
        return self._targets.get((bus, rule), [])

    def all_targets(self) -> list[TargetRecord]:
        """Every declared target, disabled rules included: their queues must still drain."""
        return [record for records in self._targets.values() for record in records]
