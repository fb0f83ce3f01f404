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

import math
import re
from typing import Any

import msgspec

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

Path = tuple[str, ...]
Alternative = dict[Path, tuple[Condition, ...]]

# AWS refuses patterns whose `$or` arrays multiply out to more than this many sub-rules.
MAX_OR_COMBINATIONS = 1000
# Numeric operands must lie in event-ruler's comparable range.
NUMBER_LIMIT = 5.0e9
# Not an AWS rule: a guard so a hostile pattern cannot exhaust the stack.
MAX_DEPTH = 100
# event-ruler's MachineComplexityEvaluator limit for wildcard rules.
MAX_WILDCARD_COMPLEXITY = 10

# Inside a `$or` branch these keys are operators, not field names (event-ruler's list,
# which also reserves operators AWS has not shipped).
OR_RESERVED_KEYS = frozenset({
    "exactly", "equals-ignore-case", "prefix", "suffix", "anything-but", "exists",
    "wildcard", "numeric", "cidr", "=", "<", "<=", ">", ">=", "regex", "not-wildcard",
    "not-equals-ignore-case", "date-after", "date-on-or-after", "date-before",
    "date-on-or-before", "in-date-range", "ip-address-in-range", "ip-address-not-in-range",
})

TOO_COMPLEX_WILDCARD = ("Rule is too complex - try using fewer wildcard characters or fewer "
                        "repeating character sequences after a wildcard character")


class PatternError(ValueError):
    """An invalid event pattern. `str(err)` reads like AWS's InvalidEventPatternException
    message; `reason` is AWS's reason alone and `path` the dotted location (None at the top)."""

    def __init__(self, reason: str, path: str | None = None) -> None:
        self.reason = reason
        self.path = path or None
        where = f" at [path: {self.path}]" if self.path else ""
        super().__init__(f"Event pattern is not valid. Reason: {reason}{where}")


class _Where:
    """The location being parsed, kept as segments so errors can name it."""

    __slots__ = ("segments",)

    def __init__(self, segments: tuple[str, ...] = ()) -> None:
        self.segments = segments

    def child(self, segment: str) -> "_Where":
        return _Where(self.segments + (segment,))

    def fail(self, reason: str) -> PatternError:
        return PatternError(reason, ".".join(self.segments))


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
    alternatives = _parse_object([{}], (), pattern, _Where(), inside_or=False, depth=0)
    _check_wildcard_complexity(alternatives)
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


