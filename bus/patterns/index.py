"""The multi-rule index: every rule of a bus compiled into one shared automaton (event-ruler style)."""
# Each alternative of each rule becomes a chain of steps, one per field: first its rarest
# field (selectivity is estimated from the rule set itself, see `_Selectivity`), then the
# others in one global order, most used paths first. Chains that start alike share states,
# so a thousand rules on the same condition cost one lookup, not a thousand. Every state
# keeps, per field path, a `_FieldIndex` over the conditions leaving it: exact values in a
# dict, prefixes and suffixes in dicts probed per distinct length, numeric ranges as sorted
# boundaries (bisect), CIDR blocks in dicts per mask length, wildcards by their literal
# head and tail, and the rest (anything-but, non-ASCII case folding) tested one by one.
#
# Matching walks the event once for the paths the rules mention (with generated code), then
# runs the automaton: the work depends on how many states the event activates — roughly,
# how many rules its rarest field lets through — not on how many rules exist.
#
# Arrays of objects: AWS requires the fields of one nested pattern to come from the same
# array element. The automaton looks at each path independently, which can only accept
# more (and, for `exists: false` under such an array, is made to), so when the event has an
# array of two or more objects, a rule the automaton accepts is confirmed with the exact
# evaluator if two of its fields under one top-level key, or one `exists: false` field,
# got values from under such an array (see `_Rule.needs_check`). One field alone is
# matched exactly by the automaton: "some element has it" is what the union of values says.

from __future__ import annotations

import gc
import os
import re
import threading
import warnings
from array import array
from bisect import bisect_left
from contextlib import contextmanager
from typing import Any, Iterator

