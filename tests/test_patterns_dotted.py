"""Dotted field names: AWS joins nested names with a dot ("Considerations when creating event
patterns"), so `a.b` in an event is the pattern's `a: {b: ...}` and the reverse, on every engine,
in the single-pattern evaluator and in the reference yardstick alike."""
from __future__ import annotations

import random

import pytest

from bus.patterns import Matcher, PatternError, compile_pattern
from bus.patterns.dotted import expand_event, expand_pattern
from bus.patterns.engine import ENGINES, using_engine
from bus.patterns.reference import reference_matches
from bus.patterns.syntax import MAX_DEPTH


@pytest.fixture(autouse=True, params=ENGINES)
def engine(request):
    with using_engine(request.param):
        yield request.param


def matches(pattern: dict, event: dict) -> bool:
    """The Matcher's answer, checked against the single-pattern evaluator and the reference."""
    matcher = Matcher()
    matcher.add("r", pattern)
    answer = matcher.matches(event) == ["r"]
    assert compile_pattern(pattern).matches(event) is answer
    assert reference_matches(pattern, event) is answer
    return answer


def test_an_event_field_named_with_a_dot_matches_the_nested_pattern():
    assert matches({"a": {"b": [1]}}, {"a.b": 1})


def test_a_pattern_key_with_a_dot_matches_the_nested_event_field():
    assert matches({"c.d": [2]}, {"c": {"d": 2}})


def test_the_awsdocs_pair_detail_state_and_nested_state_are_one_field():
    event = {"source": "aws.ec2", "detail": {"state": "terminated"}}
    assert matches({"detail.state": ["terminated"]}, event)
    assert matches({"detail": {"state": ["terminated"]}}, {"source": "aws.ec2", "detail.state": "terminated"})


def test_dots_join_at_any_depth_and_on_both_sides():
    assert matches({"x": {"y.z": {"w": [3]}}}, {"x.y": {"z.w": 3}})
    assert matches({"x.y.z.w": [3]}, {"x": {"y": {"z": {"w": 3}}}})


def test_a_dotted_field_with_another_value_does_not_match():
    assert not matches({"a": {"b": [1]}}, {"a.b": 2})


def test_a_dotted_name_that_is_not_the_whole_path_does_not_match():
    assert not matches({"a": {"b": [1]}}, {"a.b.c": 1})
    assert not matches({"a.b.c": [1]}, {"a": {"b": 1}})


def test_a_dotted_field_is_present_for_exists():
    assert matches({"a": {"b": [{"exists": True}]}}, {"a.b": "x"})
    assert not matches({"a": {"b": [{"exists": False}]}}, {"a.b": "x"})


def test_a_field_given_both_nested_and_dotted_offers_both_values():
    event = {"a": {"b": 1}, "a.b": 2}
    assert matches({"a": {"b": [2]}}, event)
    assert matches({"a": {"b": [1]}}, event)
    assert not matches({"a": {"b": [{"anything-but": [1, 2]}]}}, event)


def test_a_nested_object_and_a_dotted_name_under_it_are_one_object():
    event = {"a": {"b": {"x": 1}}, "a.b.y": 2}
    assert matches({"a": {"b": {"x": [1], "y": [2]}}}, event)


def test_dotted_names_inside_arrays_of_objects_are_nested_per_element():
    event = {"items": [{"sku.id": "a", "qty": 1}, {"sku.id": "b", "qty": 2}]}
    assert matches({"items": {"sku": {"id": ["b"]}, "qty": [2]}}, event)
    assert not matches({"items": {"sku": {"id": ["b"]}, "qty": [1]}}, event)


def test_dots_unrelated_to_any_rule_change_nothing():
    assert matches({"source": ["shop"]}, {"source": "shop", "com.example.key": {"v.w": 1}})


def test_a_pattern_written_both_ways_keeps_the_last_write_as_aws_does():
    pattern = {"a": {"b": [1]}, "a.b": [2]}
    assert matches(pattern, {"a": {"b": 2}})
    assert not matches(pattern, {"a": {"b": 1}})


def test_matching_does_not_change_the_event():
    event = {"a.b": 1, "a": {"c": 2}}
    matches({"a": {"b": [1], "c": [2]}}, event)
    assert event == {"a.b": 1, "a": {"c": 2}}


def test_the_engines_agree_on_random_dotted_events():
    rng = random.Random(13)
    keys = ["a", "b", "a.b", "b.a", "a.a"]
    patterns = [{"a": {"b": [1, 2]}}, {"a.b": [{"exists": False}]}, {"b": {"a": [{"numeric": [">", 0]}]}},
                {"a": {"a": [2], "b": [1]}}, {"a.a": [{"anything-but": 1}]}]

    def value(depth: int):
        roll = rng.random()
        if depth < 2 and roll < 0.4:
            return {rng.choice(keys): value(depth + 1) for _ in range(rng.randint(1, 3))}
        if depth < 2 and roll < 0.5:
            return [value(depth + 1) for _ in range(rng.randint(1, 2))]
        return rng.choice([1, 2, "x"])

    for _ in range(300):
        event = {rng.choice(keys): value(0) for _ in range(rng.randint(1, 4))}
        answers = {}
        for name in ENGINES:
            with using_engine(name):
                matcher = Matcher()
                for i, p in enumerate(patterns):
                    matcher.add(f"r{i}", p)
                answers[name] = matcher.matches(event)
        expected = [f"r{i}" for i, p in enumerate(patterns) if reference_matches(p, event)]
        assert all(found == expected for found in answers.values()), (event, answers, expected)


def test_a_dotted_pattern_path_deeper_than_the_nesting_limit_is_refused():
    with pytest.raises(PatternError, match="nested too deeply"):
        compile_pattern({".".join(["k"] * (MAX_DEPTH + 2)): [1]})


def test_a_dotted_pattern_path_as_long_as_the_deepest_nested_one_is_accepted():
    deepest: dict = {"k": [1]}
    for _ in range(MAX_DEPTH):
        deepest = {"k": deepest}
    compile_pattern(deepest)
    assert matches({".".join(["k"] * (MAX_DEPTH + 1)): [1]}, deepest_event(MAX_DEPTH + 1))


def deepest_event(levels: int) -> dict:
    event: object = 1
    for _ in range(levels):
        event = {"k": event}
    return event


def test_a_hostile_dotted_event_key_is_harmless():
    matcher = Matcher()
    matcher.add("r", {"a": {"b": [1]}})
    assert matcher.matches({"a.b": 1, "." * 100_000: 1, ".".join(["a"] * 50_000): 2}) == ["r"]


def test_expand_event_nests_dotted_names_and_keeps_others():
    assert expand_event({"a.b": 1, "c": [{"d.e": 2}]}) == {"a": {"b": 1}, "c": [{"d": {"e": 2}}]}
    plain = {"a": {"b": 1}}
    assert expand_event(plain) is plain


def test_expand_pattern_nests_dotted_keys():
    assert expand_pattern({"a.b": [1], "$or": [{"c.d": [2]}, {"e": [3]}]}) == \
        {"a": {"b": [1]}, "$or": [{"c": {"d": [2]}}, {"e": [3]}]}