def _parse_object(alternatives: list[Alternative], path: Path, obj: dict, where: _Where,
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
        alternatives = _parse_member(alternatives, path + (key,), value, where.child(key),
                                     inside_or, depth)
    return alternatives


def _parse_member(alternatives: list[Alternative], path: Path, value: Any, where: _Where,
                  inside_or: bool, depth: int) -> list[Alternative]:
    if isinstance(value, dict):
        return _parse_object(alternatives, path, value, where, inside_or, depth + 1)
    if isinstance(value, list):
        conditions = parse_values(value, where)
        for alternative in alternatives:
            alternative[path] = conditions  # a later write to the same path wins, as on AWS
        return alternatives
    raise where.fail(f'"{path[-1]}" must be an object or an array')


def _parse_or_key(alternatives: list[Alternative], path: Path, members: list, where: _Where,
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


def _parse_or(alternatives: list[Alternative], path: Path, members: list, where: _Where,
              depth: int) -> list[Alternative]:
    expanded: list[Alternative] = []
    for index, member in enumerate(members):
        branch_where = _Where(where.segments[:-1] + (f"$or[{index}]",))
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


def parse_values(values: list, where: _Where) -> tuple[Condition, ...]:
    if not values:
        raise where.fail("Empty arrays are not allowed")
    conditions: list[Condition] = []
    for value in values:
        if isinstance(value, dict):
            conditions.append(_parse_expression(value, where))
        elif isinstance(value, list):
            raise where.fail("Match value must be String, number, true, false, or null")
        else:
            conditions.append(Exact(value))
    # Duplicates add nothing; dropping them keeps condition keys canonical.
    return tuple(dict.fromkeys(conditions))


def _parse_expression(expression: dict, where: _Where) -> Condition:
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


def _require_string(operand: Any, where: _Where, message: str) -> str:
    if not isinstance(operand, str):
        raise where.fail(message)
    return operand


def _parse_exactly(operand: Any, where: _Where) -> Condition:
    # event-ruler's explicit spelling of a literal string match.
    return Exact(_require_string(operand, where, "exact match pattern must be a string"))


def _parse_affix(name: str, operand: Any, where: _Where) -> Condition:
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


def _parse_equals_ignore_case(operand: Any, where: _Where) -> Condition:
    return EqualsIgnoreCase(_require_string(operand, where, "equals-ignore-case match pattern must be a string"))


def _utf8_position(text: str, index: int) -> int:
    # AWS reports wildcard faults as byte offsets into the quoted operand.
    return len(text[:index].encode("utf-8", errors="replace")) + 1


def _check_wildcard_syntax(operand: str, where: _Where) -> None:
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


def _parse_wildcard(operand: Any, where: _Where) -> Condition:
    text = _require_string(operand, where, "wildcard match pattern must be a string")
    _check_wildcard_syntax(text, where)
    return Wildcard(text)


def _parse_cidr(operand: Any, where: _Where) -> Condition:
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


def _parse_exists(operand: Any, where: _Where) -> Condition:
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


def _comparable(value: Any, where: _Where, operand_name: str) -> float:
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


def _parse_numeric(operand: Any, where: _Where) -> Condition:
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


def _parse_anything_but(operand: Any, where: _Where) -> Condition:
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


def _parse_anything_but_nested(operand: dict, where: _Where) -> Condition:
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


# --- wildcard complexity -------------------------------------------------------------------
#
# AWS rejects rules whose wildcards make its byte automaton too non-deterministic. This
# follows event-ruler's MachineComplexityEvaluator in spirit: build the automaton for all
# wildcard operands of one field (determinate prefixes shared, as in the real machine),
# explore which states can be active together for any input, and weigh each state by the
# number of operands running through it. More than MAX_WILDCARD_COMPLEXITY fails.

_STAR = object()
_OTHER = object()  # stands for every character no operand mentions
_MAX_EXPLORED_STATE_SETS = 4000


def _wildcard_tokens(operand: str) -> list:
    tokens: list = ['"']
    i = 0
    while i < len(operand):
        if operand[i] == "\\":
            tokens.append(operand[i + 1])
            i += 2
            continue
        tokens.append(_STAR if operand[i] == "*" else operand[i])
        i += 1
    tokens.append('"')
    return tokens


def wildcard_complexity(operands: list[str]) -> int:
    literal: list[dict] = [{}]      # state -> {char: [next states]}
    epsilon: list[list[int]] = [[]]  # state -> states reached without input (after a `*`)
    loops: list[bool] = [False]      # state consumes any character and stays (it follows a `*`)
    weight: list[set[int]] = [set()]
    shared: dict[tuple[int, Any], int] = {}

    def new_state() -> int:
        literal.append({})
        epsilon.append([])
        loops.append(False)
        weight.append(set())
        return len(literal) - 1

    for index, operand in enumerate(dict.fromkeys(operands)):
        current, determinate = 0, True
        for token in _wildcard_tokens(operand):
            nxt = shared.get((current, token)) if determinate else None
            if nxt is None:
                nxt = new_state()
                if determinate:
                    shared[(current, token)] = nxt
                if token is _STAR:
                    epsilon[current].append(nxt)
                    loops[nxt] = True
                else:
                    literal[current].setdefault(token, []).append(nxt)
            if token is _STAR:
                determinate = False
            weight[nxt].add(index)
            current = nxt

    closures: dict[int, frozenset[int]] = {}

    def closure_of(state: int) -> frozenset[int]:
        found = closures.get(state)
        if found is None:
            pending, seen = [state], {state}
            while pending:
                for nxt in epsilon[pending.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        pending.append(nxt)
            found = closures[state] = frozenset(seen)
        return found

    start = closure_of(0)
    seen_sets, pending_sets, worst = {start}, [start], 0
    while pending_sets and len(seen_sets) < _MAX_EXPLORED_STATE_SETS:
        active = pending_sets.pop()
        looping = [state for state in active if loops[state]]
        # Characters without a literal transition from these states all lead to the same
        # set (the looping states), so one representative stands for them.
        chars: set = {ch for state in active for ch in literal[state]}
        for char in [_OTHER, *sorted(chars)]:
            nxt: set[int] = set()
            for state in looping:
                nxt |= closure_of(state)
            if char is not _OTHER:
                for state in active:
                    for target in literal[state].get(char, ()):
                        nxt |= closure_of(target)
            if not nxt:
                continue
            reached = frozenset(nxt)
            worst = max(worst, sum(len(weight[s]) for s in reached))
            if worst > MAX_WILDCARD_COMPLEXITY:
                return worst
            if reached not in seen_sets:
                seen_sets.add(reached)
                pending_sets.append(reached)
    return worst


def _check_wildcard_complexity(alternatives: list[Alternative]) -> None:
    by_path: dict[Path, list[str]] = {}
    for alternative in alternatives:
        for path, conditions in alternative.items():
            for condition in conditions:
                inner = condition.inner if isinstance(condition, AnythingBut) else (condition,)
                for c in inner:
                    if isinstance(c, Wildcard):
                        by_path.setdefault(path, []).append(c.text)
    for path, operands in by_path.items():
        if wildcard_complexity(operands) > MAX_WILDCARD_COMPLEXITY:
            raise PatternError(TOO_COMPLEX_WILDCARD, ".".join(path))
