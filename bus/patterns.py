"""EventBridge event patterns: compile, validate and match.

Placeholder with exact-value matching only; issue 3 replaces the internals with the full
language. The public names (compile_pattern, PatternError, Matcher) are stable.
"""
from __future__ import annotations

from typing import Any

import msgspec


class PatternError(ValueError):
    """An invalid event pattern; the message says what and where."""


class CompiledPattern:
    def __init__(self, pattern: dict):
        self._pattern = pattern

    def matches(self, event: dict) -> bool:
        return _match_obj(self._pattern, event)


def _match_obj(pattern: dict, event: Any) -> bool:
    if not isinstance(event, dict):
        return False
    for key, want in pattern.items():
        if key not in event:
            return False
        if isinstance(want, dict):
            if not _match_obj(want, event[key]):
                return False
            continue
        got = event[key]
        values = got if isinstance(got, list) else [got]
        if not any(v in want for v in values):
            return False
    return True


def _check(pattern: Any, path: str) -> None:
    if not isinstance(pattern, dict):
        raise PatternError(f"Event pattern is not a JSON object at {path or 'top level'}.")
    for key, value in pattern.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            _check(value, where)
        elif not isinstance(value, list):
            raise PatternError(f"Match value must be String, number, true, false, or null at {where}.")


def compile_pattern(pattern: dict | str | bytes) -> CompiledPattern:
    if isinstance(pattern, (str, bytes)):
        try:
            pattern = msgspec.json.decode(pattern)
        except msgspec.DecodeError as exc:
            raise PatternError(f"Event pattern is not valid JSON: {exc}") from None
    _check(pattern, "")
    return CompiledPattern(pattern)


class Matcher:
    """The rules of one bus; answers which rule names an event matches."""

    def __init__(self) -> None:
        self._rules: dict[str, CompiledPattern] = {}

    def add(self, name: str, pattern: dict | str | bytes) -> None:
        self._rules[name] = compile_pattern(pattern)

    def remove(self, name: str) -> None:
        self._rules.pop(name, None)

    def matches(self, event: dict) -> list[str]:
        return [name for name, p in self._rules.items() if p.matches(event)]

    def matches_json(self, raw: bytes | str) -> list[str]:
        return self.matches(msgspec.json.decode(raw))
