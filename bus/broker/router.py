"""Which targets an event goes to, and which archives keep it: compiled Matchers per bus, built
from a Config.

A Router is built whole from a merged Config (bus.config.ruleset.merge), and can then be
changed one rule at a time (`put_rule`, `remove_rule`): only that rule's Matcher entry and
target records change, and it routes exactly as a Router built afresh from the changed
Config would (tests/test_router.py checks this). The broker changes it from one place, in
the event loop, between requests; nothing reads it from another thread.
"""
from __future__ import annotations

from typing import Any

from bus.config.model import Archive, Config, Rule
from bus.patterns import Matcher
from bus.store.deliveries import TargetRecord, target_records

ARCHIVE_MARK = "@"  # no rule name starts with it (bus.config.model.RULE_NAME): an archive's Matcher entry


class Router:
    def __init__(self, config: Config):
        # Its own rules dict: put_rule/remove_rule change it, and the caller's Config (the YAML
        # one, at a broker's start) must not change with it.
        self.config = Config(buses=config.buses, rules=dict(config.rules), functions=config.functions,
                             connections=config.connections, api_destinations=config.api_destinations,
                             archives=config.archives)
        self._matchers: dict[str, Matcher] = {bus: Matcher() for bus in config.buses}
        self._targets: dict[tuple[str, str], list[TargetRecord]] = {}
        for (bus, name), rule in self.config.rules.items():
            self._targets[(bus, name)] = target_records(self.config, rule)
            if _matches_events(rule):
                self._matchers[bus].add(name, rule.event_pattern)
        # An archive with a pattern is an entry of its bus's Matcher, marked, so that one walk of an
        # event finds its rules and its archives (a Matcher of their own walked each event twice).
        self._pattern_archives: dict[str, list[str]] = {}  # bus -> its marked archive entries
        self._keep_all: dict[str, list[str]] = {}  # bus -> its archives with no pattern (keep every event)
        self.set_archives(config.archives)

    def has_bus(self, bus: str) -> bool:
        return bus in self._matchers

    def route(self, bus: str, event: dict[str, Any]) -> list[tuple[str, list[TargetRecord]]]:
        """(rule name, its targets) for every enabled pattern rule of `bus` the event matches."""
        names = self._matchers[bus].matches(event)
        if bus in self._pattern_archives:
            names = [name for name in names if name[0] != ARCHIVE_MARK]
        return [(name, self._targets[(bus, name)]) for name in names]

    def route_and_archives(self, bus: str, event: dict[str, Any]) -> tuple[list[tuple[str, list[TargetRecord]]], list[str]]:
        """route(bus, event), and the archives of `bus` that keep the event, from one walk."""
        names = self._matchers[bus].matches(event)
        keep = self._keep_all.get(bus, [])
        if bus not in self._pattern_archives:
            return [(name, self._targets[(bus, name)]) for name in names], keep
        routes, archives = [], list(keep)
        for name in names:
            if name[0] == ARCHIVE_MARK:
                archives.append(name[1:])
            else:
                routes.append((name, self._targets[(bus, name)]))
        return routes, archives

    def archives_for(self, bus: str, event: dict[str, Any]) -> list[str]:
        """The archives of `bus` that keep `event`."""
        return self.route_and_archives(bus, event)[1] if self.has_archives(bus) else []

    def has_archives(self, bus: str) -> bool:
        return bus in self._keep_all or bus in self._pattern_archives

    def set_archives(self, archives: dict[str, Archive]) -> None:
        """Replace the archives (validated: their patterns compile); those on unknown buses are
        kept in the Config but keep nothing."""
        for bus, marked in self._pattern_archives.items():
            for entry in marked:
                self._matchers[bus].remove(entry)
        pattern_archives: dict[str, list[str]] = {}
        keep_all: dict[str, list[str]] = {}
        for archive in sorted(archives.values(), key=lambda a: a.name):
            if archive.bus not in self._matchers:
                continue
            if archive.event_pattern is None:
                keep_all.setdefault(archive.bus, []).append(archive.name)
            else:
                entry = ARCHIVE_MARK + archive.name
                self._matchers[archive.bus].add(entry, archive.event_pattern)
                pattern_archives.setdefault(archive.bus, []).append(entry)
        self.config.archives = dict(archives)
        self._pattern_archives, self._keep_all = pattern_archives, keep_all

    def targets_of(self, bus: str, rule: str) -> list[TargetRecord]:
        return self._targets.get((bus, rule), [])

    def all_targets(self) -> list[TargetRecord]:
        """Every declared target, disabled rules included: their queues must still drain."""
        return [record for records in self._targets.values() for record in records]

    # --- changing one rule ------------------------------------------------------------------

    def records_of(self, rule: Rule) -> list[TargetRecord]:
        """The target records `rule` would have here: publish them before `put_rule(rule)`."""
        return target_records(self.config, rule)

    def put_rule(self, rule: Rule) -> None:
        """Add `rule`, or replace the rule of its (bus, name). Its bus must be one of the Config's."""
        if rule.bus not in self._matchers:
            raise ValueError(f"rule {rule.name}: bus {rule.bus} is not one of this router's")
        key = (rule.bus, rule.name)
        old = self.config.rules.get(key)
        # A change of targets, description or schedule alone leaves the Matcher as it is: adding
        # a rule again recompiles its pattern and re-threads it through the automaton.
        same_matching = (old is not None and _matches_events(old) == _matches_events(rule)
                         and old.event_pattern == rule.event_pattern)
        if not same_matching:
            matcher = self._matchers[rule.bus]
            if _matches_events(rule):
                matcher.add(rule.name, rule.event_pattern)  # first: a pattern that fails changes nothing
            else:
                matcher.remove(rule.name)
        self.config.rules[key] = rule
        self._targets[key] = target_records(self.config, rule)

    def remove_rule(self, bus: str, name: str) -> None:
        """Forget the rule (bus, name); an unknown one is ignored."""
        if self.config.rules.pop((bus, name), None) is None:
            return
        del self._targets[(bus, name)]
        self._matchers[bus].remove(name)


def _matches_events(rule: Rule) -> bool:
    """Whether the rule is in its bus's Matcher: enabled, with a pattern (schedules fire alone)."""
    return rule.state == "ENABLED" and rule.event_pattern is not None
