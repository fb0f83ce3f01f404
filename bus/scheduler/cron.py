"""Parse the inside of AWS ``cron(...)`` (six fields) into a CronSpec, or say exactly
which field is wrong.

Syntax follows the EventBridge cron reference (fields, ranges, wildcards, the
"one of day-of-month / day-of-week must be ?" rule, one ``#`` per field) and, where
AWS is silent, Quartz, whose syntax AWS inherits (``L`` alone in day-of-week is
Saturday, ``LW``, ``L-n``, wrap-around ranges such as ``FRI-MON``, names in any case).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from bus.scheduler.calendar import (
    FIRST_YEAR,
    LAST_YEAR,
    CronSpec,
    DayRule,
    DaysOfMonth,
    DaysOfWeek,
    LastDayOfMonth,
    LastDayOfWeek,
    LastWeekdayOfMonth,
    NearestWeekday,
    NthDayOfWeek,
)
from bus.scheduler.errors import ScheduleError, invalid_expression

_MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
_DAYS = "SUN MON TUE WED THU FRI SAT".split()
_NUMBER = re.compile(r"[0-9]{1,6}")  # more digits can only be out of range


@dataclass(frozen=True)
class _Field:
    name: str
    lo: int
    hi: int
    what: str  # how a value is described in errors
    names: dict[str, int] = field(default_factory=dict)

    @property
    def span(self) -> int:
        return self.hi - self.lo + 1


MINUTES = _Field("minutes", 0, 59, "minute (0-59)")
HOURS = _Field("hours", 0, 23, "hour (0-23)")
DAY_OF_MONTH = _Field("day-of-month", 1, 31, "day of month (1-31)")
MONTH = _Field("month", 1, 12, "month (1-12 or JAN-DEC)", {n: i + 1 for i, n in enumerate(_MONTHS)})
DAY_OF_WEEK = _Field("day-of-week", 1, 7, "day of week (1-7 or SUN-SAT)", {n: i + 1 for i, n in enumerate(_DAYS)})
YEAR = _Field("year", FIRST_YEAR, LAST_YEAR, f"year ({FIRST_YEAR}-{LAST_YEAR})")

_FIELD_ORDER = "minutes hours day-of-month month day-of-week year"


def parse_cron(body: str) -> CronSpec:
    """CronSpec for the text between ``cron(`` and ``)``."""
    parts = body.split()
    if len(parts) != 6:
        raise invalid_expression(
            f"cron needs 6 fields ({_FIELD_ORDER}), got {len(parts)} in 'cron({body})'"
        )
    minutes, hours, dom, month, dow, year = parts
    return CronSpec(
        minutes=_values(MINUTES, minutes),
        hours=_values(HOURS, hours),
        day_rule=_day_rule(dom, dow),
        months=_values(MONTH, month),
        years=_values(YEAR, year),
    )


def _fail(f: _Field, text: str, problem: str) -> ScheduleError:
    return invalid_expression(f"cron {f.name} field '{text}': {problem}")


# --- plain fields: lists of *, a, a-b, with optional /step ------------------------------

def _values(f: _Field, text: str) -> tuple[int, ...]:
    """Sorted values of a field made of comma-separated items."""
    for special in "?LW#":
        # Names (WED, JUL) contain W and L; a stray L or W there fails as a bad name.
        if special in text.upper() and not (special in "LW" and f.names):
            raise _fail(f, text, f"'{special}' is not allowed in the {f.name} field")
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _fail(f, text, "empty item in the list")
        values |= _item(f, text, item)
    return tuple(sorted(values))


def _item(f: _Field, text: str, item: str) -> set[int]:
    base, slash, step_text = item.partition("/")
    step = _step(f, text, step_text) if slash else 1
    if base == "*":
        return set(range(f.lo, f.hi + 1, step))
    start_text, dash, end_text = base.partition("-")
    start = _number(f, text, start_text)
    if dash:
        end = _number(f, text, end_text)
    else:
        # Quartz: "a/step" runs from a to the field's maximum; a bare "a" is just a.
        end = f.hi if slash else start
    return _range(f, text, start, end, step)


def _range(f: _Field, text: str, start: int, end: int, step: int) -> set[int]:
    if end < start:
        if f is YEAR:
            raise _fail(f, text, f"range {start}-{end} runs backwards")
        end += f.span  # wrap around, as Quartz does: FRI-MON, 22-2, NOV-FEB
    return {f.lo + (v - f.lo) % f.span for v in range(start, end + 1, step)}


def _step(f: _Field, text: str, step_text: str) -> int:
    if not _NUMBER.fullmatch(step_text) or not 1 <= int(step_text) <= f.span:
        raise _fail(f, text, f"step '{step_text}' must be a whole number from 1 to {f.span}")
    return int(step_text)


def _number(f: _Field, text: str, token: str) -> int:
    if _NUMBER.fullmatch(token):
        value = int(token)
    elif token.upper() in f.names:
        value = f.names[token.upper()]
    else:
        raise _fail(f, text, f"'{token}' is not a {f.what}")
    if not f.lo <= value <= f.hi:
        raise _fail(f, text, f"{token} is out of range; expected a {f.what}")
    return value


# --- the day fields: exactly one is '?', the other may use L, W, # ----------------------

def _day_rule(dom: str, dow: str) -> DayRule:
    for f, text in ((DAY_OF_MONTH, dom), (DAY_OF_WEEK, dow)):
        if "?" in text and text != "?":
            raise _fail(f, text, "'?' must be the whole field, not part of a list or range")
    if (dom == "?") == (dow == "?"):
        raise invalid_expression(
            f"cron day-of-month '{dom}' and day-of-week '{dow}': exactly one of the "
            "two must be '?' (AWS cannot combine a day-of-month with a day-of-week)"
        )
    return _dow_rule(dow) if dom == "?" else _dom_rule(dom)


_LAST_OFFSET = re.compile(r"L-([0-9]{1,6})")
_NEAREST = re.compile(r"([0-9]{1,6})W")


def _dom_rule(text: str) -> DayRule:
    upper = text.upper()
    if upper == "L":
        return LastDayOfMonth()
    if upper == "LW":
        return LastWeekdayOfMonth()
    if m := _LAST_OFFSET.fullmatch(upper):
        offset = int(m[1])
        if not 1 <= offset <= 30:
            raise _fail(DAY_OF_MONTH, text, "the offset in 'L-n' must be from 1 to 30")
        return LastDayOfMonth(offset)
    if m := _NEAREST.fullmatch(upper):
        return NearestWeekday(_number(DAY_OF_MONTH, text, m[1]))
    if "L" in upper or "W" in upper:
        raise _fail(
            DAY_OF_MONTH, text,
            "'L' and 'W' must stand alone, as L, LW, L-n or nW (e.g. 15W), "
            "not in a list or range",
        )
    return DaysOfMonth(frozenset(_values(DAY_OF_MONTH, text)))


_LAST_OF = re.compile(r"([0-9]{1,6}|[A-Z]{3})L")


def _dow_rule(text: str) -> DayRule:
    upper = text.upper()
    if upper == "L":
        return DaysOfWeek(frozenset({7}))  # Quartz: L alone is the week's last day, SAT
    if "/" in upper:
        raise _fail(DAY_OF_WEEK, text, "'/' is not allowed in the day-of-week field")
    if "#" in upper:
        return _nth_rule(text)
    if m := _LAST_OF.fullmatch(upper):
        return LastDayOfWeek(_number(DAY_OF_WEEK, text, m[1]))
    if re.search(r"(^|[^A-Z])L|L($|[^A-Z])", upper):  # an L that is not inside a name
        raise _fail(
            DAY_OF_WEEK, text,
            "'L' must stand alone, as L or nL (e.g. 5L or THUL), not in a list or range",
        )
    return DaysOfWeek(frozenset(_values(DAY_OF_WEEK, text)))


def _nth_rule(text: str) -> DayRule:
    if "," in text or text.count("#") > 1:
        raise _fail(
            DAY_OF_WEEK, text,
            "with '#' the field can hold only one expression (e.g. 3#2, not 3#1,6#3)",
        )
    day_text, _, nth_text = text.partition("#")
    weekday = _number(DAY_OF_WEEK, text, day_text)
    if not _NUMBER.fullmatch(nth_text) or not 1 <= int(nth_text) <= 5:
        raise _fail(DAY_OF_WEEK, text, f"'#{nth_text}' must name the 1st to 5th weekday (#1-#5)")
    return NthDayOfWeek(weekday, int(nth_text))
