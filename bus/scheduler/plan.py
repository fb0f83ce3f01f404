"""Which scheduled times to fire now: pure functions of a rule's schedule, how far it has got
(its cursor), the clock and its catch-up policy. No Redis, no I/O.

A time is *on time* if it came due within `grace` seconds of now: it always fires, whatever
the policy (a failover gap of a few seconds is not downtime). Older due times were *missed*
(downtime); `catch_up` says which of them still fire:

    none    none of them
    latest  only the most recent due time (on time or not); everything before it is missed
    all     every missed time, the most recent `limit` of them; older ones are missed
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo

from bus.config.model import Rule
from bus.scheduler.expression import Schedule, parse_schedule

CatchUp = Literal["none", "latest", "all"]

SCAN_LIMIT = 1000  # due times looked at per call: a year of rate(1 minute) must not block the loop


@dataclass(frozen=True)
class Plan:
    """What to do for one rule now. Everything up to `cursor` is dealt with afterwards."""

    fire: list[datetime] = field(default_factory=list)  # oldest first
    missed: list[datetime] = field(default_factory=list)
    cursor: datetime | None = None  # None: nothing was due, the cursor stays
    more: bool = False  # the scan stopped at SCAN_LIMIT: plan again at once


def plan_firings(
    schedule: Schedule, cursor: datetime, now: datetime, *,
    catch_up: CatchUp, grace: float, limit: int, scan_limit: int = SCAN_LIMIT,
) -> Plan:
    """The times after `cursor` and up to `now` to fire, and those to count as missed."""
    if scan_limit <= limit:
        raise ValueError("scan_limit must be above the catch-up limit")
    due = _due_times(schedule, cursor, now, scan_limit + 1)
    if not due:
        return Plan()
    if len(due) > scan_limit:
        return _partial(due[:scan_limit], _keep(catch_up, limit))
    late_before = now - timedelta(seconds=grace)
    late = [t for t in due if t < late_before]
    on_time = due[len(late):]
    fire = _choose(late, on_time, catch_up, limit)
    missed = [t for t in due if t < fire[0]] if fire else due
    return Plan(fire=fire, missed=missed, cursor=due[-1])


def _choose(late: list[datetime], on_time: list[datetime], catch_up: CatchUp, limit: int) -> list[datetime]:
    if catch_up == "none":
        return on_time
    if catch_up == "latest":
        return (late + on_time)[-1:]
    return late[-limit:] + on_time if limit else on_time


def _partial(scanned: list[datetime], keep: int) -> Plan:
    """More is due than one scan looks at: all but the last `keep` scanned times are certainly
    missed (later due times exist); the kept ones are scanned again next call, when it is
    known whether they are among the ones that fire."""
    missed = scanned[: len(scanned) - keep]
    return Plan(missed=missed, cursor=missed[-1], more=True)


def _keep(catch_up: CatchUp, limit: int) -> int:
    return {"none": 0, "latest": 1, "all": limit}[catch_up]


def _due_times(schedule: Schedule, cursor: datetime, now: datetime, at_most: int) -> list[datetime]:
    out: list[datetime] = []
    t = schedule.next_after(cursor)
    while t is not None and t <= now and len(out) < at_most:
        out.append(t)
        t = schedule.next_after(t)
    return out


# --- a rule's schedule ---------------------------------------------------------------------

def signature(rule: Rule) -> str:
    """What defines a rule's fire times. Progress recorded under another signature is stale:
    an edited schedule starts over from now instead of catching up on the old one's times."""
    return "|".join([rule.schedule or "", rule.timezone or "", rule.start or "", rule.end or ""])


def schedule_of(rule: Rule) -> Schedule:
    """The parsed schedule of a schedule rule; raise ScheduleError or ValueError if invalid."""
    return _parse(rule.schedule or "", rule.timezone, rule.start, rule.end)


@functools.lru_cache(maxsize=1024)  # rules are re-read every tick; parsing cron is not free
def _parse(expr: str, timezone: str | None, start: str | None, end: str | None) -> Schedule:
    zone: tzinfo = ZoneInfo(timezone) if timezone else UTC
    return parse_schedule(expr, timezone=timezone, start=_instant(start, zone), end=_instant(end, zone))


def _instant(text: str | None, zone: tzinfo) -> datetime | None:
    """An ISO 8601 start/end; one without an offset is read in the rule's time zone."""
    if text is None:
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.utcoffset() is not None else dt.replace(tzinfo=zone)
