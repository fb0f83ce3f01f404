"""Evaluate one compiled pattern against one event, exactly (array-consistent) — no index."""
# This is what `compile_pattern(p).matches(event)` runs, and what the multi-rule index uses to
# confirm candidates when an event holds arrays of objects (the only case where matching
# each field independently could disagree with AWS; see index.py).

from __future__ import annotations

from typing import Any

from bus.patterns.dotted import expand_event, has_dot
from bus.patterns.ops import field_accepts
from bus.patterns.parse import Alternative

# A node maps each key to [conditions on the scalars there, nested node for the objects there].
Node = dict[str, list]


def build_tree(alternative: Alternative) -> Node:
    root: Node = {}
    for path, conditions in alternative.items():
        node = root
        for key in path[:-1]:
            entry = node.setdefault(key, [None, None])
            if entry[1] is None:
                entry[1] = {}
            node = entry[1]
        node.setdefault(path[-1], [None, None])[0] = conditions
    return root


def scalars_of(value: Any) -> list:
    """The scalars a value offers to a leaf pattern: itself, or an array's, flattened."""
    if type(value) is list:
        out: list = []
        for element in value:
            if type(element) is list:
                out.extend(scalars_of(element))
            elif type(element) is not dict:
                out.append(element)
        return out
    return [] if type(value) is dict else [value]


def objects_of(value: Any) -> list:
    """The objects a value offers to a nested pattern: itself, or an array's, flattened."""
    if type(value) is dict:
        return [value]
    if type(value) is list:
        out: list = []
        for element in value:
            if type(element) is dict:
                out.append(element)
            elif type(element) is list:
                out.extend(objects_of(element))
        return out
    return []


_ABSENT = object()
_NO_OBJECT: list = [{}]


def node_matches(node: Node, obj: dict) -> bool:
    looked = False  # for dotted names (bus.patterns.dotted)
    for key, (conditions, child) in node.items():
        value = obj.get(key, _ABSENT)
        if conditions is not None:
            scalars = [] if value is _ABSENT else scalars_of(value)
            if not field_accepts(conditions, scalars):
                return False
        if child is not None:
            # A dotted name here (`key.x`) nests under `key`: it can change what a nested
            # pattern sees, never the scalars of a leaf (it adds an object, and objects offer
            # no scalars), so the object is checked for dots only on the way to a nested one.
            if not looked:
                looked = True
                if has_dot(obj):
                    obj = expand_event(obj)
                    value = obj.get(key, _ABSENT)
            # A nested pattern must be matched by one object as a whole. With no object
            # there, only absence conditions (exists:false) can still hold, so try {}.
            candidates = [] if value is _ABSENT else objects_of(value)
            if not any(node_matches(child, candidate) for candidate in candidates or _NO_OBJECT):
                return False
    return True


class PatternEvaluator:
    """A compiled pattern: its alternatives as trees."""

    __slots__ = ("alternatives", "trees")

    def __init__(self, alternatives: list[Alternative]) -> None:
        self.alternatives = alternatives
        self.trees = [build_tree(a) for a in alternatives]

    def matches(self, event: Any) -> bool:
        if type(event) is not dict:
            return False
        for tree in self.trees:
            if node_matches(tree, event):
                return True
        return False


