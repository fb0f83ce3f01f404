"""Schedule expressions (EventBridge ``cron()`` / ``rate()``, Scheduler ``at()``):
parse one, with its time zone and start/end window, and say when it next fires.

    >>> from datetime import datetime, UTC
    >>> s = parse_schedule("cron(0 9 ? * MON-FRI *)", timezone="Europe/Berlin")
    >>> s.next_after(datetime(2024, 7, 5, 12, 0, tzinfo=UTC))  # a Friday
    datetime.datetime(2024, 7, 8, 7, 0, tzinfo=datetime.timezone.utc)

Semantics follow EventBridge Scheduler: cron is evaluated on the wall clock of the
schedule's time zone; a wall time that daylight saving skips does not fire, and a
repeated wall time fires once (its first occurrence). ``rate(N days)`` means N x 24
hours. Fire times are whole minutes for cron, whole seconds for ``at()``, and are
returned in UTC. Cron syntax lives in bus.scheduler.cron, day arithmetic in
bus.scheduler.calendar.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bus.scheduler.calendar import FIRST_YEAR, LAST_YEAR, CronSpec
from bus.scheduler.cron import parse_cron
from bus.scheduler.errors import ScheduleError, invalid, invalid_expression

__all__ = ["Schedule", "ScheduleError", "parse_schedule"]

Kind = Literal["cron", "rate", "at"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICK = timedelta(microseconds=1)
# Cron fires only in years 1970-2199 of some zone's wall clock; two days of slack either
# side cover every UTC offset and keeps datetime arithmetic clear of its limits.
_CRON_FLOOR = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC) - timedelta(days=2)
_CRON_CEILING = datetime(LAST_YEAR + 1, 1, 1, tzinfo=UTC) + timedelta(days=2)


@dataclass(frozen=True)
class Schedule(ABC):
    """A parsed schedule. ``next_after`` is the one question it answers."""

    kind: ClassVar[Kind]
    expression: str
    timezone: str
    start: datetime | None  # first instant it may fire (inclusive), UTC
    end: datetime | None  # it fires only before this instant (exclusive), UTC

    def next_after(self, dt: datetime) -> datetime | None:
        """First fire time strictly after ``dt`` (aware), in UTC; None if there is none."""
        _require_aware(dt)
        after = dt.astimezone(UTC)
        if self.start is not None and after < self.start:
            after = self.start - _TICK  # so a fire exactly at start counts
        fire = self._next(after)
        if fire is None or (self.end is not None and fire >= self.end):
            return None
        return fire

    @abstractmethod
    def _next(self, after: datetime) -> datetime | None:
        """First fire time strictly after ``after`` (UTC), ignoring start and end."""


@dataclass(frozen=True)
class CronSchedule(Schedule):
    """cron(...): matching wall-clock minutes in the schedule's zone."""

    kind: ClassVar[Kind] = "cron"
    spec: CronSpec = field(repr=False, kw_only=True)
    zone: tzinfo = field(repr=False, kw_only=True)

    def _next(self, after: datetime) -> datetime | None:
        if after >= _CRON_CEILING:
            return None
        after = max(after, _CRON_FLOOR)
        for wall in self.spec.wall_times_after(_wall(after, self.zone)):
            instant = _instant(wall, self.zone)
            # None: DST skipped this wall time. <= after: only happens inside a repeated
            # (fall-back) hour, whose wall times already fired on their first pass.
            if instant is not None and instant > after:
                return instant
        return None


@dataclass(frozen=True)
class RateSchedule(Schedule):
    """rate(...): a fixed period of real time, counted from an anchor."""

    kind: ClassVar[Kind] = "rate"
    period: timedelta = field(kw_only=True)
    anchor: datetime = field(kw_only=True)  # fires at anchor + k * period, k >= 0

    def _next(self, after: datetime) -> datetime | None:
        if after < self.anchor:
            return self.anchor
        periods = (after - self.anchor) // self.period + 1
        try:
            return self.anchor + periods * self.period
        except OverflowError:
            return None


@dataclass(frozen=True)
class AtSchedule(Schedule):
    """at(...): one instant; start and end are always None (AWS ignores them)."""

    kind: ClassVar[Kind] = "at"
    fire_at: datetime = field(kw_only=True)

    def _next(self, after: datetime) -> datetime | None:
        return self.fire_at if self.fire_at > after else None


