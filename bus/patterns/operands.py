"""Event-pattern operators: parse one match expression (`{"prefix": ...}`, `{"numeric": [...]}`,
`{"anything-but": ...}`, ...) into a Condition, with AWS's error messages."""
from __future__ import annotations

import math
import re
from typing import Any

from bus.patterns.ops import (
    AnythingBut,
    Cidr,
    Condition,
    EqualsIgnoreCase,
    Exact,
    Exists,
    NumericRange,
    Prefix,
    PrefixIgnoreCase,
    Suffix,
    SuffixIgnoreCase,
    Wildcard,
    parse_ip,
)
from bus.patterns.syntax import NUMBER_LIMIT, Where


def parse_expression(expression: dict, where: Where) -> Condition:
    if not expression:
        raise where.fail("Match expression name not found")
    name = next(iter(expression))
    parser = _OPERATORS.get(name)
    if parser is None:
        raise where.fail(f"Unrecognized match type {name}")
    # AWS reads the first operator's operand before noticing a second key, so an operand
    # error wins over the arity error.
    condition = parser(expression[name], where)
    if len(expression) > 1:
        if name in ("numeric", "anything-but"):
            raise where.fail("Too many elements in numeric expression")
        raise where.fail("Only one key allowed in match expression")
    return condition


def _require_string(operand: Any, where: Where, message: str) -> str:
    if not isinstance(operand, str):
        raise where.fail(message)
    return operand


def _parse_exactly(operand: Any, where: Where) -> Condition:
    # event-ruler's explicit spelling of a literal string match.
    return Exact(_require_string(operand, where, "exact match pattern must be a string"))


def _parse_affix(name: str, operand: Any, where: Where) -> Condition:
    """`prefix` / `suffix`: a string, or `{"equals-ignore-case": string}`."""
    if isinstance(operand, dict):
        if not operand:
            raise where.fail(f"{name.capitalize()} expression name not found")
        inner = next(iter(operand))
        if inner != "equals-ignore-case":
            raise where.fail(f"Unsupported {name} pattern: {inner}")
        text = _require_string(operand[inner], where, "equals-ignore-case match pattern must be a string")
        if len(operand) > 1:
            raise where.fail("Only one key allowed in match expression")
        return PrefixIgnoreCase(text) if name == "prefix" else SuffixIgnoreCase(text)
    text = _require_string(operand, where, f"{name} match pattern must be a string")
    return Prefix(text) if name == "prefix" else Suffix(text)


def _parse_equals_ignore_case(operand: Any, where: Where) -> Condition:
    return EqualsIgnoreCase(_require_string(operand, where, "equals-ignore-case match pattern must be a string"))


def _utf8_position(text: str, index: int) -> int:
    # AWS reports wildcard faults as byte offsets into the quoted operand.
    return len(text[:index].encode("utf-8", errors="replace")) + 1


def _check_wildcard_syntax(operand: str, where: Where) -> None:
    i = 0
    while i < len(operand):
        char = operand[i]
        if char == "\\":
            # A trailing backslash would escape the closing quote AWS adds: invalid too.
            if i + 1 >= len(operand) or operand[i + 1] not in "*\\":
                raise where.fail(f"Invalid escape character at pos {_utf8_position(operand, i)}")
            i += 2
            continue
        if char == "*" and i + 1 < len(operand) and operand[i + 1] == "*":
            raise where.fail(f"Consecutive wildcard characters at pos {_utf8_position(operand, i)}")
        i += 1


def _parse_wildcard(operand: Any, where: Where) -> Condition:
    text = _require_string(operand, where, "wildcard match pattern must be a string")
    _check_wildcard_syntax(text, where)
    return Wildcard(text)


def _parse_cidr(operand: Any, where: Where) -> Condition:
    # "prefix" in this message is AWS's own wording for a non-string cidr.
    text = _require_string(operand, where, "prefix match pattern must be a string")
    address, slash, mask = text.partition("/")
    if not slash or not mask or "/" in mask:
        raise where.fail("Malformed CIDR, one '/' required")
    bits = int(mask) if _CIDR_MASK.match(mask) else None
    if bits is None or not -2**31 <= bits < 2**31:  # what a Java int parse accepts
        raise where.fail("Malformed CIDR, mask bits must be an integer")
    if bits < 0:
        raise where.fail("Malformed CIDR, mask bits must not be negative")
    parsed = parse_ip(address)
    if parsed is None:
        raise where.fail(f"Nonstandard IP address: {address}")
    version, number = parsed
    if version == 4 and bits > 31:
        raise where.fail("IPv4 mask bits must be < 32")
    if version == 6 and bits > 127:
        raise where.fail("IPv6 mask bits must be < 128")
    return Cidr(version, number, bits)


_CIDR_MASK = re.compile(r"[+-]?[0-9]+\Z")


def _parse_exists(operand: Any, where: Where) -> Condition:
    if not isinstance(operand, bool):
        raise where.fail("exists match pattern must be either true or false.")
    return Exists(operand)


# --- numeric -------------------------------------------------------------------------------

