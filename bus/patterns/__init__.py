"""EventBridge event patterns: compile, validate and match (the public face of the bus.patterns modules).

    compile_pattern(p).matches(event)   one pattern, one event (p: dict or JSON text)
    Matcher().add(name, p) / .remove(name) / .matches(event) / .matches_json(raw)
                                        all the rules of a bus, compiled into one index
    PatternError                        invalid pattern; str(err) is AWS-style, err.path says where

Semantics follow AWS EventBridge (user guide: "Creating event patterns", "Content filtering
in Amazon EventBridge event patterns") and event-ruler, the engine behind it:
- parse: validation with AWS's messages, `$or` expansion and limits
- ops: the operators, one class each
- evaluate: exact evaluation of one pattern
- index: the shared automaton that makes many rules cost about as much as a few, built of
  fields (its states and per-field lookup tables), ordered by selectivity, run by walk
  (pure Python) or the compiled engine (_cengine.c, laid out by cbuild; engine says which)
- reference: a naive evaluator used as the yardstick in tests and benchmarks
"""
from __future__ import annotations

import json
from typing import Any

import msgspec

from bus.patterns.evaluate import PatternEvaluator
from bus.patterns.index import RuleIndex
from bus.patterns.parse import PatternError, parse_pattern

__all__ = ["CompiledPattern", "Matcher", "PatternError", "compile_pattern"]


class CompiledPattern(PatternEvaluator):
    """A validated pattern; `.matches(event)` says whether a decoded event matches it."""

    __slots__ = ()


def compile_pattern(pattern: dict | str | bytes) -> CompiledPattern:
    """Validate and compile an event pattern (a dict or its JSON text).

    Raises PatternError with an AWS-style message naming the offending field."""
    return CompiledPattern(parse_pattern(pattern))


_decode = msgspec.json.Decoder().decode


def decode_event(raw: bytes | str) -> Any:
    """Decode a JSON event. msgspec refuses numbers a double cannot hold (1e400), which
    are valid JSON; the standard library reads those as infinities, so fall back to it."""
    try:
        return _decode(raw)
    except msgspec.ValidationError:
        return json.loads(raw)


class Matcher:
    """The rules of one bus; answers which rule names an event matches.

    Rules can be added and removed at any time (a rule added under an existing name
    replaces it). Names come back in the order the rules were added."""

    def __init__(self) -> None:
        self._index = RuleIndex()

    def add(self, name: str, pattern: dict | str | bytes | CompiledPattern) -> None:
        compiled = pattern if isinstance(pattern, PatternEvaluator) else compile_pattern(pattern)
        self._index.add(name, compiled)

    def remove(self, name: str) -> None:
        """Forget a rule; unknown names are ignored."""
        self._index.remove(name)

    def matches(self, event: dict) -> list[str]:
        return self._index.match(event)

    def matches_json(self, raw: bytes | str) -> list[str]:
        """Decode a JSON event and match it. Raises a ValueError (msgspec.DecodeError) on bad JSON."""
        return self._index.match(decode_event(raw))

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, name: object) -> bool:
        return name in self._index
