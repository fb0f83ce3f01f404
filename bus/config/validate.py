"""The checks a rule must pass, however it arrives: from YAML (bus.config.rulesfile) or the AWS API.

Pure: a Rule (already the right shape, msgspec saw to that) and the names of the declared buses
in, a list of Problems out, in a fixed order. Each Problem names its check, where it is (a path
of YAML keys inside the rule, which rulesfile turns into `file:line: key: message`) and what is
wrong in YAML's words; the AWS API maps the check to AWS's exception and message instead.
"""
from __future__ import annotations

import re
from collections.abc import Collection
from typing import Literal

import msgspec

from bus.config.model import FUNCTION_REF, RULE_NAME, TARGET_ID, FunctionTarget, Rule, Target
from bus.patterns import PatternError, compile_pattern

MAX_TARGETS_PER_RULE = 5  # AWS's hard limit

Check = Literal[
    "type", "name", "bus", "event_pattern", "pattern_or_schedule", "schedule", "too_many_targets",
    "target_id_twice", "target_id", "function", "function_source", "retry_policy", "destination",
]
PathPart = str | int


class Problem(msgspec.Struct, frozen=True):
    check: Check
    path: tuple[PathPart, ...]  # inside the rule, as YAML spells it: ("targets", 0, "on_success")
    message: str
    key: str | None = None  # the key to name when it is not the path's last (the rule's name)
    target: int | None = None  # which target, for the API's per-target answers


def validate_rule(rule: Rule, buses: Collection[str]) -> list[Problem]:
    """Every problem with `rule` on a bus set of `buses`; [] if it may be loaded."""
    wrong_type = _check_types(rule)
    if wrong_type:  # the other checks assume the types are right
        return wrong_type
    out: list[Problem] = []
    if not isinstance(rule.name, str) or not RULE_NAME.match(rule.name):
        out.append(Problem("name", ("name",), f"invalid rule name {rule.name!r} (1-64 of A-Z a-z 0-9 . - _)"))
    if rule.bus not in buses:
        out.append(Problem("bus", ("bus",), _undeclared(rule.bus, buses)))
    if rule.event_pattern is not None:
        try:
            compile_pattern(rule.event_pattern)
        except PatternError as exc:
            out.append(Problem("event_pattern", ("event_pattern",), str(exc)))
    if (rule.event_pattern is None) == (rule.schedule is None):
        out.append(Problem("pattern_or_schedule", (), "a rule needs exactly one of event_pattern or schedule",
                           key=str(rule.name)))
    if rule.schedule is not None:
        out.extend(_check_schedule(rule))
    if len(rule.targets) > MAX_TARGETS_PER_RULE:
        out.append(Problem("too_many_targets", ("targets",), f"at most {MAX_TARGETS_PER_RULE} targets per rule"))
    seen: set[str] = set()
    for i, target in enumerate(rule.targets):
        if target.id in seen:
            out.append(Problem("target_id_twice", ("targets", i, "id"),
                               f"target id {target.id!r} is used twice in this rule", target=i))
        seen.add(target.id)
        out.extend(msgspec.structs.replace(p, path=("targets", i) + p.path, target=i)
                   for p in validate_target(target, buses))
    return out


def validate_target(target: Target, buses: Collection[str]) -> list[Problem]:
    """The problems of one target on its own; paths start at the target."""
    out: list[Problem] = []
    if not isinstance(target.id, str) or not TARGET_ID.match(target.id):
        out.append(Problem("target_id", ("id",), f"invalid target id {target.id!r}"))
    if isinstance(target, FunctionTarget) and not FUNCTION_REF.match(target.function):
        out.append(Problem("function", ("function",), f"{target.function!r} is not module.handler"))
    elif isinstance(target, FunctionTarget):
        from bus.config.function_refs import refusal  # never stdlib, an installed module, busway or a dunder
        if why := refusal(target.function):
            out.append(Problem("function_source", ("function",), why))
    out.extend(_check_retry(target))
    # A record sent to a bus that does not exist can never be routed: a broker would retry it forever.
    for key in ("on_success", "on_failure"):
        bus = getattr(target, key)
        if bus is not None and bus not in buses:
            out.append(Problem("destination", (key,), _undeclared(bus, buses)))
    return out


def _check_types(rule: Rule) -> list[Problem]:
    """A rule built in code (the AWS API builds one from a request) may hold a value of the wrong
    type; msgspec checks types only when it converts. Converting the rule's builtins back is what
    loading a stored rule does, so a rule passing this can be stored and loaded again."""
    builtins = msgspec.to_builtins(rule)
    targets = builtins.pop("targets", [])
    out = _type_problems(builtins, Rule, ())  # targets one by one: each as its own kind
    for i, (target, raw) in enumerate(zip(rule.targets, targets)):
        out.extend(msgspec.structs.replace(p, target=i) for p in _type_problems(raw, type(target), ("targets", i)))
    return out


def _type_problems(raw: object, type_: type, where: tuple[PathPart, ...]) -> list[Problem]:
    try:
        msgspec.convert(raw, type_)
    except (msgspec.ValidationError, TypeError) as exc:
        return [Problem("type", where + _error_path(str(exc)), str(exc))]
    return []


def _error_path(message: str) -> tuple[PathPart, ...]:
    """msgspec's `... - at `$.targets[0].id`` as a path: ("targets", 0, "id")."""
    at = message.rpartition("at `$")[2].rstrip("`")
    return tuple(int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", at))


def _check_retry(target: Target) -> list[Problem]:
    p = target.retry_policy
    out = []
    if not 0 <= p.maximum_retry_attempts <= 185:
        out.append(Problem("retry_policy", ("retry_policy", "maximum_retry_attempts"), "must be from 0 to 185"))
    if not 60 <= p.maximum_event_age_seconds <= 86400:
        out.append(Problem("retry_policy", ("retry_policy", "maximum_event_age_seconds"), "must be from 60 to 86400"))
    if p.backoff_base_seconds <= 0 or p.backoff_max_seconds < p.backoff_base_seconds:
        out.append(Problem("retry_policy", ("retry_policy",), "backoff_base_seconds must be > 0 and <= backoff_max_seconds"))
    return out


def _check_schedule(rule: Rule) -> list[Problem]:
    # Imported here: bus.scheduler imports the config model, and loading YAML needs no scheduler.
    from bus.scheduler.expression import ScheduleError
    from bus.scheduler.plan import schedule_of
    try:
        schedule_of(rule)
    except (ScheduleError, ValueError, KeyError, TypeError) as exc:
        return [Problem("schedule", ("schedule",), str(exc))]
    return []


def _undeclared(bus: str, buses: Collection[str]) -> str:
    return f"bus {bus!r} is not declared (declared: {', '.join(sorted(buses))})"
