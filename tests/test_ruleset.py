"""bus.config.ruleset.merge: YAML's rules and the API's, as the brokers route them."""
from bus.config.model import Bus, Config, Rule
from bus.config.ruleset import merge

YAML = Config(buses={"default": Bus("default"), "shop": Bus("shop")},
              rules={("default", "a"): Rule(name="a", description="yaml", event_pattern={"source": ["x"]})},
              functions={})


def test_api_rules_join_the_yaml_rules():
    api = {("shop", "b"): Rule(name="b", bus="shop", event_pattern={"source": ["y"]})}
    assert set(merge(YAML, api).rules) == {("default", "a"), ("shop", "b")}


def test_yaml_wins_a_name_clash():
    api = {("default", "a"): Rule(name="a", description="api", event_pattern={"source": ["y"]})}
    assert merge(YAML, api).rules[("default", "a")].description == "yaml"


def test_an_api_rule_on_a_bus_yaml_no_longer_declares_is_left_out():
    api = {("gone", "c"): Rule(name="c", bus="gone", event_pattern={"source": ["y"]})}
    assert ("gone", "c") not in merge(YAML, api).rules


def test_buses_and_functions_are_yamls():
    merged = merge(YAML, {})
    assert (merged.buses, merged.functions) == (YAML.buses, YAML.functions)


def test_merged_rule_answers_for_one_key_as_merge_does():
    from bus.config.ruleset import merged_rule
    api = {("default", "a"): Rule(name="a", description="api", event_pattern={"source": ["y"]}),
           ("shop", "b"): Rule(name="b", bus="shop", event_pattern={"source": ["y"]}),
           ("gone", "c"): Rule(name="c", bus="gone", event_pattern={"source": ["y"]})}
    merged = merge(YAML, api)
    for key in [*api, *YAML.rules, ("default", "never")]:
        assert merged_rule(YAML, api, key) == merged.rules.get(key)
