"""What a target is, for metrics and `bus tail`: its kind and the thing it invokes.

Bounded values only: the kind is one of bus.config.model.TARGET_KINDS; what it invokes is a
declared function, API destination or bus name (one per target).
"""
from __future__ import annotations

from bus.config.model import BusTarget, FunctionTarget, HttpTarget, Target
from bus.observe import metrics
from bus.store.deliveries import TargetRecord


def target_kind(target: Target) -> str:
    """"function", "http" or "bus": the target's YAML key (its tag in the model's union)."""
    return type(target).__struct_config__.tag


def invokes(target: Target) -> str:
    """The function, the API destination or the bus the target sends its events to."""
    if isinstance(target, FunctionTarget):
        return target.function
    if isinstance(target, HttpTarget):
        return target.http
    if isinstance(target, BusTarget):
        return target.bus
    return ""


def describe(target: Target) -> str:
    """One word for people: `function orders.record`, `http crm-orders`, `bus audit`."""
    return f"{target_kind(target)} {invokes(target)}"


def update_target_info(records: list[TargetRecord]) -> None:
    """busway_target_info: one series per declared target, set at scrape time (targets that
    went away are dropped with the rest, so a changed target leaves no stale series)."""
    metrics.TARGET_INFO.clear()
    for record in records:
        metrics.TARGET_INFO.labels(record.key, target_kind(record.target), invokes(record.target)).set(1)
