"""The live rule set: what YAML declares plus what was made through the AWS API, as one Config.

`declared` puts the API's buses, connections, API destinations and archives beside YAML's (YAML wins a
name clash); `merge` adds the API rules to that; `merged_rule` answers for one (bus, name)
with the same rules, so a broker that changes one API rule can update its Router in place and
still route exactly as a fresh `Router(merge(...))` would.
"""
from __future__ import annotations

from collections.abc import Mapping

from bus.config.model import ApiDestination, Archive, Bus, Config, Connection, Rule


def declared(yaml_config: Config, buses: Mapping[str, Bus], connections: Mapping[str, Connection],
             api_destinations: Mapping[str, ApiDestination],
             archives: Mapping[str, Archive] | None = None) -> Config:
    """YAML's Config with the API's buses, connections and API destinations added; YAML's rules only.

    YAML wins a name clash (the API refuses to create one, but YAML may add it later). Pass the
    result to `merge` and `merged_rule` in place of the YAML Config: an API rule on an API bus
    then counts as declared."""
    return Config(buses={**buses, **yaml_config.buses}, rules=yaml_config.rules, functions=yaml_config.functions,
                  connections={**connections, **yaml_config.connections},
                  api_destinations={**api_destinations, **yaml_config.api_destinations},
                  archives={**(archives or {}), **yaml_config.archives}, queues=yaml_config.queues,
                  event_source_mappings=yaml_config.event_source_mappings)


def merge(yaml_config: Config, api_rules: Mapping[tuple[str, str], Rule]) -> Config:
    """YAML rules win a name clash (the API refuses to create one, but YAML may add it later).

    An API rule on a bus YAML no longer declares is left out: nothing can be posted to that bus."""
    rules = dict(api_rules)
    rules.update(yaml_config.rules)
    rules = {k: r for k, r in rules.items() if r.bus in yaml_config.buses}
    return Config(buses=yaml_config.buses, rules=rules, functions=yaml_config.functions,
                  connections=yaml_config.connections, api_destinations=yaml_config.api_destinations,
                  archives=yaml_config.archives, queues=yaml_config.queues,
                  event_source_mappings=yaml_config.event_source_mappings)


def merged_rule(yaml_config: Config, api_rules: Mapping[tuple[str, str], Rule | None],
                key: tuple[str, str]) -> Rule | None:
    """The rule `merge(yaml_config, api_rules)` holds under `key`, or None, without merging the rest.

    A None in `api_rules` is no API rule (a broker passes the rules it changes, deleted ones as None)."""
    rule = yaml_config.rules.get(key)
    if rule is None:
        rule = api_rules.get(key)
    return rule if rule is not None and rule.bus in yaml_config.buses else None
