"""Property tests: the compiled matchers agree with the naive reference evaluator.

Patterns and events are drawn from a deliberately tiny vocabulary (three keys, a handful
of strings and numbers) so that matches, near-misses and arrays of objects are common.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bus.patterns import Matcher, PatternError, compile_pattern
from bus.patterns.engine import ENGINES, using_engine
from bus.patterns.reference import reference_matches

KEYS = ["a", "b", "c"]
STRINGS = ["", "x", "xy", "X", "Xy", "yx", "x*y", "10.0.0.1", "10.0.1.5", "::1", "ß", "SS"]
NUMBERS = [0, 1, 1.0, 2, -1, 2.5, 300]

scalars = st.one_of(st.sampled_from(STRINGS), st.sampled_from(NUMBERS), st.booleans(), st.none())

events_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    ),
    max_leaves=12,
)
events = st.dictionaries(st.sampled_from(KEYS), events_values, max_size=3)

short_strings = st.sampled_from(["x", "X", "y", "xy", "ß", "s"])
affix = st.sampled_from(["", "x", "X", "y", "xy", "10.0.", "ß", "s"])
wildcards = st.sampled_from(["*", "x*", "*y", "x*y", "*x*", "x\\*y", "X*", "10.*.1"])
numbers_in_range = st.sampled_from([-1, 0, 0.5, 1, 2, 2.5, 300])


@st.composite
def numeric_operands(draw) -> list:
    low, high = sorted(draw(st.lists(numbers_in_range, min_size=2, max_size=2, unique=True)))
    shape = draw(st.sampled_from(["=", ">", ">=", "<", "<=", "range"]))
    if shape != "range":
        return [shape, low]
    return [draw(st.sampled_from([">", ">="])), low, draw(st.sampled_from(["<", "<="])), high]


def one_or_list(values):
    return st.one_of(values, st.lists(values, min_size=1, max_size=3))


anything_but = st.one_of(
    st.sampled_from(STRINGS),
    st.sampled_from(NUMBERS),
    st.lists(st.sampled_from(STRINGS), min_size=1, max_size=3),
    st.lists(st.sampled_from(NUMBERS), min_size=1, max_size=3),
    st.fixed_dictionaries({"prefix": one_or_list(short_strings)}),
    st.fixed_dictionaries({"suffix": one_or_list(short_strings)}),
    st.fixed_dictionaries({"equals-ignore-case": one_or_list(short_strings)}),
    st.fixed_dictionaries({"wildcard": one_or_list(wildcards)}),
)

conditions = st.one_of(
    scalars,
    st.builds(lambda s: {"prefix": s}, affix),
    st.builds(lambda s: {"suffix": s}, affix),
    st.builds(lambda s: {"prefix": {"equals-ignore-case": s}}, affix),
    st.builds(lambda s: {"suffix": {"equals-ignore-case": s}}, affix),
    st.builds(lambda s: {"equals-ignore-case": s}, st.sampled_from(STRINGS)),
    st.builds(lambda s: {"wildcard": s}, wildcards),
    st.builds(lambda s: {"anything-but": s}, anything_but),
    st.builds(lambda s: {"numeric": s}, numeric_operands()),
    st.builds(lambda s: {"exists": s}, st.booleans()),
    st.builds(lambda s: {"cidr": s}, st.sampled_from(["10.0.0.0/24", "10.0.0.0/8", "10.0.1.0/30", "::/1"])),
)

leaves = st.lists(conditions, min_size=1, max_size=3)


@st.composite
def pattern_objects(draw, depth: int = 0) -> dict:
    """A pattern object; any `$or` branch uses keys its surroundings do not, so that the
    reference's direct reading of `$or` equals AWS's expansion (no leaf written twice)."""
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=0 if depth < 2 else 1, max_size=2, unique=True))
    obj: dict = {}
    for key in keys:
        if depth < 2 and draw(st.booleans()):
            obj[key] = draw(pattern_objects(depth + 1))
        else:
            obj[key] = draw(leaves)
    free = [k for k in KEYS if k not in obj]
    if depth < 2 and free and (not obj or draw(st.integers(0, 3)) == 0):
        branches = draw(st.integers(2, 3))
        obj["$or"] = [draw(branch_objects(free, depth + 1)) for _ in range(branches)]
    if not obj:
        obj[draw(st.sampled_from(KEYS))] = draw(leaves)
    return obj


@st.composite
def branch_objects(draw, allowed: list[str], depth: int) -> dict:
    keys = draw(st.lists(st.sampled_from(allowed), min_size=1, max_size=2, unique=True))
    obj = {}
    for key in keys:
        obj[key] = draw(pattern_objects(depth + 1)) if depth < 2 and draw(st.booleans()) else draw(leaves)
    return obj


@st.composite
def events_near(draw, pattern: dict) -> dict:
    """An event built to (nearly) satisfy `pattern`: values picked to pass one of each
    field's conditions, nested objects sometimes wrapped in arrays of several objects,
    and random damage (a dropped key, a foreign value) so near-misses occur too."""
    return draw(_object_near(pattern))


@st.composite
def _object_near(draw, pattern: dict) -> dict:
    obj: dict = {}
    for key, wanted in pattern.items():
        if key == "$or":
            obj.update(draw(_object_near(draw(st.sampled_from(wanted)))))
            continue
        roll = draw(st.integers(0, 19))
        if roll == 0:
            continue  # the key is missing
        if roll == 1:
            obj[key] = draw(events_values)
        elif isinstance(wanted, dict):
            shape = draw(st.sampled_from(["object", "array", "array"]))
            if shape == "object":
                obj[key] = draw(_object_near(wanted))
            else:
                elements = draw(st.lists(st.one_of(_object_near(wanted), events_values), min_size=1, max_size=3))
                obj[key] = elements
        else:
            value = draw(_value_near(draw(st.sampled_from(wanted))))
            if value is _OMIT:
                continue
            if draw(st.booleans()):
                value = draw(st.permutations([value] + draw(st.lists(scalars, max_size=2))))
            obj[key] = value
    return obj


_OMIT = object()


@st.composite
def _value_near(draw, condition):
    if not isinstance(condition, dict):
        return condition
    (name, operand), = condition.items()
    tweak = st.sampled_from(["", "y", "Z", "x"])
    if name == "prefix":
        text = operand["equals-ignore-case"].swapcase() if isinstance(operand, dict) else operand
        return text + draw(tweak)
    if name == "suffix":
        text = operand["equals-ignore-case"].swapcase() if isinstance(operand, dict) else operand
        return draw(tweak) + text
    if name == "equals-ignore-case":
        return draw(st.sampled_from([operand, operand.swapcase(), operand.upper(), operand.lower()]))
    if name == "wildcard":
        text = operand.replace("\\*", "\0")
        text = "".join(draw(tweak) if ch == "*" else ch for ch in text)
        return text.replace("\0", "*")
    if name == "numeric":
        bounds = [v for v in operand if not isinstance(v, str)]
        return draw(st.sampled_from(bounds + [b + d for b in bounds for d in (-0.5, 0.5)]))
    if name == "exists":
        return draw(scalars) if operand else _OMIT
    if name == "cidr":
        return draw(st.sampled_from(["10.0.0.7", "10.0.1.2", "10.9.9.9", "::1", "8000::1", "11.0.0.1"]))
    return draw(scalars)  # anything-but: any value, it usually passes


def compiles(pattern: dict) -> bool:
    try:
        compile_pattern(pattern)
        return True
    except PatternError:
        return False


# Hundreds of generated rule sets per test: minutes of CPU when four test processes share two
# cores, past the suite's 120 s per test; still bounded.
pytestmark = pytest.mark.timeout(400)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# The two Matcher properties run once per engine over up to 8 (or 14) rules each: 200 examples
# keep them to about a minute of CPU on this 2-core CI machine (300 took about two).
MATCHER_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=200)


@PROPERTY_SETTINGS
@given(pattern=pattern_objects(), data=st.data())
def test_compiled_pattern_agrees_with_reference(pattern, data):
    assume(compiles(pattern))
    event = data.draw(st.one_of(events, events_near(pattern), events_near(pattern), events_near(pattern)))
    assert compile_pattern(pattern).matches(event) == reference_matches(pattern, event)


def events_for(patterns: list[dict]):
    near = st.sampled_from(patterns).flatmap(events_near)
    return st.one_of(events, near, near, near)


@pytest.mark.parametrize("engine", ENGINES)
@MATCHER_SETTINGS
@given(patterns=st.lists(pattern_objects(), min_size=1, max_size=8), data=st.data())
def test_matcher_agrees_with_reference_and_compiled_pattern(engine, patterns, data):
    patterns = [p for p in patterns if compiles(p)]
    assume(patterns)
    event_list = data.draw(st.lists(events_for(patterns), min_size=1, max_size=4))
    with using_engine(engine):
        matcher = Matcher()
        for i, pattern in enumerate(patterns):
            matcher.add(f"rule{i}", pattern)
        got = [matcher.matches(event) for event in event_list]
    for event, names in zip(event_list, got):
        expected = [f"rule{i}" for i, p in enumerate(patterns) if reference_matches(p, event)]
        assert names == expected
        assert [f"rule{i}" for i, p in enumerate(patterns) if compile_pattern(p).matches(event)] == expected


operations = st.lists(
    st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 5), pattern_objects()),
    min_size=1, max_size=14,
)


@pytest.mark.parametrize("engine", ENGINES)
@MATCHER_SETTINGS
@given(ops=operations, data=st.data())
def test_adding_and_removing_rules_answers_like_a_fresh_matcher(engine, ops, data):
    with using_engine(engine):
        check_changes_answer_like_a_fresh_matcher(ops, data)


def check_changes_answer_like_a_fresh_matcher(ops, data):
    event_list = data.draw(st.lists(events_for([p for _, _, p in ops]), min_size=1, max_size=4))
    live = Matcher()
    final: dict[str, dict] = {}
    for op, number, pattern in ops:
        name = f"rule{number}"
        if op == "add" and compiles(pattern):
            live.add(name, pattern)
            final.pop(name, None)  # re-adding replaces, and moves the rule to the end
            final[name] = pattern
        elif op == "remove":
            live.remove(name)
            final.pop(name, None)
        for event in event_list[:1]:
            live.matches(event)  # match between changes, so derived structures get rebuilt
    fresh = Matcher()
    for name, pattern in final.items():
        fresh.add(name, pattern)
    for event in event_list:
        assert sorted(live.matches(event)) == sorted(fresh.matches(event))
        assert sorted(live.matches(event)) == sorted(n for n, p in final.items() if reference_matches(p, event))
