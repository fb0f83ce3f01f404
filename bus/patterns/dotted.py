"""Dotted field names: AWS joins nested names with `.`, so `{"a.b": 1}` and `{"a": {"b": 1}}` are one field.

EventBridge's "Considerations when creating event patterns": as it compiles patterns it uses
the dot as its joining character, so an event field named `a.b` is the pattern's `a: {b: ...}`
and a pattern key `c.d` is the event's `c: {d: ...}`. Patterns are split once, when parsed
(bus.patterns.parse.field_path). Events are rewritten here, only when a walk found a dotted
name on a path some rule mentions (rare), so that every engine and yardstick sees one shape:

- `expand_event`: each dotted key becomes nested objects, merged with what is there. Two
  objects at one name merge; anything else that meets at one name becomes an array of both
  (a field that has two values, as when event-ruler flattens both to one joined name).
- `expand_pattern`: the same for a raw pattern (the reference evaluator reads raw patterns),
  except that a leaf written twice keeps the last write, as AWS does for a repeated field.

Limits (not AWS's: guards against hostile input): a name of more than MAX_SEGMENTS segments
can never be a pattern's path (parse refuses those) and is left as it is; below MAX_NESTING
levels an event is left as it is.
"""
from __future__ import annotations

from typing import Any

from bus.patterns.syntax import MAX_DEPTH

MAX_SEGMENTS = MAX_DEPTH + 1  # = parse.MAX_PATH: no pattern path is longer
MAX_NESTING = 2 * MAX_DEPTH + 16  # objects and arrays; a pattern path is at most MAX_DEPTH objects
_MISSING = object()


def expand_event(value: Any, depth: int = 0) -> Any:
    """`value` with every dotted name nested (the same object when it has none)."""
    t = type(value)
    if depth > MAX_NESTING or (t is not dict and t is not list):
        return value
    if t is list:
        items = [expand_event(v, depth + 1) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else items
    changed = False
    out: dict = {}
    for key, v in value.items():
        expanded = expand_event(v, depth + 1)
        changed = changed or expanded is not v
        if type(key) is str and "." in key and key.count(".") < MAX_SEGMENTS:
            changed = True
            first, nested = _nest(key, expanded)
            _merge(out, first, nested, _as_both)
        else:
            _merge(out, key, expanded, _as_both)
    return out if changed else value


def expand_pattern(pattern: Any) -> Any:
    """A raw pattern with its dotted names nested (leaves written twice: the last wins)."""
    if type(pattern) is list:
        return [expand_pattern(v) for v in pattern]
    if type(pattern) is not dict:
        return pattern
    out: dict = {}
    for key, v in pattern.items():
        v = expand_pattern(v)
        if type(key) is str and "." in key:
            key, v = _nest(key, v)
        _merge(out, key, v, _last)
    return out


def _nest(key: str, value: Any) -> tuple[str, Any]:
    first, *rest = key.split(".")
    for segment in reversed(rest):
        value = {segment: value}
    return first, value


def _merge(node: dict, key: str, value: Any, clash) -> None:
    old = node.get(key, _MISSING)
    if old is _MISSING:
        node[key] = value
    elif type(old) is dict and type(value) is dict:
        merged = dict(old)  # never mutate the caller's event
        for k, v in value.items():
            _merge(merged, k, v, clash)
        node[key] = merged
    else:
        node[key] = clash(old, value)


def _as_both(old: Any, new: Any) -> list:
    return (list(old) if type(old) is list else [old]) + (new if type(new) is list else [new])


def _last(old: Any, new: Any) -> Any:
    return new


def has_dot(obj: dict) -> bool:
    """Whether some key of `obj` has a dot in it (one join and one search: the walk asks this
    of every object it visits above a nested path)."""
    try:
        return "." in "".join(obj)
    except TypeError:  # a key that is no string (a dict built in Python, not decoded JSON)
        return any(type(k) is str and "." in k for k in obj)


def dotted_at(obj: dict, kids: list) -> bool:
    """Whether a key of `obj` with a dot in it names a path of the key trie below `kids`
    ((key, node) pairs, bus.patterns.walk.PathNode): the walk must see the event expanded."""
    for key in obj:
        if type(key) is not str or "." not in key:
            continue
        level = kids
        for segment in key.split("."):
            for name, node in level:
                if name == segment:
                    level = node.kids
                    break
            else:
                break
        else:
            return True
    return False