def parse_schedule(
    expr: str,
    *,
    timezone: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    anchor: datetime | None = None,
) -> Schedule:
    """Parse ``cron(...)``, ``rate(...)`` or ``at(...)``; raise ScheduleError if invalid.

    ``timezone`` is an IANA name (default UTC). ``start``/``end`` bound when a
    recurring schedule may fire; ``at()`` ignores them, as AWS does. ``anchor`` is
    where a ``rate()`` counts from (default the Unix epoch, so every replica agrees);
    a given ``start`` takes its place.
    """
    if not isinstance(expr, str):
        raise invalid_expression(f"expected a string, got {type(expr).__name__}")
    m = re.fullmatch(r"(cron|rate|at)\((.*)\)", expr.strip())
    if m is None:
        raise invalid_expression(
            f"'{expr}' is not cron(fields), rate(value unit) or at(yyyy-mm-ddThh:mm:ss)"
        )
    kind, body = m[1], m[2].strip()
    zone_name, zone = _zone(timezone)
    start = _window_edge("StartDate", start)
    end = _window_edge("EndDate", end)
    if start is not None and end is not None and end <= start:
        raise invalid("EndDate", f"{end.isoformat()} is not after StartDate {start.isoformat()}")
    common = dict(expression=expr.strip(), timezone=zone_name, start=start, end=end)
    if kind == "cron":
        return CronSchedule(**common, spec=parse_cron(body), zone=zone)
    if kind == "rate":
        period = _rate_period(body)
        anchor = _window_edge("anchor", anchor)
        return RateSchedule(**common, period=period, anchor=start or anchor or _EPOCH)
    common.update(start=None, end=None)  # AWS ignores StartDate/EndDate for at()
    return AtSchedule(**common, fire_at=_at_instant(body, zone_name, zone))


# --- rate() -------------------------------------------------------------------------------

_UNITS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def _rate_period(body: str) -> timedelta:
    parts = body.split()
    if len(parts) != 2:
        raise invalid_expression(f"rate needs 'value unit', e.g. rate(5 minutes), got 'rate({body})'")
    value_text, unit = parts
    if not re.fullmatch(r"[0-9]+", value_text) or int(value_text) < 1:
        raise invalid_expression(f"rate value '{value_text}' must be a positive whole number")
    if len(value_text) > 9:  # keeps N days within what timedelta can hold
        raise invalid_expression(f"rate value {value_text} is too large")
    value = int(value_text)
    singular = unit.removesuffix("s")
    if singular not in _UNITS:
        raise invalid_expression(f"rate unit '{unit}' must be minute(s), hour(s) or day(s)")
    # AWS: rate(1 hours) and rate(5 hour) are both invalid.
    if (value == 1) != (unit == singular):
        want = singular if value == 1 else singular + "s"
        raise invalid_expression(f"rate({value} {unit}) must say '{want}'")
    return value * _UNITS[singular]


# --- at() ---------------------------------------------------------------------------------

def _at_instant(body: str, zone_name: str, zone: tzinfo) -> datetime:
    m = re.fullmatch(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})", body)
    if m is None:
        raise invalid_expression(f"at needs yyyy-mm-ddThh:mm:ss, got 'at({body})'")
    try:
        wall = datetime(*(int(part) for part in m.groups()))
    except ValueError as exc:
        raise invalid_expression(f"at({body}) is not a real date and time: {exc}") from None
    instant = _instant(wall, zone)
    if instant is None:
        # Our choice: a one-time schedule that could never fire is a mistake worth
        # reporting rather than a silent no-op.
        raise invalid_expression(
            f"at({body}) does not exist in {zone_name}: daylight saving time skips it"
        )
    return instant


# --- time zones and instants --------------------------------------------------------------

def _zone(name: str | None) -> tuple[str, tzinfo]:
    if name is None:
        return "UTC", UTC
    try:
        return name, ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise invalid(
            "ScheduleExpressionTimezone", f"'{name}' is not an IANA time zone name"
        ) from None


def _window_edge(parameter: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise invalid(parameter, f"{value!r} must be a time-zone-aware datetime")
    return value.astimezone(UTC)


def _require_aware(dt: datetime) -> None:
    if not isinstance(dt, datetime) or dt.utcoffset() is None:
        raise ValueError(f"next_after needs a time-zone-aware datetime, got {dt!r}")


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    """The naive wall-clock reading of ``instant`` in ``zone``."""
    return instant.astimezone(zone).replace(tzinfo=None)


def _instant(wall: datetime, zone: tzinfo) -> datetime | None:
    """The UTC instant a wall-clock time names in ``zone``: the first one if the
    wall time happens twice (fall back), None if it never happens (spring forward)."""
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(instant, zone) != wall:
        return None
    return instant
