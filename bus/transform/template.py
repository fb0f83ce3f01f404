"""An InputTemplate, read once: literal parts and placeholders, each knowing where it stands.

A placeholder is `<name>`: no spaces or angle brackets inside (AWS cannot escape `<` and `>`;
`a < b` with spaces is plain text). The template is scanned like JSON (strings, with their
`\\` escapes) to know whether each placeholder stands as a bare value or inside a string. It
is a JSON template if it parses as JSON with every placeholder replaced by a value (bare:
`null`; in a string: a letter); it is then sent minified, as AWS sends it. Otherwise it is
text, sent as written with the values put in (AWS's API reference shows such a template:
`<instance> is in state <status>`).
"""
from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

import msgspec

from bus.transform.values import IN_STRING, RENDER, TEXT, VALUE

PLACEHOLDER = re.compile(r"<([^<>\s]+)>")
_SPACE = " \t\n\r"


class Occurrence(NamedTuple):
    name: str
    context: str  # VALUE, IN_STRING or TEXT
    is_key: bool  # stands where an object key is (a bare placeholder or a string before `:`)


class Template(NamedTuple):
    """A compiled template: literal bytes around placeholders; render() fills them."""

    is_json: bool
    first: bytes
    slots: tuple[tuple[str, Callable[[Any], bytes], bytes], ...]  # (name, render, literal after)
    occurrences: tuple[Occurrence, ...]
    starts_object: bool  # "If InputTemplate is a JSON object (surrounded by curly braces)"

    @property
    def names(self) -> frozenset[str]:
        return frozenset(o.name for o in self.occurrences)

    def render(self, values: dict[str, Any], missing: Any) -> bytes:
        parts = [self.first]
        for name, render, after in self.slots:
            parts.append(render(values.get(name, missing)))
            parts.append(after)
        return b"".join(parts)


def compile_template(text: str) -> Template:
    pieces = PLACEHOLDER.split(text)  # literal, name, literal, name, ..., literal
    minified, occurrences = _scan(pieces)
    is_json = _parses(minified, occurrences)
    if is_json:
        literals = minified
    else:
        literals = pieces[0::2]
        occurrences = [o._replace(context=TEXT) for o in occurrences]
    slots = tuple((o.name, RENDER[o.context], literal.encode())
                  for o, literal in zip(occurrences, literals[1:]))
    return Template(is_json, literals[0].encode(), slots, tuple(occurrences), text.lstrip(_SPACE).startswith("{"))


def _scan(pieces: list[str]) -> tuple[list[str], list[Occurrence]]:
    """The literal pieces minified (no white space outside strings) and each placeholder's place.

    One pass over the template as JSON text; a placeholder does not change the state, as its
    value is written to fit where it stands."""
    in_string = escaped = False
    literals: list[str] = []
    found: list[list[Any]] = []  # [name, in_string, is_key]
    in_this_string: list[int] = []  # placeholders inside the string being read
    awaiting: list[int] = []  # placeholders that are keys if the next thing outside a string is `:`
    for i, piece in enumerate(pieces):
        if i % 2:
            found.append([piece, in_string, False])
            if in_string:
                in_this_string.append(len(found) - 1)
            else:
                awaiting = [len(found) - 1]
            continue
        kept: list[str] = []
        for char in piece:
            if in_string:
                kept.append(char)
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string, awaiting, in_this_string = False, in_this_string, []
                continue
            if char in _SPACE:
                continue
            for k in awaiting if char == ":" else ():
                found[k][2] = True
            awaiting = []
            kept.append(char)
            if char == '"':
                in_string = True
        literals.append("".join(kept))
    return literals, [Occurrence(name, IN_STRING if inside else VALUE, key) for name, inside, key in found]


def _parses(literals: list[str], occurrences: list[Occurrence]) -> bool:
    probe = [literals[0]]
    for o, literal in zip(occurrences, literals[1:]):
        probe.append("x" if o.context == IN_STRING else "null")
        probe.append(literal)
    try:
        msgspec.json.decode("".join(probe).encode())
    except msgspec.DecodeError:
        return False
    return True
