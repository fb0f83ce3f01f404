"""EventBridge's JSONPath subset: compile once, then find values in decoded events.

AWS supports "dot notation, dashes, underscores, alphanumeric characters, array indices,
wildcards (*) and forward slashes", and requires dot notation, not bracket notation
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-transform-target-input.html).
So a path is `$` followed by steps, each one of:

    .name      a member; name is letters, digits, `_`, `-` and `/` (`$.detail.instance-id`)
    .*         every member of an object, or every element of an array
    [3]        an array element (no negative indices: AWS documents none)
    [*]        every element of an array, or every member of an object

Anything else (`$..deep`, `$['name']`, filters, slices, spaces) is a PathError naming what and
where, so `bus validate` can say it before any event arrives. Paths are at most 256 characters,
AWS's limit for InputPath and for each InputPathsMap value.
"""
from __future__ import annotations

import re
from typing import Any

MAX_PATH_CHARS = 256

_NAME = re.compile(r"[\w/-]+")  # \w: letters, digits and `_` (Unicode letters too: event keys may have them)
_INDEX = re.compile(r"\[(\d+)\]")

# One step of a compiled path. A member name or an index; WILD matches every child.
WILD = object()


class PathError(ValueError):
    """A path EventBridge would not accept; the message says what is wrong and where."""


class Path:
    """A compiled path. `find` returns every match in document order ([] when there is none)."""

    __slots__ = ("text", "steps", "definite")

    def __init__(self, text: str, steps: tuple[Any, ...]):
        self.text = text
        self.steps = steps  # str: a member, int: an index, WILD: every child
        self.definite = WILD not in steps  # at most one match: no wildcard

    def find(self, doc: Any) -> list[Any]:
        if self.definite:
            found = _walk(doc, self.steps)
            return [] if found is _NOTHING else [found]
        matches = [doc]
        for step in self.steps:
            matches = [child for node in matches for child in _children(node, step)]
            if not matches:
                break
        return matches

    def get(self, doc: Any, default: Any) -> Any:
        """A variable's value: the match of a definite path, the list of matches of a wildcard
        path; `default` when nothing matches."""
        if not self.definite:
            return self.find(doc) or default
        node = _walk(doc, self.steps)
        return default if node is _NOTHING else node

    def __repr__(self) -> str:
        return f"Path({self.text!r})"


_NOTHING = object()


def _walk(doc: Any, steps: tuple[Any, ...]) -> Any:
    """The one match of a definite path, or _NOTHING."""
    node = doc
    for step in steps:
        if type(step) is str:
            if type(node) is not dict:
                return _NOTHING
            node = node.get(step, _NOTHING)
            if node is _NOTHING:
                return _NOTHING
        elif type(node) is list and step < len(node):
            node = node[step]
        else:
            return _NOTHING
    return node


def _children(node: Any, step: Any) -> list[Any]:
    if step is WILD:
        if type(node) is dict:
            return list(node.values())
        return list(node) if type(node) is list else []
    if type(step) is str:
        if type(node) is dict and step in node:
            return [node[step]]
        return []
    return [node[step]] if type(node) is list and step < len(node) else []


def compile_path(text: str) -> Path:
    """`text` as a Path, or a PathError saying why EventBridge would refuse it."""
    if not isinstance(text, str):
        raise PathError(f"a JSONPath is text, not {type(text).__name__}")
    if len(text) > MAX_PATH_CHARS:
        raise PathError(f"a JSONPath is at most {MAX_PATH_CHARS} characters (this one has {len(text)})")
    if not text.startswith("$"):
        raise PathError(f"JSONPath {text!r} must start with $ (for example $.detail)")
    steps: list[Any] = []
    at = 1
    while at < len(text):
        step, at = _step(text, at)
        steps.append(step)
    return Path(text, tuple(steps))


def _step(text: str, at: int) -> tuple[Any, int]:
    """The step starting at `at` and where the next one starts."""
    char = text[at]
    if char == ".":
        rest = text[at + 1:]
        if rest.startswith("*"):
            return WILD, at + 2
        if rest.startswith("."):
            raise PathError(_where(text, at, "deep scan (..) is not supported; name each level"))
        name = _NAME.match(text, at + 1)
        if name is None:
            raise PathError(_where(text, at + 1, "expected a member name (letters, digits, _ - /) or * after ."))
        return name.group(), name.end()
    if char == "[":
        if text.startswith("[*]", at):
            return WILD, at + 3
        index = _INDEX.match(text, at)
        if index is None:
            raise PathError(_where(text, at, "brackets hold an array index ([0]) or [*]; use dot notation for names"))
        return int(index.group(1)), index.end()
    raise PathError(_where(text, at, f"unexpected {char!r}; steps are .name, .*, [index] or [*]"))


def _where(text: str, at: int, message: str) -> str:
    return f"JSONPath {text!r} at character {at + 1}: {message}"