_OP_NAMES = {"=": "equals", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


def _token(value: Any) -> str:
    """How AWS's streaming parser names an unexpected token."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "["
    if isinstance(value, dict):
        return "{"
    return str(value)


def _comparable(value: Any, where: Where, operand_name: str) -> float:
    """A numeric operand: a JSON number within AWS's comparable range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.fail(f"Value of {operand_name} must be numeric")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not -NUMBER_LIMIT <= number <= NUMBER_LIMIT:
        raise where.fail("Value must be between -5.0E9 and 5.0E9, inclusive")
    return number


def _parse_numeric(operand: Any, where: Where) -> Condition:
    """One comparison, or a lower bound (`>`/`>=`) followed by an upper bound (`<`/`<=`)."""
    if not isinstance(operand, list):
        raise where.fail("Value of numeric must be an array.")
    if not operand:
        raise where.fail("Invalid member in numeric match: ]")
    first = operand[0]
    if not isinstance(first, str):
        raise where.fail(f"Invalid member in numeric match: {_token(first)}")
    if first not in _OP_NAMES:
        raise where.fail(f"Unrecognized numeric range operator: {first}")
    if len(operand) < 2 or isinstance(operand[1], bool) or not isinstance(operand[1], (int, float)):
        raise where.fail(f"Value of {_OP_NAMES[first]} must be numeric")
    if len(operand) == 2:
        bound = _comparable(operand[1], where, _OP_NAMES[first])
        if first == "=":
            return Exact(operand[1])
        if first in (">", ">="):
            return NumericRange(bound, first == ">", None, False)
        return NumericRange(None, False, bound, first == "<")
    if first not in (">", ">="):
        raise where.fail("Too many elements in numeric expression")
    second = operand[2]
    if not isinstance(second, str):
        raise where.fail(f"Bad value in numeric range: {_token(second)}")
    if second not in ("<", "<="):
        raise where.fail(f"Bad numeric range operator: {second}")
    if len(operand) < 4 or isinstance(operand[3], bool) or not isinstance(operand[3], (int, float)):
        raise where.fail(f"Value of {second} must be numeric")
    if len(operand) > 4:
        raise where.fail("Too many terms in numeric range expression")
    low = _comparable(operand[1], where, _OP_NAMES[first])
    high = _comparable(operand[3], where, second)
    if not low < high:
        raise where.fail("Bottom must be less than top")
    return NumericRange(low, first == ">", high, second == "<")


# --- anything-but --------------------------------------------------------------------------

_ANYTHING_BUT_SCALAR = "Value of anything-but must be an array or single string/number value."


def _parse_anything_but(operand: Any, where: Where) -> Condition:
    if isinstance(operand, dict):
        return _parse_anything_but_nested(operand, where)
    if isinstance(operand, list):
        for value in operand:
            if isinstance(value, (bool, list, dict)) or value is None:
                raise where.fail("Inside anything but list, start|null|boolean is not supported.")
        has_number = any(isinstance(v, (int, float)) for v in operand)
        has_string = any(isinstance(v, str) for v in operand)
        if has_number == has_string:  # mixed, or empty
            raise where.fail("Inside anything but list, either all values are number or string, "
                             "mixed type is not supported")
        values = operand
    elif isinstance(operand, bool) or operand is None or not isinstance(operand, (str, int, float)):
        raise where.fail(_ANYTHING_BUT_SCALAR)
    else:
        values = [operand]
    for value in values:
        if isinstance(value, (int, float)):
            _comparable(value, where, "anything-but")
    return AnythingBut(tuple(dict.fromkeys(Exact(v) for v in values)))


_NESTED_ANYTHING_BUT = {
    "prefix": Prefix,
    "suffix": Suffix,
    "equals-ignore-case": EqualsIgnoreCase,
    "wildcard": Wildcard,
}


def _parse_anything_but_nested(operand: dict, where: Where) -> Condition:
    """`anything-but` of a `prefix`, `suffix`, `equals-ignore-case` or `wildcard`, each with
    one string or a list of strings."""
    if not operand:
        raise where.fail("Anything-But expression name not found")
    inner = next(iter(operand))
    if inner not in _NESTED_ANYTHING_BUT:
        raise where.fail(f"Unsupported anything-but pattern: {inner}")
    value = operand[inner]
    candidates = value if isinstance(value, list) else [value]
    if not isinstance(value, (list, str, int, float)) or isinstance(value, bool):
        raise where.fail(_ANYTHING_BUT_SCALAR)
    if not candidates:
        # AWS accepts this and then fails to evaluate it; refusing is the safe reading.
        raise where.fail("Empty arrays are not allowed")
    for candidate in candidates:
        if inner in ("prefix", "suffix"):
            _require_string(candidate, where, "prefix/suffix match pattern must be a string")
            if not candidate:
                raise where.fail("Null prefix/suffix not allowed")
        elif inner == "equals-ignore-case":
            _require_string(candidate, where, "Inside anything-but/equals-ignore-case list, "
                                              "number|start|null|boolean is not supported.")
        else:
            _require_string(candidate, where, "wildcard match pattern must be a string")
            _check_wildcard_syntax(candidate, where)
    if len(operand) > 1:
        raise where.fail("Too many elements in numeric expression")
    build = _NESTED_ANYTHING_BUT[inner]
    return AnythingBut(tuple(dict.fromkeys(build(c) for c in candidates)))


_OPERATORS = {
    "exactly": _parse_exactly,
    "prefix": lambda operand, where: _parse_affix("prefix", operand, where),
    "suffix": lambda operand, where: _parse_affix("suffix", operand, where),
    "equals-ignore-case": _parse_equals_ignore_case,
    "wildcard": _parse_wildcard,
    "cidr": _parse_cidr,
    "numeric": _parse_numeric,
    "exists": _parse_exists,
    "anything-but": _parse_anything_but,
}
