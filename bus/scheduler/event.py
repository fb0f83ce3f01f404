"""The EventBridge "Scheduled Event" a schedule rule emits for one scheduled time."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from bus.broker.envelope import format_time
from bus.ids import new_id
from bus.config.model import DEFAULT_BUS, Rule


def rule_arn(rule: Rule, region: str, account: str) -> str:
    """AWS's rule ARN: rule/<name> on the default bus, rule/<bus>/<name> elsewhere."""
    path = rule.name if rule.bus == DEFAULT_BUS else f"{rule.bus}/{rule.name}"
    return f"arn:aws:events:{region}:{account}:rule/{path}"


def scheduled_event(rule: Rule, at: datetime, *, region: str, account: str) -> dict[str, Any]:
    """`time` is the scheduled time, not when it was sent: a late firing says which one it is."""
    return {
        "version": "0",
        "id": new_id(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": format_time(at.timestamp()),
        "region": region,
        "resources": [rule_arn(rule, region, account)],
        "detail": {},
    }
