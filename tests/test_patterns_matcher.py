"""The Matcher: the rules of one bus, added and removed at run time, matched in one pass."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from bus.patterns import Matcher, PatternError, compile_pattern
from bus.patterns import engine as patterns_engine
from bus.patterns.engine import ENGINES, using_engine
from bus.patterns.reference import reference_matches


@pytest.fixture(autouse=True, params=ENGINES)
def engine(request):
    """Every test here runs on each matching engine: compiled (when built) and pure Python."""
    with using_engine(request.param):
        yield request.param

ORDER_PLACED = {"source": "shop", "detail-type": "Order Placed",
                "detail": {"amount": 120, "customer": {"tier": "gold"}, "items": [{"sku": "a"}, {"sku": "b"}]}}


def test_matches_returns_the_names_of_matching_rules_in_the_order_added():
    matcher = Matcher()
    matcher.add("big", {"detail": {"amount": [{"numeric": [">", 100]}]}})
    matcher.add("other-source", {"source": ["elsewhere"]})
    matcher.add("gold", {"detail": {"customer": {"tier": ["gold"]}}})
    assert matcher.matches(ORDER_PLACED) == ["big", "gold"]


def test_an_empty_matcher_matches_nothing():
    assert Matcher().matches(ORDER_PLACED) == []


def test_removed_rules_no_longer_match():
    matcher = Matcher()
    matcher.add("shop", {"source": ["shop"]})
    matcher.remove("shop")
    assert matcher.matches(ORDER_PLACED) == []
    assert "shop" not in matcher


def test_removing_an_unknown_rule_is_ignored():
    matcher = Matcher()
    matcher.remove("never-added")
    assert len(matcher) == 0


def test_adding_under_an_existing_name_replaces_the_rule():
    matcher = Matcher()
    matcher.add("rule", {"source": ["elsewhere"]})
    matcher.add("rule", {"source": ["shop"]})
    assert matcher.matches(ORDER_PLACED) == ["rule"]
    assert len(matcher) == 1


def test_rules_sharing_conditions_each_match():
    matcher = Matcher()
    matcher.add("a", {"source": ["shop"], "detail-type": ["Order Placed"]})
    matcher.add("b", {"source": ["shop"], "detail-type": ["Order Placed"]})
    matcher.add("c", {"source": ["shop"], "detail-type": ["Order Placed"], "detail": {"amount": [1]}})
    assert matcher.matches(ORDER_PLACED) == ["a", "b"]


def test_removing_one_of_two_identical_rules_keeps_the_other():
    matcher = Matcher()
    matcher.add("a", {"source": ["shop"]})
    matcher.add("b", {"source": ["shop"]})
    matcher.matches(ORDER_PLACED)
    matcher.remove("a")
    assert matcher.matches(ORDER_PLACED) == ["b"]


def test_a_rule_matching_through_several_or_branches_is_reported_once():
    matcher = Matcher()
    matcher.add("either", {"$or": [{"source": ["shop"]}, {"detail-type": ["Order Placed"]}]})
    assert matcher.matches(ORDER_PLACED) == ["either"]


def test_array_of_objects_rules_are_confirmed_per_element():
    matcher = Matcher()
    matcher.add("same-item", {"detail": {"items": {"sku": ["a"], "qty": [2]}}})
    event = {"detail": {"items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]}}
    assert matcher.matches(event) == []
    event["detail"]["items"][0]["qty"] = 2
    assert matcher.matches(event) == ["same-item"]


def test_matches_json_parses_bytes():
    matcher = Matcher()
    matcher.add("shop", {"source": ["shop"]})
    assert matcher.matches_json(b'{"source": "shop"}') == ["shop"]


def test_matches_json_parses_text():
    matcher = Matcher()
    matcher.add("shop", {"source": ["shop"]})
    assert matcher.matches_json('{"source": "shop"}') == ["shop"]


def test_matches_json_reads_numbers_beyond_a_double():
    matcher = Matcher()
    matcher.add("positive", {"n": [{"numeric": [">", 0]}]})
    assert matcher.matches_json('{"n": 1e400}') == ["positive"]


def test_matches_json_rejects_malformed_json():
    with pytest.raises(ValueError):
        Matcher().matches_json(b'{"source": ')


def test_a_non_object_event_matches_nothing():
    matcher = Matcher()
    matcher.add("absent", {"a": [{"exists": False}]})
    assert matcher.matches_json(b"[1, 2]") == []


def test_rules_may_be_given_as_json_text_or_compiled():
    matcher = Matcher()
    matcher.add("text", '{"source": ["shop"]}')
    matcher.add("compiled", compile_pattern({"source": ["shop"]}))
    assert matcher.matches(ORDER_PLACED) == ["text", "compiled"]


def test_thousands_of_rules_answer_like_the_reference():
    rng = random.Random(7)
    sources = [f"s{i}" for i in range(20)]

    def pattern() -> dict:
        detail = rng.choice([
            {"n": [{"numeric": [">", rng.randrange(100)]}]},
            {"id": [f"id{rng.randrange(50)}"]},
            {"name": [{"prefix": f"n{rng.randrange(10)}"}]},
            {"name": [{"anything-but": {"suffix": str(rng.randrange(10))}}]},
            {"tags": [{"wildcard": f"t{rng.randrange(5)}*"}], "n": [{"exists": rng.random() < 0.5}]},
            {"ip": [{"cidr": f"10.{rng.randrange(4)}.0.0/16"}]},
        ])
        return {"source": rng.sample(sources, 2), "detail": detail}

    def event() -> dict:
        detail = {"n": rng.randrange(100), "id": f"id{rng.randrange(50)}", "name": f"n{rng.randrange(100)}",
                  "tags": [f"t{rng.randrange(9)}x", "y"], "ip": f"10.{rng.randrange(6)}.1.2"}
        for key in rng.sample(list(detail), 2):
            del detail[key]
        return {"source": rng.choice(sources), "detail": detail}

    patterns = {f"rule{i}": pattern() for i in range(3000)}
    matcher = Matcher()
    for name, p in patterns.items():
        matcher.add(name, p)
    matched = 0
    for _ in range(60):
        e = event()
        expected = [name for name, p in patterns.items() if reference_matches(p, e)]
        assert matcher.matches(e) == expected
        matched += len(expected)
    assert matched > 100  # the comparison is not vacuous


def test_a_rule_added_after_matching_on_a_path_already_in_use_matches():
    # Regression: the state's frozen transitions kept the field's old exact table.
    matcher = Matcher()
    matcher.add("x", {"source": ["x"]})
    assert matcher.matches({"source": "x"}) == ["x"]
    matcher.add("y", {"source": ["y"]})
    assert matcher.matches({"source": "y"}) == ["y"]
    matcher.add("z", {"source": ["z"]})
    matcher.remove("y")
    assert matcher.matches({"source": "y"}) == []
    assert matcher.matches({"source": "z"}) == ["z"]


# Values at the edges of what the compiled engine decides by itself (dotted quads, globs,
# ASCII case folding, numbers at range bounds) and of what it hands back to Python.
TRICKY_VALUES = ["10.0.0.1", "010.0.0.1", "10.0.0.01", "10.0.0.256", "10.0.0", "10.0.0.1.2", "10..0.1",
                 ".10.0.0", "10.0.0.1\x00", "1e1.0.0.1", "::ffff:10.0.0.1", "::1", "fe80::1", "",
                 "uploads/DE/x/f12.png", "uploads/DE/f12.png", "uploads/DE/f12", "uploads/DE/*/f1*.png",
                 "ABC", "abc", "aBc", "straße", "STRASSE", "Ǆx", "ǆX", "x*y", "xay", "xy",
                 0, 1, 1.0, -1, 5, 5.0, 10, 10.5, 2 ** 53 + 1, 10 ** 30, 1e300, float("inf"), True, False, None]
TRICKY_PATTERNS = [
    {"v": [{"cidr": "10.0.0.0/24"}]}, {"v": [{"cidr": "10.0.0.0/8"}, {"cidr": "0.0.0.0/0"}]},
    {"v": [{"cidr": "::ffff:a00:0/120"}]}, {"v": [{"cidr": "fe80::/10"}]},
    {"v": [{"wildcard": "uploads/DE/*/f1*.png"}]}, {"v": [{"wildcard": "uploads/*"}]},
    {"v": [{"wildcard": "x*y"}]}, {"v": [{"wildcard": "*"}]}, {"v": [{"wildcard": "x\\*y"}]},
    {"v": [{"wildcard": "uploads/DE/*f12*"}]}, {"v": [{"wildcard": "*.png"}]},
    {"v": [{"equals-ignore-case": "abc"}]}, {"v": [{"equals-ignore-case": "STRASSE"}]},
    {"v": [{"prefix": {"equals-ignore-case": "ab"}}]}, {"v": [{"suffix": {"equals-ignore-case": "BC"}}]},
    {"v": [{"prefix": {"equals-ignore-case": "stra"}}]}, {"v": [{"equals-ignore-case": "ǆx"}]},
    {"v": [{"prefix": "10.0"}]}, {"v": [{"suffix": ".1"}]}, {"v": ["abc", 1, True, None]},
    {"v": [{"numeric": [">", 1, "<=", 10]}]}, {"v": [{"numeric": [">=", 5]}]}, {"v": [{"numeric": ["<", 0]}]},
    {"v": [{"numeric": ["=", 10]}]}, {"v": [{"anything-but": ["abc", "x*y"]}]}, {"v": [{"anything-but": [1, 10]}]},
    {"v": [{"anything-but": {"wildcard": "x*"}}]}, {"v": [{"exists": True}]}, {"v": [{"exists": False}]},
]


def test_edge_values_match_like_the_reference():
    matcher = Matcher()
    for i, pattern in enumerate(TRICKY_PATTERNS):
        matcher.add(f"p{i}", pattern)
    for value in TRICKY_VALUES:
        for event in ({"v": value}, {"v": [value, "zzz"]}, {"v": [{"w": 1}, value]}):
            expected = [f"p{i}" for i, p in enumerate(TRICKY_PATTERNS) if reference_matches(p, event)]
            assert matcher.matches(event) == expected, event


def test_many_rules_on_one_field_match_like_the_reference():
    # Enough conditions on one path that the compiled engine deduplicates with a set.
    matcher = Matcher()
    patterns = {f"r{i}": {"v": [{"numeric": [">", i % 7]}, {"prefix": str(i % 5)}, i % 11]} for i in range(120)}
    for name, pattern in patterns.items():
        matcher.add(name, pattern)
    for value in (0, 3, 6.5, 10, "3x", [1, 4, "2", "0"], [], [[5]], {"x": 1}):
        event = {"v": value}
        assert matcher.matches(event) == [n for n, p in patterns.items() if reference_matches(p, event)]


def test_the_engine_in_use_can_be_chosen(engine, monkeypatch):
    # The chosen engine is the one that runs: the pure-Python run only when "python" is chosen.
    from bus.patterns import index
    runs = []
    python_run = index.match_python
    monkeypatch.setattr(index, "match_python", lambda *args: runs.append(1) or python_run(*args))
    matcher = Matcher()
    matcher.add("r", {"source": ["shop"]})
    assert matcher.matches({"source": "shop"}) == ["r"]
    assert patterns_engine.engine() == engine
    assert len(runs) == (1 if engine == "python" else 0)


def test_without_the_compiled_engine_matching_falls_back_to_python(engine):
    # As on a machine where bus/patterns/_cengine.c could not be built.
    code = ("import sys; sys.modules['bus.patterns._cengine'] = None\n"
            "from bus.patterns import engine as patterns_engine\n"
            "from bus.patterns import Matcher\n"
            "m = Matcher(); m.add('r', {'source': [{'prefix': 'sh'}]})\n"
            "print(patterns_engine.engine(), patterns_engine.ENGINES, m.matches_json(b'{\"source\": \"shop\"}'))\n")
    assert _in_fresh_python(code).split() == ["python", "('python',)", "['r']"]


def test_busway_patterns_engine_python_forces_the_pure_python_engine(engine):
    code = "from bus.patterns import engine as patterns_engine; print(patterns_engine.engine())"
    env = dict(os.environ, BUSWAY_PATTERNS_ENGINE="python")
    assert _in_fresh_python(code, env).strip() == "python"


# The compiled engine probes each field through a packed copy of its tables (one hash table
# for exact values, affixes, case-insensitive forms, IPv4 blocks and wildcard heads and
# tails); these exercise it with many keys and lengths on one field, and with the packs
# rebuilt by changes after matching.

def _many_condition_patterns(rng: random.Random, count: int) -> dict[str, dict]:
    def word() -> str:
        return "".join(rng.choice("abAB0/.") for _ in range(rng.randint(0, 6)))

    def condition():
        return rng.choice([
            lambda: word(),
            lambda: rng.randrange(20),
            lambda: rng.choice([True, False, None]),
            lambda: {"prefix": word()},
            lambda: {"suffix": word()},
            lambda: {"equals-ignore-case": word()},
            lambda: {"prefix": {"equals-ignore-case": word()}},
            lambda: {"suffix": {"equals-ignore-case": word()}},
            lambda: {"wildcard": f"{word()}*{word()}"},
            lambda: {"wildcard": f"{word()}*{word()}*{word()}"},
            lambda: {"cidr": f"10.{rng.randrange(4)}.{rng.randrange(4)}.0/{rng.choice([8, 16, 24, 30])}"},
            lambda: {"numeric": [">", rng.randrange(20), "<=", rng.randrange(20, 40)]},
            lambda: {"numeric": ["<", rng.randrange(40)]},
            lambda: {"anything-but": {"prefix": word() or "x"}},
            lambda: {"exists": rng.random() < 0.5},
        ])()

    patterns: dict[str, dict] = {}
    while len(patterns) < count:
        pattern = {"v": [condition() for _ in range(rng.randint(1, 3))]}
        try:
            compile_pattern(pattern)
        except PatternError:  # e.g. `**` in a wildcard
            continue
        patterns[f"r{len(patterns)}"] = pattern
    return patterns


def _many_condition_events(rng: random.Random, count: int) -> list[dict]:
    def value():
        return rng.choice([
            lambda: "".join(rng.choice("abAB0/.") for _ in range(rng.randint(0, 9))),
            lambda: f"10.{rng.randrange(4)}.{rng.randrange(4)}.{rng.randrange(8)}",
            lambda: rng.randrange(40) + rng.choice([0, 0.5]),
            lambda: rng.choice([True, False, None]),
        ])()

    events = []
    for _ in range(count):
        shape = rng.random()
        v = [value(), value()] if shape < 0.3 else [{"w": 1}, value()] if shape < 0.4 else value()
        events.append({"v": v} if shape < 0.95 else {})
    return events


def test_many_conditions_of_every_kind_on_one_field_match_like_the_reference():
    rng = random.Random(11)
    patterns = _many_condition_patterns(rng, 1500)
    matcher = Matcher()
    for name, pattern in patterns.items():
        matcher.add(name, pattern)
    matched = 0
    for event in _many_condition_events(rng, 150):
        expected = [n for n, p in patterns.items() if reference_matches(p, event)]
        assert matcher.matches(event) == expected, event
        matched += len(expected)
    assert matched > 1000


def test_changes_after_matching_answer_like_a_fresh_matcher():
    # Small changes rebuild only the field indexes (and their packed tables) they touch.
    rng = random.Random(5)
    pool = _many_condition_patterns(rng, 900)
    names = list(pool)
    live, current = Matcher(), {}
    for name in names[:600]:
        live.add(name, pool[name])
        current[name] = pool[name]
    events = _many_condition_events(rng, 40)
    for event in events[:5]:
        live.matches(event)  # builds the automaton
    for round_ in range(6):
        for name in rng.sample(sorted(current), 15):
            live.remove(name)
            del current[name]
        for name in rng.sample(names, 15):
            replacement = pool[rng.choice(names)]  # re-adding a name replaces its rule
            live.add(name, replacement)
            current[name] = replacement
        fresh = Matcher()
        for name, pattern in current.items():
            fresh.add(name, pattern)
        for event in events:
            got = live.matches(event)
            assert sorted(got) == sorted(fresh.matches(event)), (round_, event)
            assert sorted(got) == sorted(n for n, p in current.items() if reference_matches(p, event))


def test_a_compiled_engine_of_another_layout_is_ignored(engine):
    # A stale build (bus/patterns/_cengine.c changed, the extension not rebuilt) must not be
    # misread: bus.patterns.engine warns and matches in pure Python.
    code = ("import sys, types, warnings\n"
            "stale = types.ModuleType('bus.patterns._cengine'); stale.LAYOUT = -1\n"
            "sys.modules['bus.patterns._cengine'] = stale\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    from bus.patterns import engine as patterns_engine\n"
            "from bus.patterns import Matcher\n"
            "m = Matcher(); m.add('r', {'source': [{'prefix': 'sh'}]})\n"
            "print(patterns_engine.engine(), any('stale build' in str(w.message) for w in caught),"
            " m.matches_json(b'{\"source\": \"shop\"}'))\n")
    assert _in_fresh_python(code).split() == ["python", "True", "['r']"]


@pytest.mark.skipif("c" not in ENGINES, reason="the compiled engine is not built here")
def test_pack_refuses_what_is_not_a_field_spec(engine):
    from bus.patterns import _cengine as _patterns_c
    for bad in ((), None, (1,) * 3, tuple(range(40))):
        with pytest.raises(TypeError):
            _patterns_c.pack(bad)


def test_an_open_ended_range_is_not_taken_for_the_rarest_field(engine):
    # `>= 5` with 5 the highest bound on its path used to be estimated at 0.001 (no width
    # left inside the bounds' span), so chains led with it and every event probed it.
    matcher = Matcher()
    for k in range(2, 6):
        matcher.add(f"qty{k}", {"source": ["s"], "detail": {"qty": [{"numeric": [">=", k]}]}})
    for i in range(40):
        matcher.add(f"id{i}", {"source": ["s"], "detail": {"id": [f"id{i}"], "qty": [{"numeric": [">=", 5]}]}})
    assert matcher.matches({"source": "s", "detail": {"id": "id3", "qty": 7}}) == ["qty2", "qty3", "qty4", "qty5", "id3"]
    index = matcher._index  # (threaded through the automaton by the first match)
    selectivity = index._selectivity
    open_ended = compile_pattern({"qty": [{"numeric": [">=", 5]}]}).alternatives[0][("qty",)]
    assert selectivity.field(("detail", "qty"), open_ended) >= 1 / 5
    first_after_source = index._rules["id0"].chains[0][1][1]
    assert first_after_source == index._path_ids[("detail", "id")]


def _in_fresh_python(code: str, env: dict | None = None) -> str:
    """Run `code` in a new interpreter at the repository root; its stdout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                          cwd=root).stdout
