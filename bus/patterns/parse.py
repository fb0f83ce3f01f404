"""Event-pattern parsing: validate a pattern with AWS's error messages and expand it into flat alternatives."""
# A pattern compiles to a list of *alternatives* (one per combination of `$or` branches);
# each alternative maps a field path (tuple of keys) to its conditions. The rule matches an
# event when any alternative does. Expanding `$or` this way is what AWS does, and it is
# observable: a leaf written both outside and inside a `$or` branch keeps the last write in
# document order, exactly like a repeated key.
#
# Error wording follows EventBridge (whose messages are event-ruler's), prefixed with
# "Event pattern is not valid. Reason: " and followed by where in the pattern it happened.

from __future__ import annotations

from typing import Any

import msgspec

from bus.patterns.ops import Condition, Exact
from bus.patterns.operands import parse_expression
from bus.patterns.syntax import (  # noqa: F401 - PatternError, Path and Alternative are this module's API too
    MAX_DEPTH, MAX_OR_COMBINATIONS, OR_RESERVED_KEYS, Alternative, Path, PatternError, Where,
)
from bus.patterns.wildcard import check_wildcard_complexity

MAX_PATH = MAX_DEPTH + 1  # segments of a field's path: a leaf under MAX_DEPTH nested objects


def load_pattern(pattern: Any) -> dict:
    """Accept a dict or JSON text; return the pattern object."""
    if isinstance(pattern, (bytes, bytearray, memoryview, str)):
        try:
            pattern = msgspec.json.decode(pattern)
        except msgspec.DecodeError as exc:
            raise PatternError(f"Filter is not valid JSON: {exc}") from None
    if not isinstance(pattern, dict):
        raise PatternError("Filter is not an object")
    return pattern


def parse_pattern(pattern: Any) -> list[Alternative]:
    """Validate `pattern` (dict or JSON text) and expand it into alternatives."""
    pattern = load_pattern(pattern)
    if _or_product(pattern, 0) > MAX_OR_COMBINATIONS:
        raise PatternError(f"Event pattern contains more than {MAX_OR_COMBINATIONS} rule combinations")
    alternatives = _parse_object([{}], (), pattern, Where(), inside_or=False, depth=0)
    check_wildcard_complexity(alternatives)
    return alternatives


def _or_product(node: Any, depth: int) -> int:
    """The product of the lengths of every `$or` array: the combination count AWS limits."""
    if not isinstance(node, dict) or depth > MAX_DEPTH:
        return 1
    product = 1
    for key, value in node.items():
        if key == "$or" and isinstance(value, list):
            product *= max(len(value), 1)
            for member in value:
                product *= _or_product(member, depth + 1)
        elif isinstance(value, dict):
            product *= _or_product(value, depth + 1)
        if product > MAX_OR_COMBINATIONS:
            break
    return product


def _parse_object(alternatives: list[Alternative], path: Path, obj: dict, where: Where,
                  inside_or: bool, depth: int) -> list[Alternative]:
    if depth > MAX_DEPTH:
        raise where.fail("Event pattern is nested too deeply")
    if not obj:
        raise where.fail("Empty objects are not allowed")
    for key, value in obj.items():
        if key == "$or" and isinstance(value, list):
            alternatives = _parse_or_key(alternatives, path, value, where, inside_or, depth)
            continue
        if inside_or and key in OR_RESERVED_KEYS:
            raise where.child(key).fail(
                f"{key} is Ruler reserved fieldName which cannot be used inside $or.")
        alternatives = _parse_member(alternatives, path + field_path(key), value, where.child(key),
                                     inside_or, depth)
    return alternatives


def field_path(key: str) -> Path:
    """A field name's path segments. AWS joins nested names with dots when it compiles a
    pattern ("Considerations when creating event patterns"), so `"a.b"` and `a: {b: ...}`
    name the same field; splitting here makes them the same path."""
    return tuple(key.split(".")) if "." in key else (key,)


def _parse_member(alternatives: list[Alternative], path: Path, value: Any, where: Where,
                  inside_or: bool, depth: int) -> list[Alternative]:
    if len(path) > MAX_PATH:  # dotted names deepen a path without nesting objects
        raise where.fail("Event pattern is nested too deeply")
    if isinstance(value, dict):
        return _parse_object(alternatives, path, value, where, inside_or, depth + 1)
    if isinstance(value, list):
        conditions = parse_values(value, where)
        for alternative in alternatives:
            alternative[path] = conditions  # a later write to the same path wins, as on AWS
        return alternatives
    raise where.fail(f'"{where.segments[-1]}" must be an object or an array')


def _parse_or_key(alternatives: list[Alternative], path: Path, members: list, where: Where,
                  inside_or: bool, depth: int) -> list[Alternative]:
    """`"$or": [...]` is the OR operator when it parses as one; otherwise AWS falls back to
    reading `$or` as an ordinary field name (its pre-`$or` compiler). If neither reading
    works, the `$or` error is the useful one to report."""
    snapshot = [dict(a) for a in alternatives]
    try:
        return _parse_or(alternatives, path, members, where.child("$or"), depth)
    except PatternError as or_error:
        try:
            return _parse_member(snapshot, path + ("$or",), members, where.child("$or"),
                                 inside_or, depth)
        except PatternError:
            raise or_error from None


def _parse_or(alternatives: list[Alternative], path: Path, members: list, where: Where,
              depth: int) -> list[Alternative]:
    expanded: list[Alternative] = []
    for index, member in enumerate(members):
        branch_where = Where(where.segments[:-1] + (f"$or[{index}]",))
        if not isinstance(member, dict):
            raise branch_where.fail("Only JSON object is allowed in array of $or relationship.")
        branch = [dict(a) for a in alternatives]
        expanded.extend(_parse_object(branch, path, member, branch_where, True, depth + 1))
        if len(expanded) > MAX_OR_COMBINATIONS:
            raise where.fail(f"Event pattern contains more than {MAX_OR_COMBINATIONS} rule combinations")
    if len(members) < 2:
        raise where.fail("There must have at least 2 Objects in $or relationship.")
    return expanded


# --- a field's list of values --------------------------------------------------------------


def parse_values(values: list, where: Where) -> tuple[Condition, ...]:
    if not values:
        raise where.fail("Empty arrays are not allowed")
    conditions: list[Condition] = []
    for value in values:
        if isinstance(value, dict):
            conditions.append(parse_expression(value, where))
        elif isinstance(value, list):
            raise where.fail("Match value must be String, number, true, false, or null")
        else:
            conditions.append(Exact(value))
    # Duplicates add nothing; dropping them keeps condition keys canonical.
    return tuple(dict.fromkeys(conditions))
