"""How rare a field is: the selectivity estimates that decide which field a rule's chain tests first."""

from __future__ import annotations

from typing import Any

from bus.patterns.ops import (
    AnythingBut,
    Cidr,
    Condition,
    Exists,
    NumericRange,
    Prefix,
    PrefixIgnoreCase,
    Suffix,
    SuffixIgnoreCase,
    Wildcard,
)
from bus.patterns.parse import Alternative, Path


class Selectivity:
    """Estimates the fraction of events a field accepts, from the rules themselves.

    The assumption is that rules spread over the values events carry: if the rules name
    2,000 different customer ids but only 8 statuses, `customer.id = x` is rarer than
    `status = y`. Equality-like conditions count 1/(distinct operands of that kind on the
    path + 1); numeric ranges their share of the span of all bounds on the path;
    negations and presence tests are assumed broad. Chains test rare fields first, so
    most of the automaton is never visited by an event."""

    def __init__(self) -> None:
        self.uses: dict[Path, int] = {}            # path -> fields on it, over all rules
        self.alternatives = 0                      # alternatives of all rules
        self._operands: dict[tuple, dict] = {}    # (path, kind) -> {condition key: refs}, see _kind
        self._bounds: dict[Path, dict] = {}       # path -> {numeric bound: refs}
        self._spans: dict[Path, tuple[float, float]] = {}

    def count(self, alternatives: list[Alternative], delta: int) -> None:
        self.alternatives += delta * len(alternatives)
        for alternative in alternatives:
            for path, conditions in alternative.items():
                self._bump(self.uses, path, delta)
                for condition in conditions:
                    self._bump(self._operands.setdefault((path, _kind(condition)), {}), condition.key, delta)
                    if type(condition) is NumericRange:
                        bounds = self._bounds.setdefault(path, {})
                        for bound in (condition.low, condition.high):
                            if bound is not None:
                                self._bump(bounds, bound, delta)
                        self._spans.pop(path, None)

    @staticmethod
    def _bump(counts: dict, key: Any, delta: int) -> None:
        refs = counts.get(key, 0) + delta
        if refs > 0:
            counts[key] = refs
        else:
            counts.pop(key, None)

    def partition(self) -> Path | None:
        """The path at least half of all alternatives test (in practice `source`), if any."""
        if not self.uses:
            return None
        path, uses = max(self.uses.items(), key=lambda item: (item[1], item[0]))
        return path if 2 * uses >= self.alternatives else None

    def field(self, path: Path, conditions: tuple[Condition, ...]) -> float:
        return min(1.0, sum(self._condition(path, c) for c in conditions))

    def _condition(self, path: Path, condition: Condition) -> float:
        kind = type(condition)
        if kind is AnythingBut:
            return 0.9
        if kind is Exists:
            return 0.9 if condition.present else 0.95
        if kind is NumericRange:
            return self._range(path, condition)
        if kind in (Prefix, Suffix, PrefixIgnoreCase, SuffixIgnoreCase) and not condition.text:
            return 1.0
        return 1.0 / (len(self._operands.get((path, _kind(condition)), ())) + 1)

    def _range(self, path: Path, condition: NumericRange) -> float:
        span = self._spans.get(path)
        if span is None:
            bounds = self._bounds.get(path) or {0: 1}
            span = self._spans[path] = (min(bounds), max(bounds))
        low, high = span
        if high <= low:
            return 0.5
        top = high if condition.high is None else min(condition.high, high)
        bottom = low if condition.low is None else max(condition.low, low)
        estimate = (top - bottom) / (high - low)
        if condition.low is None or condition.high is None:
            # Open-ended: the span of the bounds says nothing about how much lies beyond
            # it (`>= 5` when 5 is the highest bound is not rare); count it like one of
            # the gaps between the distinct bounds, at least.
            estimate = max(estimate, 1.0 / (len(self._bounds.get(path) or ()) + 1))
        return min(1.0, max(estimate, 0.001))


def _kind(condition: Condition) -> tuple:
    """Operands are counted per operator and shape: 16 distinct /16 blocks say nothing
    about how rare one /24 block is, nor do 3-character prefixes about 10-character ones."""
    kind = type(condition)
    if kind is Cidr:
        return kind, condition.bits
    if kind in (Prefix, Suffix, PrefixIgnoreCase, SuffixIgnoreCase):
        return kind, len(condition.text)
    if kind is Wildcard:
        return kind, len(condition.segments), len(condition.segments[0]), len(condition.segments[-1])
    return kind, None
