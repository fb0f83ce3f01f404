"""What every step of pattern parsing shares: the shape of a parsed pattern, AWS's limits,
the error type with AWS's wording, and the location being parsed (for error paths)."""
from __future__ import annotations

from bus.patterns.ops import Condition

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


class Where:
    """The location being parsed, kept as segments so errors can name it."""

    __slots__ = ("segments",)

    def __init__(self, segments: tuple[str, ...] = ()) -> None:
        self.segments = segments

    def child(self, segment: str) -> "Where":
        return Where(self.segments + (segment,))

    def fail(self, reason: str) -> PatternError:
        return PatternError(reason, ".".join(self.segments))