from bus.patterns.evaluate import PatternEvaluator
from bus.patterns.ops import (
    FALSE_KEY,
    TRUE_KEY,
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
from bus.patterns.parse import Alternative, Path

_MISSING = object()
_EMPTY: dict = {}  # the one empty table every field index shares (never written to)
_SHARED_PROBES: dict = {}


def _shared(probes: tuple) -> tuple:
    """One tuple object per distinct sequence of probe functions."""
    return _SHARED_PROBES.setdefault(probes, probes)

# Above this many range-to-segment entries a field index scans its ranges instead.
_MAX_SEGMENT_CELLS = 200_000


class _State:
    """A point in the automaton: the fields matched so far along some chains."""

    __slots__ = ("fields", "trans", "ctrans", "children", "rules")

    def __init__(self) -> None:
        self.fields: dict[int, _FieldIndex] = {}     # path id -> conditions leaving this state
        self.trans: tuple = ()                        # frozen (path id, _FieldIndex, exact dict or None)
        self.ctrans: tuple = ((),)                    # the same for the C engine (see RuleIndex._refresh)
        self.children: dict[tuple, list] = {}         # (path id, condition keys) -> [next state, refs]
        self.rules: list[int] = []                    # rule ids whose chain ends here


# The optional compiled engine (bus/patterns/_cengine.c, built by `pip install` when a C compiler
# is there): the same walk and automaton run, several times faster, the same answers.
_C_LAYOUT = 6  # the layout of spec, trie and ctrans tuples it reads (its LAYOUT)
try:
    from bus.patterns import _cengine as _patterns_c
except ImportError:  # pragma: no cover - depends on the build
    _patterns_c = None
if _patterns_c is not None and getattr(_patterns_c, "LAYOUT", None) != _C_LAYOUT:  # pragma: no cover
    warnings.warn("bus.patterns._cengine is a stale build (reinstall busway to rebuild it); "
                  "matching patterns in pure Python", RuntimeWarning, stacklevel=1)
    _patterns_c = None
if _patterns_c is not None:
    _patterns_c.setup(TRUE_KEY, FALSE_KEY, _State, _State.ctrans)


class _FieldIndex:
    """The conditions on one path leaving one state, each leading to next states."""

    __slots__ = (
        "conditions", "exact", "prefix", "prefix_lens", "suffix", "suffix_lens",
        "ci_exact", "ci_prefix", "ci_prefix_lens", "ci_suffix", "ci_suffix_lens",
        "wild", "wild_head_lens", "ranges", "bounds", "segments", "cidr", "generic",
        "present", "absent", "string_probes", "number_probes", "other_probes", "exact_only", "spec",
        "generic_rest", "cpack",
    )

    def __init__(self) -> None:
        # condition key -> (condition, {next state: None}) — the dict as an ordered set
        self.conditions: dict[tuple, tuple[Condition, dict]] = {}
        self.absent: tuple = ()
        self.exact_only = True
        self.exact: dict = _EMPTY
        self.cpack = None  # the C engine's packed copy of `spec` (see rebuild)

    # -- maintenance --------------------------------------------------------------------

    def add(self, condition: Condition, state: _State) -> None:
        self.conditions.setdefault(condition.key, (condition, {}))[1][state] = None

    def remove(self, condition: Condition, state: _State) -> None:
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
            return {k: tuple(v) for k, v in table.items()} if table else _EMPTY

        def lens(table: dict) -> tuple:
            return tuple(sorted({len(k) for k in table}))

        self.exact = frozen(exact)
        self.prefix, self.prefix_lens = frozen(prefix), lens(prefix)
        self.suffix, self.suffix_lens = frozen(suffix), lens(suffix)
        self.ci_exact = ci_exact or _EMPTY
        self.ci_prefix, self.ci_prefix_lens = ci_prefix or _EMPTY, lens(ci_prefix)
        self.ci_suffix, self.ci_suffix_lens = ci_suffix or _EMPTY, lens(ci_suffix)
        self.wild = {head: (lens(tails), {tail: (_any_of(group), group) for tail, group in tails.items()})
                     for head, tails in wild.items()} or _EMPTY
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
        cls = _FieldIndex
        generic_probe = [cls._probe_generic] if generic else []
        # For the C engine: anything-but of plain values, prefixes and suffixes it tests
        # itself; the other generic conditions stay with a Python probe.
        negations, rest = [], []
        for condition, states in generic:
            entry = _c_negation(condition)
            if entry is None:
                rest.append((condition, states))
            else:
                negations.append((*entry, states))
        self.generic_rest = tuple(rest)
        rest_probe = [cls._probe_generic_rest] if rest else []
        self.string_probes = _shared(tuple(
            [cls._probe_exact] * has[(str,)] + [cls._probe_prefix] * bool(prefix)
            + [cls._probe_suffix] * bool(suffix)
            + [cls._probe_ignore_case] * bool(ci_exact or ci_prefix or ci_suffix)
            + [cls._probe_wildcard] * bool(wild) + [cls._probe_cidr] * bool(cidr) + generic_probe))
        self.number_probes = _shared(tuple(
            [cls._probe_exact] * has[(int, float)] + [cls._probe_ranges] * bool(ranges) + generic_probe))
        self.other_probes = _shared(tuple([cls._probe_exact] * has_other + generic_probe))

        # The same lookup structures for the C engine (bus/patterns/_cengine.c, see its layout
        # comment); what it does not do itself it delegates to these probe functions. When
        # the exact table decides alone, the engine needs nothing else.
        self.spec = None if self.exact_only else (
            self.exact, self.exact_only, self.present, self.absent,
            _affix_hashes(self.prefix, False), self.prefix_lens, _affix_hashes(self.suffix, True), self.suffix_lens,
            _affix_hashes(self.ci_exact, False), _affix_hashes(self.ci_prefix, False), self.ci_prefix_lens,
            _affix_hashes(self.ci_suffix, True), self.ci_suffix_lens,
            bool(ci_exact or ci_prefix or ci_suffix), cls._probe_ignore_case,
            self.bounds, self.segments, _doubles(self.bounds), self.cidr, cls._probe_cidr,
            self.wild_head_lens,
            {head: (tail_lens, {tail: tuple((tuple(c.segments), s) for c, s in group)
                                for tail, (_, group) in tails.items()})
             for head, (tail_lens, tails) in self.wild.items()} or _EMPTY,
            _shared(tuple(rest_probe)),
            _shared(tuple([cls._probe_ranges] * bool(ranges and self.bounds is None) + rest_probe)),
            _shared(tuple(rest_probe)),
            tuple(negations), cls._probe_generic,
        )
        # ... and packed by it into one block (see `pack` there), which is what it reads; an
        # exact table of several values too (its Bloom filter answers most misses alone).
        self.cpack = None
        if _patterns_c is not None:
            if self.spec is not None:
                self.cpack = _patterns_c.pack(self.spec)
            elif len(self.exact) > 1:
                self.cpack = _patterns_c.pack(_exact_spec(self.exact))

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
        # otherwise the condition decides (see patterns_ops on case-insensitivity).
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

    def _probe_generic_rest(self, v: Any, hits: list) -> None:
        for condition, states in self.generic_rest:
            if condition.test(v):
                hits.append(states)


def _exact_spec(exact: dict) -> tuple:
    """The C engine's spec of a field with only an exact table (see _FieldIndex.rebuild)."""
    cls = _FieldIndex
    return (exact, True, (), (), _EMPTY, (), _EMPTY, (), _EMPTY, _EMPTY, (), _EMPTY, (), False,
            cls._probe_ignore_case, None, None, None, (), cls._probe_cidr, (), _EMPTY, (), (), (), (),
            cls._probe_generic)


def _c_negation(condition: Condition) -> tuple | None:
    """An anything-but the C engine tests itself: (values, prefixes, suffixes) it excludes,
    when its inner conditions are only plain strings or numbers, prefixes and suffixes."""
    if type(condition) is not AnythingBut:
        return None
    values, prefixes, suffixes = [], [], []
    for inner in condition.inner:
        kind = type(inner)
        if kind is Exact and type(inner.value) in (str, int, float):
            values.append(inner.value)
        elif kind is Prefix and inner.text:
            prefixes.append(inner.text)
        elif kind is Suffix and inner.text:
            suffixes.append(inner.text)
        else:
            return None
    return frozenset(values), tuple(prefixes), tuple(suffixes)


_FNV_OFFSET, _FNV_PRIME, _MASK64 = 14695981039346656037, 1099511628211, 2 ** 64 - 1


def _affix_hashes(table: dict, from_end: bool) -> dict:
    """A prefix/suffix table for the C engine: FNV-1a (64-bit) of each key's code points,
    from its end for suffixes, to ((key, value), ...) (see probe_hashed there)."""
    if not table:
        return _EMPTY
    out: dict = {}
    for key, value in table.items():
        h = _FNV_OFFSET
        for char in reversed(key) if from_end else key:
            h = ((h ^ ord(char)) * _FNV_PRIME) & _MASK64
        out.setdefault(h, []).append((key, value))
    return {h: tuple(entries) for h, entries in out.items()}


def _doubles(bounds: list | None) -> bytes | None:
    """Range bounds as packed C doubles when each is exactly a double (so the C engine can
    compare numbers without Python objects), else None."""
    if bounds is None or not all(type(b) is float or abs(b) <= 2 ** 53 for b in bounds):
        return None
    return array("d", bounds).tobytes()


def _any_of(group: list) -> re.Pattern | None:
    """One regex accepting what any wildcard of the group accepts (None for a single one)."""
    if len(group) < 2:
        return None
    return re.compile("|".join(f"(?:{c.regex.pattern})" for c, _ in group), re.DOTALL)


ENGINES = ("c", "python") if _patterns_c is not None else ("python",)
# BUSWAY_PATTERNS_ENGINE=python forces the pure-Python engine even where C is built.
_engine = _patterns_c if os.environ.get("BUSWAY_PATTERNS_ENGINE", "c") != "python" else None


def engine() -> str:
    """Which matching engine Matchers use: "c" (compiled, when built) or "python"."""
    return "python" if _engine is None else "c"


def use_engine(name: str) -> None:
    """Switch every Matcher to an engine of ENGINES (tests and benchmarks compare them)."""
    global _engine
    if name not in ENGINES:
        raise ValueError(f"engine {name!r} is not available here (have: {', '.join(ENGINES)})")
    _engine = _patterns_c if name == "c" else None


@contextmanager
def using_engine(name: str) -> Iterator[None]:
    """Run a block with every Matcher on the given engine (then switch back)."""
    previous = engine()
    use_engine(name)
    try:
        yield
    finally:
        use_engine(previous)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Building the automaton allocates many small objects that all stay alive; the cyclic
    GC would re-traverse the growing structure again and again for nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _PathNode:
    """The event walk: a trie of the keys the rules mention."""

    __slots__ = ("kids", "path_id")

    def __init__(self) -> None:
        self.kids: list[tuple[str, _PathNode]] = []
        self.path_id: int | None = None


def _walk(obj: dict, kids: list, flat: list, multi: set | None, in_multi: bool) -> set | None:
    """Collect the scalars at every mentioned path into `flat` (indexed by path id: _MISSING,
    a scalar or a list; booleans as TRUE_KEY / FALSE_KEY so they never collide with 1 and 0
    in a dict).
    Returns the set of path ids that lie under an array of two or more objects (or None)."""
    for key, node in kids:
        v = obj.get(key, _MISSING)
        if v is _MISSING:
            continue
        t = type(v)
        if t is dict:
            if node.kids:
                multi = _walk(v, node.kids, flat, multi, in_multi)
        elif t is list:
            multi = _walk_array(v, node, flat, multi, in_multi)
        elif node.path_id is not None:
            pid = node.path_id
            if t is bool:
                v = TRUE_KEY if v else FALSE_KEY
            old = flat[pid]
            if old is _MISSING:
                flat[pid] = v
            elif type(old) is list:
                old.append(v)
            else:
                flat[pid] = [old, v]
            if in_multi:
                multi = multi or set()
                multi.add(pid)
    return multi


def _walk_array(items: list, node: _PathNode, flat: list, multi: set | None, in_multi: bool) -> set | None:
    pid = node.path_id
    if pid is not None and not in_multi and flat[pid] is _MISSING:
        # The usual array: scalars only (tags, resources).
        for element in items:
            t = type(element)
            if t is dict or t is list or t is bool:
                break
        else:
            if items:
                flat[pid] = list(items)
            return multi
    objects: list = []
    scalars: list = []
    pending = [items]
    while pending:
        for element in pending.pop():
            t = type(element)
            if t is dict:
                objects.append(element)
            elif t is list:
                pending.append(element)
            else:
                scalars.append(element if t is not bool else TRUE_KEY if element else FALSE_KEY)
    if scalars and pid is not None:
        old = flat[pid]
        if old is _MISSING:
            flat[pid] = scalars
        elif type(old) is list:
            old.extend(scalars)
        else:
            flat[pid] = [old, *scalars]
        if in_multi:
            multi = multi or set()
            multi.add(pid)
    if objects and node.kids:
        nested_multi = in_multi or len(objects) > 1
        for obj in objects:
            multi = _walk(obj, node.kids, flat, multi, nested_multi)
    return multi


def _c_transition(pid: int, field: _FieldIndex) -> tuple:
    """A field leaving a state, for the C engine: (path id, exact table, packed spec,
    _FieldIndex) (the pack, see _FieldIndex.rebuild, also when the exact table decides alone
    but has several values); a table of one value leading to one state is written (path id,
    value, None, state): each object less to read is a cache miss less when the automaton is
    large."""
    if not field.exact_only:
        return pid, field.exact, field.spec if field.cpack is None else field.cpack, field
    if len(field.exact) == 1:
        [(value, states)] = field.exact.items()
        return pid, value, None, states[0] if len(states) == 1 else states
    if field.cpack is not None:
        return pid, field.exact, field.cpack, field
    return pid, field.exact, None, None


def _c_trie(kids: list) -> tuple:
    """The key trie for the C engine: a tuple of (key, path id or -1, kids tuple)."""
    return tuple((key, -1 if node.path_id is None else node.path_id, _c_trie(node.kids))
                 for key, node in kids)


_MAX_UNROLLED_DEPTH = 6


def _compile_walk(kids: list) -> Any:
    """Generate straight-line code that walks an event along the key trie — the same walk
    as `_walk`, without its per-key loop overhead (it runs for every event). Arrays whose
    elements are all objects are unrolled too; other arrays, and subtrees deeper than
    _MAX_UNROLLED_DEPTH, are handed to the generic walker."""
    nodes: list[_PathNode] = []
    lines = ["def walk(o0, flat):", "    multi = None"]

    def store(pid: int, indent: str, inside_array: bool, in_multi: str) -> None:
        if not inside_array:  # the only route to this path: nothing stored yet
            lines.append(f"{indent}flat[{pid}] = x")
            return
        lines.append(f"{indent}old = flat[{pid}]")
        lines.append(f"{indent}if old is M:")
        lines.append(f"{indent}    flat[{pid}] = x")
        lines.append(f"{indent}elif type(old) is list:")
        lines.append(f"{indent}    old.append(x)")
        lines.append(f"{indent}else:")
        lines.append(f"{indent}    flat[{pid}] = [old, x]")
        if in_multi != "False":
            lines.append(f"{indent}if {in_multi}:")
            lines.append(f"{indent}    multi = multi or set()")
            lines.append(f"{indent}    multi.add({pid})")

    def emit(kids: list, depth: int, indent: str, inside_array: bool, in_multi: str) -> None:
        parent = f"o{depth}"
        for key, node in kids:
            nodes.append(node)
            n = len(nodes) - 1
            deeper = depth + 1 < _MAX_UNROLLED_DEPTH
            lines.append(f"{indent}x = {parent}.get({key!r}, M)")
            lines.append(f"{indent}if x is not M:")
            lines.append(f"{indent}    t = type(x)")
            if node.kids:
                lines.append(f"{indent}    if t is dict:")
                if deeper:
                    lines.append(f"{indent}        o{depth + 1} = x")
                    emit(node.kids, depth + 1, indent + "        ", inside_array, in_multi)
                else:
                    lines.append(f"{indent}        multi = walk_object(x, N[{n}].kids, flat, multi, {in_multi})")
                lines.append(f"{indent}    elif t is list:")
                if deeper:
                    # An array of objects: each element is walked like an object, values
                    # accumulate, and with two or more elements their paths are "multi".
                    flag = f"m{depth + 1}"
                    lines.append(f"{indent}        if x and set(map(type, x)) == ONLY_OBJECTS:")
                    lines.append(f"{indent}            {flag} = {in_multi} or len(x) > 1")
                    lines.append(f"{indent}            for o{depth + 1} in x:")
                    emit(node.kids, depth + 1, indent + "                ", True, flag)
                    lines.append(f"{indent}        else:")
                    lines.append(f"{indent}            multi = walk_array(x, N[{n}], flat, multi, {in_multi})")
                else:
                    lines.append(f"{indent}        multi = walk_array(x, N[{n}], flat, multi, {in_multi})")
            else:
                lines.append(f"{indent}    if t is list:")
                lines.append(f"{indent}        multi = walk_array(x, N[{n}], flat, multi, {in_multi})")
            if node.path_id is not None:
                lines.append(f"{indent}    elif t is bool:")
                lines.append(f"{indent}        x = TRUE if x else FALSE")
                store(node.path_id, indent + "        ", inside_array, in_multi)
                lines.append(f"{indent}    elif t is not dict:")
                store(node.path_id, indent + "        ", inside_array, in_multi)

    emit(kids, 0, "    ", False, "False")
    lines.append("    return multi")
    namespace = {"M": _MISSING, "N": nodes, "walk_array": _walk_array, "walk_object": _walk,
                 "TRUE": TRUE_KEY, "FALSE": FALSE_KEY, "ONLY_OBJECTS": {dict}}
    exec(compile("\n".join(lines), "<patterns event walk>", "exec"), namespace)
    return namespace["walk"]


class _Selectivity:
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


class _Rule:
    __slots__ = ("rule_id", "name", "evaluator", "chains", "path_ids", "groups", "absent_ids", "risky")

    def __init__(self, rule_id: int, name: str, evaluator: PatternEvaluator) -> None:
        self.rule_id, self.name, self.evaluator = rule_id, name, evaluator
        self.chains: list[list[tuple]] = []
        self.path_ids: frozenset[int] = frozenset()
        self.groups: tuple[frozenset[int], ...] = ()   # per alternative and top-level key, 2+ fields
        self.absent_ids: frozenset[int] = frozenset()  # fields with an `exists: false`
        self.risky = False                             # groups or absent_ids: see needs_check

    def needs_check(self, multi: set) -> bool:
        """Whether the automaton's answer could differ from the exact one, given the path ids
        that got values from under an array of two or more objects. Two fields can only have
        to come from one element when an array lies on their common path, which is under one
        top-level key, and then both got their values there."""
        if multi.isdisjoint(self.path_ids):
            return False
        return not multi.isdisjoint(self.absent_ids) or any(len(group & multi) > 1 for group in self.groups)


class RuleIndex:
    """All the rules of one bus; `match` returns the names of the rules an event matches.

    Matching may run on several threads at once; adding and removing rules must not
    overlap with anything else (the broker replaces rules from one place)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, _Rule] = {}
        self._by_id: dict[int, _Rule] = {}
        self._next_id = 0
        self._selectivity = _Selectivity()
        self._path_ids: dict[Path, int] = {}
        self._changes = 0     # adds and removes since the last full rebuild
        self._stale = True    # something changed since the last refresh
        self._reset_automaton()

    def _reset_automaton(self) -> None:
        self._root = _State()
        self._path_refs: dict[int, int] = {}
        self._walk_root: list = []
        self._walk: Any = _compile_walk([])
        self._ctrie: tuple = ()
        self._dirty_fields: set[_FieldIndex] = set()
        self._dirty_states: set[_State] = {self._root}
        self._dirty_paths = True

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, name: str) -> bool:
        return name in self._rules

    # -- adding and removing ------------------------------------------------------------

    def add(self, name: str, evaluator: PatternEvaluator) -> None:
        if name in self._rules:
            self.remove(name)
        rule = _Rule(self._next_id, name, evaluator)
        self._next_id += 1
        self._selectivity.count(evaluator.alternatives, +1)
        self._rules[name] = rule
        self._by_id[rule.rule_id] = rule
        self._changes += 1
        self._stale = True
        if not self._rebuild_due():  # else the next refresh threads every rule anyway
            self._insert(rule)

    def _rebuild_due(self) -> bool:
        return self._changes > len(self._rules) // 2

    def remove(self, name: str) -> None:
        rule = self._rules.pop(name, None)
        if rule is None:
            return
        del self._by_id[rule.rule_id]
        self._selectivity.count(rule.evaluator.alternatives, -1)
        for chain in rule.chains:
            terminal = chain[-1][3]
            terminal.rules.remove(rule.rule_id)
            self._dirty_states.add(terminal)  # its ctrans lists the rules ending there
            for state, pid, conditions, child in reversed(chain):
                self._unstep(state, pid, conditions, child)
        self._changes += 1
        self._stale = True

    def _insert(self, rule: _Rule) -> None:
        """Thread each alternative of the rule through the automaton: its rarest field
        first (so few events get past the root), then the rest in one global order, most
        used paths first (so rules that share a state mostly continue on the same path,
        and an event that gets past the root costs one lookup per step, not one per rule).

        Before the rarest field comes, when the rule tests it for plain equality, the path
        most rules test (in practice `source`): one lookup splits the automaton into one
        part per value. Rarest-first alone makes the root test every path some rule starts
        with (a dozen probes per event in a bus of many kinds of rules), and most of the
        states those probes reach end at the next step, on a source the event does not
        have; split by source first, an event meets only the rules of its own source."""
        estimate, uses = self._selectivity.field, self._selectivity.uses
        partition = self._selectivity.partition()
        rule.chains = []
        path_ids = set()
        for alternative in rule.evaluator.alternatives:
            items = list(alternative.items())
            lead = []
            conditions = alternative.get(partition) if partition is not None else None
            if conditions and len(items) > 1 and all(type(c) is Exact for c in conditions):
                lead = [(partition, conditions)]
                items.remove(lead[0])
            first = min(items, key=lambda item: (estimate(*item), len(item[0]), item[0]))
            items.remove(first)
            fields = lead + [first] + sorted(items, key=lambda item: (-uses.get(item[0], 0), item[0]))
            chain: list[tuple] = []
            state = self._root
            for path, conditions in fields:
                pid = self._path_id(path)
                path_ids.add(pid)
                state = self._step(state, pid, conditions, chain)
            state.rules.append(rule.rule_id)
            self._dirty_states.add(state)
            rule.chains.append(chain)
        rule.path_ids = frozenset(path_ids)
        groups, absent = set(), set()
        for alternative in rule.evaluator.alternatives:
            by_key: dict[str, set] = {}
            for path, conditions in alternative.items():
                by_key.setdefault(path[0], set()).add(self._path_ids[path])
                if any(type(c) is Exists and not c.present for c in conditions):
                    absent.add(self._path_ids[path])
            groups.update(frozenset(g) for g in by_key.values() if len(g) > 1)
        rule.groups, rule.absent_ids = tuple(groups), frozenset(absent)
        rule.risky = bool(groups or absent)

    def _rebuild(self) -> None:
        """Re-thread every rule with today's selectivity estimates (the estimates drift
        as rules come and go; answers never depend on the order, only speed does)."""
        self._reset_automaton()
        for rule_id in sorted(self._by_id):
            self._insert(self._by_id[rule_id])
        self._changes = 0

    def _path_id(self, path: Path) -> int:
        pid = self._path_ids.get(path)
        if pid is None:
            pid = self._path_ids[path] = len(self._path_ids)
        refs = self._path_refs.get(pid, 0)
        if not refs:
            self._dirty_paths = True
        self._path_refs[pid] = refs + 1
        return pid

    def _step(self, state: _State, pid: int, conditions: tuple[Condition, ...], chain: list) -> _State:
        key = (pid, frozenset(c.key for c in conditions))
        link = state.children.get(key)
        if link is None:
            link = state.children[key] = [_State(), 0]
            field = state.fields.get(pid)
            if field is None:
                field = state.fields[pid] = _FieldIndex()
                self._dirty_states.add(state)
            for condition in conditions:
                field.add(condition, link[0])
            self._dirty_fields.add(field)
            self._dirty_states.add(state)  # its frozen `trans` holds the field's old tables
        link[1] += 1
        chain.append((state, pid, conditions, link[0]))
        return link[0]

    def _unstep(self, state: _State, pid: int, conditions: tuple[Condition, ...], child: _State) -> None:
        key = (pid, frozenset(c.key for c in conditions))
        link = state.children[key]
        link[1] -= 1
        refs = self._path_refs[pid] - 1
        self._path_refs[pid] = refs
        if not refs:
            self._dirty_paths = True
        if link[1]:
            return
        del state.children[key]
        field = state.fields[pid]
        for condition in conditions:
            field.remove(condition, child)
        if field.conditions:
            self._dirty_fields.add(field)
            self._dirty_states.add(state)
        else:
            del state.fields[pid]
            self._dirty_fields.discard(field)
            self._dirty_states.add(state)

    def _refresh(self) -> None:
        """Bring the automaton up to date (once, before matching). After many changes
        relative to the number of rules, re-thread everything; otherwise just rebuild the
        lookup structures that changed."""
        if self._rebuild_due():
            with _gc_paused():
                self._rebuild()
                # Everything is new: build it state by state, depth first, so that what one
                # event reads along a chain was allocated together (fewer cache misses).
                order, stack = [], [self._root]
                while stack:
                    state = stack.pop()
                    order.append(state)
                    stack.extend(link[0] for link in reversed(state.children.values()))
                for state in order:
                    for field in state.fields.values():
                        field.rebuild()
                    self._freeze(state)
        else:
            for field in self._dirty_fields:
                field.rebuild()
            for state in self._dirty_states:
                self._freeze(state)
        self._dirty_fields.clear()
        self._dirty_states.clear()
        if self._dirty_paths:
            self._rebuild_walk()
            self._dirty_paths = False
        self._stale = False

    @staticmethod
    def _freeze(state: _State) -> None:
        state.trans = tuple((pid, field, field.exact if field.exact_only else None)
                            for pid, field in state.fields.items())
        # For the C engine, flat: the rules ending here, then four items per field.
        state.ctrans = (tuple(state.rules), *(
            item for pid, field in state.fields.items() for item in _c_transition(pid, field)))

    def _rebuild_walk(self) -> None:
        root = _PathNode()
        for path, pid in self._path_ids.items():
            if not self._path_refs.get(pid):
                continue
            node = root
            for key in path:
                for existing_key, kid in node.kids:
                    if existing_key == key:
                        node = kid
                        break
                else:
                    kid = _PathNode()
                    node.kids.append((key, kid))
                    node = kid
            node.path_id = pid
        self._walk_root = root.kids
        self._walk = _compile_walk(root.kids)
        self._ctrie = _c_trie(root.kids)

    # -- matching -----------------------------------------------------------------------

    def match(self, event: Any) -> list[str]:
        if self._stale:
            with self._lock:  # the lazy refresh mutates the automaton: one thread does it
                if self._stale:
                    self._refresh()
        if type(event) is not dict:
            return []
        if _engine is not None:
            found, multi = _engine.match(event, self._ctrie, len(self._path_ids), self._root)
        else:
            found, multi = self._match_python(event)
        if not found:
            return []
        by_id = self._by_id
        if len(found) == 1:  # the usual hit
            rule = by_id[found[0]]
            if multi and rule.risky and rule.needs_check(multi) and not rule.evaluator.matches(event):
                return []
            return [rule.name]
        ids = sorted(set(found))
        if multi:
            return [by_id[i].name for i in ids if not by_id[i].risky or not by_id[i].needs_check(multi)
                    or by_id[i].evaluator.matches(event)]
        return [by_id[i].name for i in ids]

    def _match_python(self, event: dict) -> tuple[list[int], set | None]:
        """Walk the event and run the automaton: the rule ids whose chains completed (with
        repeats) and the path ids under arrays of several objects. bus/patterns/_cengine.c's
        `match` does the same."""
        flat = [_MISSING] * len(self._path_ids)
        multi = self._walk(event, flat)

        # The automaton is a tree (every state has one parent link), so a state can only be
        # reached twice through the same field; that is where duplicates are dropped.
        stack = [self._root]
        push, pop = stack.extend, stack.pop
        found: list[int] = []
        while stack:
            state = pop()
            if state.rules:
                found.extend(state.rules)
            for pid, field, exact in state.trans:
                v = flat[pid]
                if v is _MISSING:
                    if field.absent:
                        push(field.absent)
                    continue
                t = type(v)
                if t is list:
                    hits: list = []
                    field.collect(v, hits)
                elif exact is not None:
                    hit = exact.get(v)  # booleans arrive as TRUE_KEY / FALSE_KEY (see _walk)
                    if hit:
                        push(hit)
                    continue
                else:
                    hits = [field.present] if field.present else []
                    for probe in (field.string_probes if t is str else
                                  field.number_probes if t is int or t is float else field.other_probes):
                        probe(field, v, hits)
                if multi and field.absent and pid in multi:
                    # Under an array of objects one element may lack the field even though
                    # another has it: follow the absence branch and let the exact
                    # evaluator decide.
                    hits.append(field.absent)
                if len(hits) == 1:
                    push(hits[0])
                elif hits:
                    push(dict.fromkeys(s for states in hits for s in states))
        return found, multi
