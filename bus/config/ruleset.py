"""The live rule set: the rules YAML declares plus the rules made through the AWS API, as one Config."""
from __future__ import annotations

from bus.config.model import Config, Rule


def merge(yaml_config: Config, api_rules: dict[tuple[str, str], Rule]) -> Config:
    """YAML rules win a name clash (the API refuses to create one, but YAML may add it later).

    An API rule on a bus YAML no longer declares is left out: nothing can be posted to that bus."""
    rules = dict(api_rules)
    rules.update(yaml_config.rules)
    rules = {k: r for k, r in rules.items() if r.bus in yaml_config.buses}
    return Config(buses=yaml_config.buses, rules=rules, functions=yaml_config.functions)
