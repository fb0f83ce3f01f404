"""The declared world: buses, rules, targets and function settings, as typed msgspec Structs.

These are validated once at the YAML boundary (bus.config.rulesfile) and trusted everywhere else.
"""
from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

RULE_NAME = re.compile(r"^[.\-_A-Za-z0-9]{1,64}$")
BUS_NAME = re.compile(r"^[/.\-_A-Za-z0-9]{1,256}$")
TARGET_ID = re.compile(r"^[.\-_A-Za-z0-9]{1,64}$")
FUNCTION_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

DEFAULT_BUS = "default"


class RetryPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """EventBridge's target retry policy, with AWS's defaults and bounds."""

    maximum_retry_attempts: int = 185
    maximum_event_age_seconds: int = 86400
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0


class _TargetBase(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, tag_field="kind"):
    """What every target kind has: an id, EventBridge's retry policy, a DLQ and destinations."""

    id: str
    retry_policy: RetryPolicy = RetryPolicy()
    dead_letter: bool | str = False
    on_success: str | None = None
    on_failure: str | None = None


class FunctionTarget(_TargetBase, frozen=True, tag="function"):
    """A Python handler (`module.handler` in the functions directory), run by a worker."""

    function: str


# The target kinds, a tagged union on `kind`. A new kind is one Struct here (its YAML key is its
# tag) plus one invoker in bus.worker.invokers. YAML names the kind by its key (`function: ...`),
# so the loader fills `kind` in (see with_kind) before converting.
Target = FunctionTarget
TARGET_KINDS: dict[str, type] = {"function": FunctionTarget}


def with_kind(raw: Any) -> Any:
    """A target as written in YAML or stored by an older busway: add `kind` from its kind's key."""
    if isinstance(raw, dict) and "kind" not in raw:
        for kind in TARGET_KINDS:
            if kind in raw:
                return {"kind": kind, **raw}
    return raw


class Rule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A pattern rule (event_pattern) or a schedule rule (schedule) on one bus."""

    name: str
    targets: list[Target] = []
    bus: str = DEFAULT_BUS
    description: str = ""
    state: Literal["ENABLED", "DISABLED"] = "ENABLED"
    event_pattern: dict[str, Any] | None = None
    schedule: str | None = None
    timezone: str | None = None
    start: str | None = None
    end: str | None = None
    catch_up: Literal["none", "latest", "all"] = "latest"


class Bus(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    description: str = ""


class FunctionSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Lambda-like function configuration, keyed by `module.handler`."""

    timeout: float = 3.0
    reserved_concurrency: int | None = None
    memory_limit_in_mb: int = 128


class RulesFile(msgspec.Struct, forbid_unknown_fields=True):
    """One YAML file's top level; every key is optional."""

    buses: list[Any] = []
    rules: list[Any] = []
    functions: dict[str, Any] = {}


class Config(msgspec.Struct):
    """Everything loaded from a rules directory, merged."""

    buses: dict[str, Bus]
    rules: dict[tuple[str, str], Rule]  # (bus, rule name) -> rule
    functions: dict[str, FunctionSettings]

    def function(self, ref: str) -> FunctionSettings:
        return self.functions.get(ref) or FunctionSettings()


def empty_config() -> Config:
    return Config(buses={DEFAULT_BUS: Bus(DEFAULT_BUS)}, rules={}, functions={})
