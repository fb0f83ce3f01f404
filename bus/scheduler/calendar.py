"""Calendar arithmetic for parsed cron expressions: which days of a month match, and
the matching wall-clock minutes after a given wall-clock time, in order.

Everything here is naive wall-clock time; time zones and DST are the caller's job.
The search walks field by field (year, month, day, hour, minute) and never minute by
minute, so a schedule that fires once a year, or never, answers at once.

Days of the week use AWS numbering throughout: 1 = Sunday ... 7 = Saturday.
"""
from __future__ import annotations

import calendar
from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterator, Protocol, Sequence

FIRST_YEAR = 1970
LAST_YEAR = 2199
SATURDAY, SUNDAY = 7, 1


def aws_weekday(year: int, month: int, day: int) -> int:
    """AWS day-of-week number (1 = Sunday) of a date."""
    # calendar.weekday: Monday = 0 ... Sunday = 6.
    return (calendar.weekday(year, month, day) + 1) % 7 + 1


def month_length(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


class DayRule(Protocol):
    """The day-of-month / day-of-week half of a cron expression."""

    def days(self, year: int, month: int) -> Sequence[int]:
        """Matching days of that month, ascending."""
        ...


@dataclass(frozen=True)
class DaysOfMonth:
    """Plain day-of-month values (``1,15``, ``1-10``, ``*/2``); 31 skips short months."""

    values: frozenset[int]

    def days(self, year: int, month: int) -> Sequence[int]:
        return [d for d in range(1, month_length(year, month) + 1) if d in self.values]


@dataclass(frozen=True)
class LastDayOfMonth:
    """``L`` (offset 0) or Quartz's ``L-n``: n days before the month's last day."""

    offset: int = 0

    def days(self, year: int, month: int) -> Sequence[int]:
        day = month_length(year, month) - self.offset
        return [day] if day >= 1 else []


@dataclass(frozen=True)
class LastWeekdayOfMonth:
    """``LW``: the last Monday-to-Friday of the month."""

    def days(self, year: int, month: int) -> Sequence[int]:
        day = month_length(year, month)
        while aws_weekday(year, month, day) in (SATURDAY, SUNDAY):
            day -= 1
        return [day]


@dataclass(frozen=True)
class NearestWeekday:
    """``nW``: the weekday nearest day n, never leaving the month (Quartz rule).

    ``1W`` on a Saturday fires Monday the 3rd, not Friday of the month before; a
    Sunday that is the month's last day fires the Friday before. A month without
    day n (``31W`` in April) does not fire, like plain ``31``.
    """

    day: int

    def days(self, year: int, month: int) -> Sequence[int]:
        last = month_length(year, month)
        if self.day > last:
            return []
        weekday = aws_weekday(year, month, self.day)
        if weekday == SATURDAY:
            return [self.day + 2 if self.day == 1 else self.day - 1]
        if weekday == SUNDAY:
            return [self.day - 2 if self.day == last else self.day + 1]
        return [self.day]


@dataclass(frozen=True)
class DaysOfWeek:
    """Plain day-of-week values (``MON-FRI``, ``1,7``)."""

    weekdays: frozenset[int]

    def days(self, year: int, month: int) -> Sequence[int]:
        first = aws_weekday(year, month, 1)
        return [
            d
            for d in range(1, month_length(year, month) + 1)
            if (first - 1 + d - 1) % 7 + 1 in self.weekdays
        ]


@dataclass(frozen=True)
class LastDayOfWeek:
    """``nL``: the last such weekday of the month (``6L`` = last Friday)."""

    weekday: int

    def days(self, year: int, month: int) -> Sequence[int]:
        last = month_length(year, month)
        back = (aws_weekday(year, month, last) - self.weekday) % 7
        return [last - back]


@dataclass(frozen=True)
class NthDayOfWeek:
    """``n#k``: the k-th such weekday (``3#2`` = second Tuesday); none if no k-th."""

    weekday: int
    nth: int

    def days(self, year: int, month: int) -> Sequence[int]:
        first = 1 + (self.weekday - aws_weekday(year, month, 1)) % 7
        day = first + 7 * (self.nth - 1)
        return [day] if day <= month_length(year, month) else []


@dataclass(frozen=True)
class CronSpec:
    """A parsed cron expression: sorted allowed values per field, plus the day rule."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    day_rule: DayRule
    months: tuple[int, ...]
    years: tuple[int, ...]

    def wall_times_after(self, after: datetime) -> Iterator[datetime]:
        """Matching wall-clock minutes strictly after ``after`` (naive), ascending."""
        first = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for year in _from(self.years, first.year, True):
            on_year = year == first.year
            for month in _from(self.months, first.month, on_year):
                on_month = on_year and month == first.month
                for day in _from(self.day_rule.days(year, month), first.day, on_month):
                    on_day = on_month and day == first.day
                    for hour in _from(self.hours, first.hour, on_day):
                        on_hour = on_day and hour == first.hour
                        for minute in _from(self.minutes, first.minute, on_hour):
                            yield datetime(year, month, day, hour, minute)


def _from(values: Sequence[int], floor: int, pinned: bool) -> Sequence[int]:
    """The values not below ``floor`` while every larger field still equals the
    starting point's; once a larger field has moved on, every value counts."""
    return values[bisect_left(values, floor):] if pinned else values
