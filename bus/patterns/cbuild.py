"""Everything handed to the compiled engine (bus/patterns/_cengine.c), laid out as it reads it.

This is the only Python code that knows that layout: the state type whose `ctrans` slot the
engine reads, each field's spec (slot names in SPEC, in the engine's order) and its pack,
the transitions, the key trie. bus/patterns/engine.py ignores a compiled module whose
LAYOUT or SPEC differ from these (a stale build).
"""
from __future__ import annotations

from array import array
from types import ModuleType
from typing import Any

import msgspec

from bus.patterns.fields import EMPTY, FieldIndex, State
from bus.patterns.ops import FALSE_KEY, TRUE_KEY, AnythingBut, Condition, Exact, Prefix, Suffix

# The version of the layout below; _cengine.c's LAYOUT (bump both together).
LAYOUT = 8

# A field's spec, slot by slot, in the order of _cengine.c's S_* (which it exports as SPEC).
SPEC = (
    "exact", "present", "absent",
    "prefix", "prefix_lens", "suffix", "suffix_lens",
    "ci_exact", "ci_prefix", "ci_prefix_lens", "ci_suffix", "ci_suffix_lens", "has_ci", "probe_ci",
    "bounds", "segments", "bounds_doubles", "probe_ranges",
    "cidr", "probe_cidr",
    "wild_head_lens", "wild",
    "negations", "rest", "probe_generic",
)


class CState(State):
    """A state as the compiled engine reads it: `ctrans` is its transitions, flat (see
    CAutomaton.freeze); the engine reads the slot directly (a getattr per state visited was
    a tenth of the time)."""

    __slots__ = ("ctrans",)

    def __init__(self) -> None:
        super().__init__()
        self.ctrans: tuple = ((),)


def setup(module: ModuleType) -> None:
    """Tell a freshly loaded engine the keys booleans are stored as and the state type."""
    module.setup(TRUE_KEY, FALSE_KEY, CState, CState.ctrans)


def is_current(module: ModuleType) -> bool:
    """Whether a compiled module reads the layout built here."""
    return getattr(module, "LAYOUT", None) == LAYOUT and tuple(getattr(module, "SPEC", ())) == SPEC


class CAutomaton:
    """The compiled engine's view of one RuleIndex's automaton: each state's `ctrans` and the
    packed fields they hold. The index tells it which fields were rebuilt or dropped and
    which states to freeze; nothing of this lives on FieldIndex."""

    def __init__(self, module: ModuleType) -> None:
        self._pack = module.pack
        self._packs: dict[FieldIndex, Any] = {}

    def rebuilt(self, field: FieldIndex) -> None:
        """The field's tables changed: its pack is made again when its state is frozen."""
        self._packs.pop(field, None)

    def forget(self, field: FieldIndex) -> None:
        """The field left the automaton: its pack (and the states it holds) can go."""
        self._packs.pop(field, None)

    def freeze(self, state: CState) -> None:
        """The rules ending at the state, then three items per field leaving it: (path id,
        pack, FieldIndex), or (path id, value, next state or states) when the field is one
        exact value (each object less to read is a cache miss less when the automaton is
        large)."""
        items: list = [tuple(state.rules)]
        for pid, field in state.fields.items():
            if field.exact_only and len(field.exact) == 1:
                [(value, states)] = field.exact.items()
                items += (pid, value, states[0] if len(states) == 1 else states)
                continue
            pack = self._packs.get(field)
            if pack is None:
                pack = self._packs[field] = self._pack(field_spec(field))
            items += (pid, pack, field)
        state.ctrans = tuple(items)


def trie(kids: list) -> tuple:
    """The key trie (walk.path_trie) for the engine: a tuple of (key, path id or -1, kids)."""
    return tuple((_shared(key), -1 if node.path_id is None else node.path_id, trie(node.kids)) for key, node in kids)


def _shared(key: str) -> str:
    """The str object msgspec decodes `key` to: it keeps recent short object keys in a cache and
    hands out the same object, so the engine's lookups of this key in decoded events compare
    pointers instead of characters. Only speed depends on it: another object is found too."""
    try:
        return next(iter(_decode(_encode({key: 0}))))
    except Exception:  # pragma: no cover - any key encodes; this is only a speed-up
        return key


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def field_spec(field: FieldIndex) -> tuple:
    """The tables of one field the engine packs (see `pack` there); what it does not probe
    itself it hands back to the FieldIndex probe functions named here."""
    cls = FieldIndex
    negations, rest = [], []
    for condition, states in field.generic:
        entry = _negation(condition)
        if entry is None:
            rest.append((condition, states))  # tested by condition.test from the engine
        else:
            negations.append((*entry, states))
    parts = {
        "exact": field.exact, "present": field.present, "absent": field.absent,
        "prefix": _affix_hashes(field.prefix, False), "prefix_lens": field.prefix_lens,
        "suffix": _affix_hashes(field.suffix, True), "suffix_lens": field.suffix_lens,
        "ci_exact": _affix_hashes(field.ci_exact, False),
        "ci_prefix": _affix_hashes(field.ci_prefix, False), "ci_prefix_lens": field.ci_prefix_lens,
        "ci_suffix": _affix_hashes(field.ci_suffix, True), "ci_suffix_lens": field.ci_suffix_lens,
        "has_ci": bool(field.ci_exact or field.ci_prefix or field.ci_suffix), "probe_ci": cls._probe_ignore_case,
        "bounds": field.bounds, "segments": field.segments, "bounds_doubles": _doubles(field.bounds),
        # Ranges too many to segment are scanned in Python.
        "probe_ranges": cls._probe_ranges if field.ranges and field.bounds is None else None,
        "cidr": field.cidr, "probe_cidr": cls._probe_cidr,
        "wild_head_lens": field.wild_head_lens,
        "wild": {head: (tail_lens, {tail: tuple((tuple(c.segments), s) for c, s in group)
                                    for tail, (_, group) in tails.items()})
                 for head, (tail_lens, tails) in field.wild.items()} or EMPTY,
        "negations": tuple(negations), "rest": tuple(rest), "probe_generic": cls._probe_generic,
    }
    return tuple(parts[name] for name in SPEC)


def _negation(condition: Condition) -> tuple | None:
    """An anything-but the engine tests itself: (values, prefixes, suffixes) it excludes,
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
    """A prefix/suffix table for the engine: FNV-1a (64-bit) of each key's code points,
    from its end for suffixes, to ((key, value), ...) (see `packed_affix` there)."""
    if not table:
        return EMPTY
    out: dict = {}
    for key, value in table.items():
        h = _FNV_OFFSET
        for char in reversed(key) if from_end else key:
            h = ((h ^ ord(char)) * _FNV_PRIME) & _MASK64
        out.setdefault(h, []).append((key, value))
    return {h: tuple(entries) for h, entries in out.items()}


def _doubles(bounds: list | None) -> bytes | None:
    """Range bounds as packed C doubles when each is exactly a double (so the engine can
    compare numbers without Python objects), else None."""
    if bounds is None or not all(type(b) is float or abs(b) <= 2 ** 53 for b in bounds):
        return None
    return array("d", bounds).tobytes()
