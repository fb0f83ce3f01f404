"""Event-pattern operators: one small class per condition, each testing a single JSON scalar."""
# A pattern field is an OR of conditions; a field matches when any condition accepts any of
# the scalar values found at its path (arrays in the event are flattened, so "any element").
# `exists` is the exception: it is about the presence of scalar values, not about one value,
# so it has no `test` and the evaluators handle it themselves.
#
# Every condition has a `key`: hashable, and equal for equal conditions, so that rules
# can share automaton states.

from __future__ import annotations

import re
import socket
from typing import Any

_inet_pton, _AF_INET, _AF_INET6 = socket.inet_pton, socket.AF_INET, socket.AF_INET6
_from_bytes = int.from_bytes


class JsonBool:
    """A JSON boolean as a dictionary key. Python has True == 1 and hash(True) == hash(1),
    but in JSON `true` never equals `1`, so booleans are keyed by these two objects."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "true" if self.value else "false"


TRUE_KEY = JsonBool(True)
FALSE_KEY = JsonBool(False)


def scalar_key(value: Any) -> Any:
    """The dictionary key under which a JSON scalar is compared for equality.

    Strings and null key as themselves; numbers as themselves (so 300 == 300.0, compared
    numerically and exactly); booleans as TRUE_KEY / FALSE_KEY."""
    if value is True:
        return TRUE_KEY
    if value is False:
        return FALSE_KEY
    return value


def is_number(value: Any) -> bool:
    t = type(value)
    return t is int or t is float


class Condition:
    """One alternative of a pattern field. Subclasses set `key` and implement `test`."""

    __slots__ = ("key",)
    key: tuple

    def test(self, value: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self.key[1:]!r}"


class Exact(Condition):
    """A literal string, number, boolean or null; numbers compare numerically."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = scalar_key(value)
        self.key = ("exact", self.value)

    def test(self, value: Any) -> bool:
        return scalar_key(value) == self.value


class Prefix(Condition):
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text
        self.key = ("prefix", text)
        # An empty prefix accepts every string: not selective at all.

    def test(self, value: Any) -> bool:
        return type(value) is str and value.startswith(self.text)


class Suffix(Condition):
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text
        self.key = ("suffix", text)

    def test(self, value: Any) -> bool:
        return type(value) is str and value.endswith(self.text)


# --- case-insensitive comparison -----------------------------------------------------------
#
# AWS (event-ruler) lets each character of the operand match either its lower-case or its
# upper-case form, taken character by character. That is neither `a.lower() == b.lower()`
# nor casefold() once non-ASCII letters are involved (e.g. the operand "ß" also matches "SS"
# because "ß".upper() == "SS"). For ASCII operands and values both readings agree, which is
# the fast path; the general walk keeps every reachable offset because alternatives differ
# in length.


def _case_forms(char: str) -> tuple[str, ...]:
    lower, upper = char.lower(), char.upper()
    return (lower,) if lower == upper else (lower, upper)


def _ci_reach(value: str, operand: str, backwards: bool) -> set[int]:
    """Offsets of `value` reachable by consuming all of `operand` case-insensitively,
    from the start (or, when `backwards`, from the end)."""
    reach = {len(value) if backwards else 0}
    for char in reversed(operand) if backwards else operand:
        moved = set()
        for form in _case_forms(char):
            width = len(form)
            for offset in reach:
                start = offset - width if backwards else offset
                if start >= 0 and value.startswith(form, start):
                    moved.add(start if backwards else offset + width)
        if not moved:
            return moved
        reach = moved
    return reach


def ci_equals(value: str, operand: str) -> bool:
    if value.isascii() and operand.isascii():
        return len(value) == len(operand) and value.lower() == operand.lower()
    return len(value) in _ci_reach(value, operand, backwards=False)


def ci_prefix(value: str, operand: str) -> bool:
    if value.isascii() and operand.isascii():
        return value[: len(operand)].lower() == operand.lower() and len(value) >= len(operand)
    return bool(_ci_reach(value, operand, backwards=False))


def ci_suffix(value: str, operand: str) -> bool:
    if value.isascii() and operand.isascii():
        n = len(operand)
        return len(value) >= n and (n == 0 or value[-n:].lower() == operand.lower())
    return bool(_ci_reach(value, operand, backwards=True))


class EqualsIgnoreCase(Condition):
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text
        self.key = ("equals-ignore-case", text)

    def test(self, value: Any) -> bool:
        return type(value) is str and ci_equals(value, self.text)


class PrefixIgnoreCase(Condition):
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text
        self.key = ("prefix-equals-ignore-case", text)

    def test(self, value: Any) -> bool:
        return type(value) is str and ci_prefix(value, self.text)


class SuffixIgnoreCase(Condition):
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text
        self.key = ("suffix-equals-ignore-case", text)

    def test(self, value: Any) -> bool:
        return type(value) is str and ci_suffix(value, self.text)


# --- wildcard ------------------------------------------------------------------------------


def wildcard_segments(operand: str) -> list[str]:
    """The literal pieces between unescaped `*`s (escapes `\\*` and `\\\\` resolved).
    The operand must already be valid (see patterns_parse)."""
    segments = [""]
    i = 0
    while i < len(operand):
        char = operand[i]
        if char == "\\":
            segments[-1] += operand[i + 1]
            i += 2
            continue
        if char == "*":
            segments.append("")
        else:
            segments[-1] += char
        i += 1
    return segments


