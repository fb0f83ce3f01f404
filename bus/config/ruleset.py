"""The live rule set: the rules YAML declares plus the rules made through the AWS API, as one Config.

`merge` builds the whole of it; `merged_rule` answers for one (bus, name) with the same rules,
so a broker that changes one API rule can update its Router in place and still route exactly
as a fresh `Router(merge(...))` would.
"""
from __future__ import annotations

from collections.abc import Mapping

from bus.config.model import Config, Rule


def merge(yaml_config: Config, api_rules: Mapping[tuple[str, str], Rule]) -> Config:
    """YAML rules win a name clash (the API refuses to create one, but YAML may add it later).

    An API rule on a bus YAML no longer declares is left out: nothing can be posted to that bus."""
    rules = dict(api_rules)
    rules.update(yaml_config.rules)
    rules = {k: r for k, r in rules.items() if r.bus in yaml_config.buses}
    return Config(buses=yaml_config.buses, rules=rules, functions=yaml_config.functions,
                  connections=yaml_config.connections, api_destinations=yaml_config.api_destinations)


def merged_rule(yaml_config: Config, api_rules: Mapping[tuple[str, str], Rule | None],
                key: tuple[str, str]) -> Rule | None:
    """The rule `merge(yaml_config, api_rules)` holds under `key`, or None, without merging the rest.

    A None in `api_rules` is no API rule (a broker passes the rules it changes, deleted ones as None)."""
    rule = yaml_config.rules.get(key)
    if rule is None:
        rule = api_rules.get(key)
    return rule if rule is not None and rule.bus in yaml_config.buses else None
