"""The EventBridge "Scheduled Event" a schedule rule emits for one scheduled time."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from bus import identity
from bus.config.model import Rule
from bus.events import format_time, new_event
from bus.identity import Identity


def scheduled_event(rule: Rule, at: datetime, who: Identity) -> dict[str, Any]:
    """`time` is the scheduled time, not when it was sent: a late firing says which one it is."""
    return new_event(who, "aws.events", "Scheduled Event", format_time(at.timestamp()),
                     [identity.rule_arn(who, rule.bus, rule.name)], {})
