"""The slow, obviously correct evaluator: the yardstick the fast matcher is tested and benchmarked against."""
# It walks the raw (already validated) pattern and the event together, recursively, with no
# compilation, no index and no sharing of code with the matcher's operators. It reads `$or`
# directly as "any branch", so it agrees with AWS's `$or` expansion for every pattern whose
# `$or` branches do not also constrain a leaf written outside the branch (AWS then keeps only
# the last write; the property tests generate no such patterns).
#
# Semantics, per the EventBridge user guide and event-ruler:
# - every field of an object pattern must match (AND); values in a field's list are OR;
# - an event array offers each of its elements: a leaf matches if any scalar does, and a
#   nested pattern must be matched by one element object as a whole (two fields of the same
#   nested pattern may not come from different array elements);
# - `exists` asks whether the path holds a scalar (null counts, an object does not);
# - operators other than `exists` never match a missing field.

from __future__ import annotations

import ipaddress
import operator
import re
from typing import Any

from bus.patterns.dotted import expand_event, expand_pattern, has_dot


def reference_matches(pattern: dict, event: Any) -> bool:
    # Dotted names are joined nested names on both sides (AWS's "Considerations when creating
    # event patterns"): nest them first, then compare structures.
    return isinstance(event, dict) and _match_object(pattern, event)


def _match_object(pattern: dict, obj: dict) -> bool:
    if has_dot(pattern):
        pattern = expand_pattern(pattern)
    if has_dot(obj) and any(isinstance(w, dict) for w in pattern.values()):
        obj = expand_event(obj)  # a dotted name nests: it matters to nested patterns only
    for key, wanted in pattern.items():
        if key == "$or" and isinstance(wanted, list):
            if not any(_match_object(branch, obj) for branch in wanted):
                return False
        elif isinstance(wanted, dict):
            candidates = _elements(obj[key], dict) if key in obj else []
            if not any(_match_object(wanted, candidate) for candidate in candidates or [{}]):
                return False
        else:
            scalars = _elements(obj[key], _Scalar) if key in obj else []
            if not _match_field(wanted, scalars):
                return False
    return True


class _Scalar:
    """Marker for 'not an object and not an array'."""


def _elements(value: Any, kind: type) -> list:
    """The objects (kind=dict) or scalars (kind=_Scalar) a value offers, arrays flattened."""
    if isinstance(value, list):
        return [item for element in value for item in _elements(element, kind)]
    if kind is dict:
        return [value] if isinstance(value, dict) else []
    return [] if isinstance(value, dict) else [value]


def _match_field(wanted: list, scalars: list) -> bool:
    for item in wanted:
        if isinstance(item, dict) and "exists" in item:
            if item["exists"] == bool(scalars):
                return True
        elif any(_match_value(item, value) for value in scalars):
            return True
    return False


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _match_value(item: Any, value: Any) -> bool:
    if not isinstance(item, dict):
        return _json_equal(item, value)
    (name, operand), = item.items()
    if name == "anything-but":
        if isinstance(operand, dict):
            (inner, inner_operand), = operand.items()
            options = inner_operand if isinstance(inner_operand, list) else [inner_operand]
            return not any(_match_value({inner: option}, value) for option in options)
        options = operand if isinstance(operand, list) else [operand]
        return not any(_json_equal(option, value) for option in options)
    if name == "numeric":
        return _numeric(operand, value)
    if not isinstance(value, str):
        return False  # every remaining operator matches strings only
    if name == "exactly":
        return value == operand
    if name == "prefix":
        if isinstance(operand, dict):
            return _ignore_case_regex(operand["equals-ignore-case"]).match(value) is not None
        return value.startswith(operand)
    if name == "suffix":
        if isinstance(operand, dict):
            reversed_value = value[::-1]
            pattern = _ignore_case_regex(operand["equals-ignore-case"][::-1], reverse_forms=True)
            return pattern.match(reversed_value) is not None
        return value.endswith(operand)
    if name == "equals-ignore-case":
        return _ignore_case_regex(operand).fullmatch(value) is not None
    if name == "wildcard":
        return _wildcard_regex(operand).fullmatch(value) is not None
    if name == "cidr":
        return _in_cidr(value, operand)
    raise AssertionError(f"unvalidated operator {name}")


def _numeric(operand: list, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    checks = {"=": operator.eq, ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
    return all(checks[operand[i]](value, operand[i + 1]) for i in range(0, len(operand), 2))


def _ignore_case_regex(operand: str, reverse_forms: bool = False) -> re.Pattern:
    """Each operand character may appear as its lower- or upper-case form (AWS's rule)."""
    parts = []
    for char in operand:
        forms = {char.lower(), char.upper()}
        if reverse_forms:
            forms = {form[::-1] for form in forms}
        parts.append("(?:" + "|".join(re.escape(f) for f in sorted(forms)) + ")")
    return re.compile("".join(parts), re.DOTALL)


def _wildcard_regex(operand: str) -> re.Pattern:
    out, i = [], 0
    while i < len(operand):
        if operand[i] == "\\":
            out.append(re.escape(operand[i + 1]))
            i += 2
        else:
            out.append(".*" if operand[i] == "*" else re.escape(operand[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


_V4 = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+\Z")
_V6 = re.compile(r"[0-9a-fA-F:]+\Z")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if _V4.match(text):
        octets = [int(o) for o in text.split(".")]
        if max(octets) > 255:
            return None
        return ipaddress.IPv4Address(".".join(map(str, octets)))
    if ":" in text and _V6.match(text):
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return None


def _in_cidr(value: str, operand: str) -> bool:
    base, _, bits = operand.partition("/")
    network_address = _address(base)
    address = _address(value)
    if network_address is None or address is None or address.version != network_address.version:
        return False
    network = ipaddress.ip_network(f"{network_address}/{int(bits)}", strict=False)
    return address in network
