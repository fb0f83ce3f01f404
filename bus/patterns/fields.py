"""The automaton's parts: its states, and per state and field path the lookup structures
over the conditions leaving it, with the pure-Python probes that search them."""
# A `FieldIndex` keeps exact values in a dict, prefixes and suffixes in dicts probed per
# distinct length, numeric ranges as sorted boundaries (bisect), CIDR blocks in dicts per
# mask length, wildcards by their literal head and tail, and the rest (anything-but,
# non-ASCII case folding) tested one by one. What the compiled engine reads of them is
# derived in bus/patterns/cbuild.py; nothing here is for it alone.

from __future__ import annotations

import re
from bisect import bisect_left
from typing import Any

from bus.patterns.ops import (
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

EMPTY: dict = {}  # the one empty table every field index shares (never written to)
_SHARED_PROBES: dict = {}


def shared(probes: tuple) -> tuple:
    """One tuple object per distinct sequence of probe functions."""
    return _SHARED_PROBES.setdefault(probes, probes)

# Above this many range-to-segment entries a field index scans its ranges instead.
_MAX_SEGMENT_CELLS = 200_000


class State:
    """A point in the automaton: the fields matched so far along some chains."""

    __slots__ = ("fields", "trans", "children", "rules")

    def __init__(self) -> None:
        self.fields: dict[int, FieldIndex] = {}      # path id -> conditions leaving this state
        self.trans: tuple = ()                        # frozen (path id, FieldIndex, exact dict or None)
        self.children: dict[tuple, list] = {}         # (path id, condition keys) -> [next state, refs]
        self.rules: list[int] = []                    # rule ids whose chain ends here


class FieldIndex:
    """The conditions on one path leaving one state, each leading to next states."""

    __slots__ = (
        "conditions", "exact", "prefix", "prefix_lens", "suffix", "suffix_lens",
        "ci_exact", "ci_prefix", "ci_prefix_lens", "ci_suffix", "ci_suffix_lens",
        "wild", "wild_head_lens", "ranges", "bounds", "segments", "cidr", "generic",
        "present", "absent", "string_probes", "number_probes", "other_probes", "exact_only",
    )

    def __init__(self) -> None:
        # condition key -> (condition, {next state: None}) — the dict as an ordered set
        self.conditions: dict[tuple, tuple[Condition, dict]] = {}
        self.absent: tuple = ()
        self.exact_only = True
        self.exact: dict = EMPTY

    # -- maintenance --------------------------------------------------------------------

    def add(self, condition: Condition, state: State) -> None:
        self.conditions.setdefault(condition.key, (condition, {}))[1][state] = None

    def remove(self, condition: Condition, state: State) -> None:
        targets = self.conditions[condition.key][1]
        del targets[state]
        if not targets:
            del self.conditions[condition.key]

    def rebuild(self) -> None:
        """Derive the lookup structures from `conditions` (after adds/removes)."""
        exact: dict = {}
        prefix: dict = {}
        suffix: dict = {}
        ci_exact: dict = {}
        ci_prefix: dict = {}
        ci_suffix: dict = {}
        wild: dict = {}
        cidr: dict = {}
        ranges: list = []
        generic: list = []
        present: list = []
        absent: list = []

        def put(table: dict, key: Any, item: Any) -> None:
            table.setdefault(key, []).append(item)

        for condition, targets in self.conditions.values():
            states = tuple(targets)
            kind = type(condition)
            if kind is Exact:
                for s in states:
                    put(exact, condition.value, s)
            elif kind is Prefix and condition.text:
                for s in states:
                    put(prefix, condition.text, s)
            elif kind is Suffix and condition.text:
                for s in states:
                    put(suffix, condition.text, s)
            elif kind is EqualsIgnoreCase and condition.text.isascii():
                # Lower-casing finds candidates; the condition itself confirms them.
                put(ci_exact, condition.text.lower(), (condition, states))
            elif kind is PrefixIgnoreCase and condition.text and condition.text.isascii():
                put(ci_prefix, condition.text.lower(), (condition, states))
            elif kind is SuffixIgnoreCase and condition.text and condition.text.isascii():
                put(ci_suffix, condition.text.lower(), (condition, states))
            elif kind is Wildcard and len(condition.segments) == 1:
                for s in states:  # no `*`: a plain string
                    put(exact, condition.segments[0], s)
            elif kind is Wildcard:
                # Candidates are found by the literal head and tail around the stars.
                put(wild.setdefault(condition.segments[0], {}), condition.segments[-1], (condition, states))
            elif kind is NumericRange:
                ranges.append((condition, states))
            elif kind is Cidr:
                table = cidr.setdefault((condition.version, condition.bits), {})
                for s in states:
                    put(table, condition.network, s)
            elif kind is Exists:
                (present if condition.present else absent).extend(states)
            else:
                generic.append((condition, states))

        # (Empty tables are all one shared object: a large automaton has tens of thousands
        # of field indexes, mostly with one or two kinds of condition.)
        def frozen(table: dict) -> dict:
            return {k: tuple(v) for k, v in table.items()} if table else EMPTY

        def lens(table: dict) -> tuple:
            return tuple(sorted({len(k) for k in table}))

        self.exact = frozen(exact)
        self.prefix, self.prefix_lens = frozen(prefix), lens(prefix)
        self.suffix, self.suffix_lens = frozen(suffix), lens(suffix)
        self.ci_exact = ci_exact or EMPTY
        self.ci_prefix, self.ci_prefix_lens = ci_prefix or EMPTY, lens(ci_prefix)
        self.ci_suffix, self.ci_suffix_lens = ci_suffix or EMPTY, lens(ci_suffix)
        self.wild = {head: (lens(tails), {tail: (any_of(group), group) for tail, group in tails.items()})
                     for head, tails in wild.items()} or EMPTY
        self.wild_head_lens = lens(wild)
        self.cidr = tuple((version, (32 if version == 4 else 128) - bits, frozen(table))
                          for (version, bits), table in cidr.items())
        self.generic = tuple(generic)
        self.present = tuple(dict.fromkeys(present))
        self.absent = tuple(dict.fromkeys(absent))
        self._build_ranges(ranges)
        # Equality only and no absence branch: one dict lookup decides a scalar.
        self.exact_only = not (prefix or suffix or ci_exact or ci_prefix or ci_suffix or wild
                               or ranges or cidr or generic or present or absent)

        # Per scalar type, only the probes that can find something here.
        keys = self.exact.keys()
        has = {t: any(type(k) in t for k in keys) for t in ((str,), (int, float))}
        has_other = any(type(k) not in (str, int, float) for k in keys)
        # (Plain functions, not bound methods: those would make each index a reference cycle.)
        cls = FieldIndex
        generic_probe = [cls._probe_generic] if generic else []
        self.string_probes = shared(tuple(
            [cls._probe_exact] * has[(str,)] + [cls._probe_prefix] * bool(prefix)
            + [cls._probe_suffix] * bool(suffix)
            + [cls._probe_ignore_case] * bool(ci_exact or ci_prefix or ci_suffix)
            + [cls._probe_wildcard] * bool(wild) + [cls._probe_cidr] * bool(cidr) + generic_probe))
        self.number_probes = shared(tuple(
            [cls._probe_exact] * has[(int, float)] + [cls._probe_ranges] * bool(ranges) + generic_probe))
        self.other_probes = shared(tuple([cls._probe_exact] * has_other + generic_probe))

    def _build_ranges(self, ranges: list) -> None:
        """Numeric ranges as elementary segments between sorted boundaries: segment 2i is
        the open gap below bounds[i], 2i+1 the point bounds[i], 2n the gap above the last."""
        self.ranges, self.bounds, self.segments = ranges or (), None, None
        if not ranges:
            return
        bounds = sorted({b for c, _ in ranges for b in (c.low, c.high) if b is not None})
        n = len(bounds)
        cells = [[] for _ in range(2 * n + 1)]
        used = 0
        for condition, states in ranges:
            if condition.low is None:
                first = 0
            else:
                i = bisect_left(bounds, condition.low)
                first = 2 * i + 2 if condition.low_open else 2 * i + 1
            if condition.high is None:
                last = 2 * n
            else:
                i = bisect_left(bounds, condition.high)
                last = 2 * i if condition.high_open else 2 * i + 1
            used += (last - first + 1) * len(states)
            if used > _MAX_SEGMENT_CELLS:
                return  # too many overlapping ranges: `collect` scans `ranges` instead
            for cell in range(first, last + 1):
                cells[cell].extend(states)
        self.bounds = bounds
        self.segments = [tuple(dict.fromkeys(cell)) for cell in cells]

    # -- matching -----------------------------------------------------------------------

    def collect(self, value: Any, hits: list) -> None:
        """Append the next states (tuples) of every condition accepting a scalar of `value`."""
        if self.present:
            hits.append(self.present)
        for v in value if type(value) is list else (value,):
            t = type(v)
            probes = self.string_probes if t is str else self.number_probes if t is int or t is float else self.other_probes
            for probe in probes:
                probe(self, v, hits)

    def _probe_exact(self, v: Any, hits: list) -> None:
        hit = self.exact.get(v)
        if hit:
            hits.append(hit)

    def _probe_prefix(self, v: str, hits: list) -> None:
        n, table = len(v), self.prefix
        for size in self.prefix_lens:
            if size > n:
                break
            hit = table.get(v[:size])
            if hit:
                hits.append(hit)

    def _probe_suffix(self, v: str, hits: list) -> None:
        n, table = len(v), self.suffix
        for size in self.suffix_lens:
            if size > n:
                break
            hit = table.get(v[-size:])
            if hit:
                hits.append(hit)

    def _probe_ignore_case(self, v: str, hits: list) -> None:
        # Operands here are ASCII; for an ASCII value, lower-case equality *is* the match,
        # otherwise the condition decides (see ops.py on case-insensitivity).
        lowered, ascii_value = v.lower(), v.isascii()
        for condition, states in self.ci_exact.get(lowered, ()):
            if ascii_value or condition.test(v):
                hits.append(states)
        for size in self.ci_prefix_lens:
            for condition, states in self.ci_prefix.get(lowered[:size], ()):
                if ascii_value or condition.test(v):
                    hits.append(states)
        for size in self.ci_suffix_lens:
            for condition, states in self.ci_suffix.get(lowered[-size:], ()):
                if ascii_value or condition.test(v):
                    hits.append(states)

    def _probe_wildcard(self, v: str, hits: list) -> None:
        n = len(v)
        for size in self.wild_head_lens:
            if size > n:
                break
            entry = self.wild.get(v[:size])
            if entry is None:
                continue
            tail_lens, tails = entry
            for tail_size in tail_lens:
                if tail_size > n:
                    break
                bucket = tails.get(v[-tail_size:] if tail_size else "")
                if bucket is None:
                    continue
                any_of, group = bucket
                if any_of is not None and any_of.match(v) is None:
                    continue  # one regex rules out the whole bucket, the usual case
                for condition, states in group:
                    if condition.regex.match(v) is not None:
                        hits.append(states)

    def _probe_cidr(self, v: str, hits: list) -> None:
        address = parse_ip(v)
        if address is not None:
            version, number = address
            for block_version, shift, table in self.cidr:
                if block_version == version:
                    hit = table.get(number >> shift)
                    if hit:
                        hits.append(hit)

    def _probe_ranges(self, v: float, hits: list) -> None:
        bounds = self.bounds
        if bounds is not None:
            i = bisect_left(bounds, v)
            cell = self.segments[2 * i + 1 if i < len(bounds) and bounds[i] == v else 2 * i]
            if cell:
                hits.append(cell)
        else:
            for condition, states in self.ranges:
                if condition.test(v):
                    hits.append(states)

    def _probe_generic(self, v: Any, hits: list) -> None:
        for condition, states in self.generic:
            if condition.test(v):
                hits.append(states)


def any_of(group: list) -> re.Pattern | None:
    """One regex accepting what any wildcard of the group accepts (None for a single one)."""
    if len(group) < 2:
        return None
    return re.compile("|".join(f"(?:{c.regex.pattern})" for c, _ in group), re.DOTALL)