def wildcard_match(value: str, segments: list[str]) -> bool:
    """Glob match with `*` as the only metacharacter. Taking each middle segment at its
    leftmost position is optimal for `*`-only globs, so this never backtracks."""
    if len(segments) == 1:
        return value == segments[0]
    head, tail = segments[0], segments[-1]
    if len(value) < len(head) + len(tail) or not value.startswith(head) or not value.endswith(tail):
        return False
    pos, end = len(head), len(value) - len(tail)
    for middle in segments[1:-1]:
        found = value.find(middle, pos, end)
        if found < 0:
            return False
        pos = found + len(middle)
    return True


def wildcard_regex_source(segments: list[str]) -> str:
    """The glob as a regex for re.match: each middle segment is taken at its leftmost
    position inside an atomic group, so matching is linear (no backtracking), which is
    exactly right for `*`-only globs."""
    if len(segments) == 1:
        return re.escape(segments[0]) + r"\Z"
    middle = "".join(f"(?>.*?{re.escape(m)})" for m in segments[1:-1])
    return f"{re.escape(segments[0])}{middle}.*{re.escape(segments[-1])}\\Z"


class Wildcard(Condition):
    __slots__ = ("text", "segments", "regex")

    def __init__(self, text: str) -> None:
        self.text = text
        self.segments = wildcard_segments(text)
        self.regex = re.compile(wildcard_regex_source(self.segments), re.DOTALL)
        self.key = ("wildcard", text)

    def test(self, value: Any) -> bool:
        return type(value) is str and self.regex.match(value) is not None


# --- numbers and addresses -----------------------------------------------------------------


class NumericRange(Condition):
    """`numeric` with bounds; `None` means unbounded. `numeric: ["=", x]` is an Exact."""

    __slots__ = ("low", "low_open", "high", "high_open")

    def __init__(self, low: float | None, low_open: bool, high: float | None, high_open: bool) -> None:
        self.low, self.low_open, self.high, self.high_open = low, low_open, high, high_open
        self.key = ("numeric", low, low_open, high, high_open)

    def test(self, value: Any) -> bool:
        if not is_number(value):
            return False
        low, high = self.low, self.high
        if low is not None and (value <= low if self.low_open else value < low):
            return False
        if high is not None and (value >= high if self.high_open else value > high):
            return False
        return True


# AWS only reads a value as an address when it has one of these shapes; anything else
# (a hostname, a zone id, an integer) is not an address and never matches a `cidr`.
_IPV4_SHAPE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+\Z")
_IPV6_SHAPE = re.compile(r"[0-9a-fA-F:]+\Z")


def parse_ip(text: str) -> tuple[int, int] | None:
    """(version, integer address) for an IPv4/IPv6 literal, else None. IPv4 octets are
    decimal even with leading zeros, as AWS reads them."""
    try:
        return 4, _from_bytes(_inet_pton(_AF_INET, text), "big")  # fast path: canonical dotted quad
    except (OSError, ValueError):  # ValueError: an embedded NUL character
        pass
    if _IPV4_SHAPE.match(text):  # leading zeros, which inet_pton refuses
        value = 0
        for octet in text.split("."):
            number = int(octet)
            if number > 255:
                return None
            value = value << 8 | number
        return 4, value
    if ":" in text and _IPV6_SHAPE.match(text):
        try:
            return 6, _from_bytes(_inet_pton(_AF_INET6, text), "big")
        except OSError:
            return None
    return None


class Cidr(Condition):
    """An IPv4 or IPv6 block; host bits in the operand are ignored (10.0.0.5/24 is 10.0.0.0/24)."""

    __slots__ = ("version", "bits", "network")

    def __init__(self, version: int, address: int, bits: int) -> None:
        width = 32 if version == 4 else 128
        self.version, self.bits = version, bits
        self.network = address >> (width - bits)  # the network number, host bits dropped
        self.key = ("cidr", version, bits, self.network)

    def test(self, value: Any) -> bool:
        if type(value) is not str:
            return False
        parsed = parse_ip(value)
        if parsed is None or parsed[0] != self.version:
            return False
        width = 32 if self.version == 4 else 128
        return parsed[1] >> (width - self.bits) == self.network


# --- negation and presence -----------------------------------------------------------------


class AnythingBut(Condition):
    """Accepts a scalar that none of the inner conditions accept (so a missing field, which
    offers no scalar, never matches)."""

    __slots__ = ("inner",)

    def __init__(self, inner: tuple[Condition, ...]) -> None:
        self.inner = inner
        self.key = ("anything-but", frozenset(c.key for c in inner))

    def test(self, value: Any) -> bool:
        for condition in self.inner:
            if condition.test(value):
                return False
        return True


class Exists(Condition):
    """`exists: true` / `exists: false`: whether the path holds any scalar (null counts;
    an object, an empty array or a missing key do not)."""

    __slots__ = ("present",)

    def __init__(self, present: bool) -> None:
        self.present = present
        self.key = ("exists", present)

    def test(self, value: Any) -> bool:
        # Any scalar at all satisfies exists:true; exists:false is decided on absence.
        return self.present


def field_accepts(conditions: tuple[Condition, ...], scalars: list) -> bool:
    """Whether a field (an OR of conditions) accepts the scalars found at its path."""
    if not scalars:
        return any(type(c) is Exists and not c.present for c in conditions)
    for condition in conditions:
        if type(condition) is Exists:
            if condition.present:
                return True
            continue
        for value in scalars:
            if condition.test(value):
                return True
    return False
