"""cron() expressions in UTC: every syntax element, month ends, leap years, the year
range, and the errors invalid expressions give. (DST lives in test_schedule_dst.py.)"""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bus.scheduler.expression import ScheduleError, parse_schedule


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def next_fire(expr: str, after: datetime) -> datetime | None:
    return parse_schedule(expr).next_after(after)


def fires(expr: str, after: datetime, count: int) -> list[datetime]:
    schedule, out = parse_schedule(expr), []
    for _ in range(count):
        after = schedule.next_after(after)
        out.append(after)
    return out


# Calendar notes for reading the tables: 2024-01-01 is a Monday; June 2024 starts on a
# Saturday; September 2024 starts on a Sunday; 2024 is a leap year, 2100 is not.

@pytest.mark.parametrize(
    "expr, after, expected",
    [
        # AWS documentation examples
        pytest.param("cron(0 10 * * ? *)", utc(2024, 1, 1, 11), utc(2024, 1, 2, 10), id="daily-10am"),
        pytest.param("cron(15 12 * * ? *)", utc(2024, 1, 1), utc(2024, 1, 1, 12, 15), id="daily-12:15"),
        pytest.param("cron(0 18 ? * MON-FRI *)", utc(2024, 1, 5, 19), utc(2024, 1, 8, 18), id="weekdays-6pm"),
        pytest.param("cron(0 8 1 * ? *)", utc(2024, 1, 1, 9), utc(2024, 2, 1, 8), id="first-of-month"),
        pytest.param("cron(0/15 * * * ? *)", utc(2024, 1, 1, 10, 46), utc(2024, 1, 1, 11), id="every-15-min"),
        pytest.param("cron(0/10 * ? * MON-FRI *)", utc(2024, 1, 5, 23, 55), utc(2024, 1, 8), id="every-10-weekdays"),
        pytest.param("cron(0/5 8-17 ? * MON-FRI *)", utc(2024, 1, 1, 17, 56), utc(2024, 1, 2, 8), id="business-hours"),
        pytest.param("cron(0 9 ? * 2#1 *)", utc(2024, 1, 1, 10), utc(2024, 2, 5, 9), id="first-monday"),
        # * and ,
        pytest.param("cron(* * * * ? *)", utc(2024, 1, 1, 10, 0, 30), utc(2024, 1, 1, 10, 1), id="every-minute"),
        pytest.param("cron(0 10,15 * * ? *)", utc(2024, 1, 1, 10), utc(2024, 1, 1, 15), id="hour-list"),
        pytest.param("cron(0 0 1,15 * ? *)", utc(2024, 1, 2), utc(2024, 1, 15), id="day-list"),
        pytest.param("cron(0 0 1 JAN,FEB,MAR ? *)", utc(2024, 3, 2), utc(2025, 1, 1), id="month-name-list"),
        # - ranges, including Quartz's wrap-around ranges
        pytest.param("cron(0 9-17 * * ? *)", utc(2024, 1, 1, 17), utc(2024, 1, 2, 9), id="hour-range"),
        pytest.param("cron(0 0 1-15 * ? *)", utc(2024, 1, 15), utc(2024, 2, 1), id="day-range"),
        pytest.param("cron(0 0 1 JUN-AUG ? *)", utc(2024, 8, 2), utc(2025, 6, 1), id="month-name-range"),
        pytest.param("cron(0 22-2 * * ? *)", utc(2024, 1, 1, 2, 30), utc(2024, 1, 1, 22), id="hour-wrap"),
        pytest.param("cron(0 22-2 * * ? *)", utc(2024, 1, 1, 23, 30), utc(2024, 1, 2, 0), id="hour-wrap-midnight"),
        pytest.param("cron(0 12 ? * FRI-MON *)", utc(2024, 1, 2), utc(2024, 1, 5, 12), id="weekday-wrap"),
        pytest.param("cron(0 0 1 NOV-FEB ? *)", utc(2024, 2, 15), utc(2024, 11, 1), id="month-wrap"),
        # / steps
        pytest.param("cron(1/10 * * * ? *)", utc(2024, 1, 1, 10, 11), utc(2024, 1, 1, 10, 21), id="step-from-1"),
        pytest.param("cron(*/5 * * * ? *)", utc(2024, 1, 1, 10, 2), utc(2024, 1, 1, 10, 5), id="star-step"),
        pytest.param("cron(10-20/2 * * * ? *)", utc(2024, 1, 1, 10, 15), utc(2024, 1, 1, 10, 16), id="range-step"),
        pytest.param("cron(10-20/2 * * * ? *)", utc(2024, 1, 1, 10, 20), utc(2024, 1, 1, 11, 10), id="range-step-next-hour"),
        pytest.param("cron(0 0 1 */3 ? *)", utc(2024, 1, 15), utc(2024, 4, 1), id="month-step"),
        pytest.param("cron(0 0 */10 * ? *)", utc(2024, 1, 22), utc(2024, 1, 31), id="day-step"),
        pytest.param("cron(0 0 1 1 ? */100)", utc(2024, 1, 1), utc(2070, 1, 1), id="year-step-from-1970"),
        # day-of-week numbering: 1 = Sunday, 7 = Saturday; names in any case (Quartz)
        pytest.param("cron(0 0 ? * 1 *)", utc(2024, 1, 1), utc(2024, 1, 7), id="dow-1-is-sunday"),
        pytest.param("cron(0 0 ? * 7 *)", utc(2024, 1, 1), utc(2024, 1, 6), id="dow-7-is-saturday"),
        pytest.param("cron(0 0 ? * SUN *)", utc(2024, 1, 1), utc(2024, 1, 7), id="dow-name"),
        pytest.param("cron(0 0 ? * mon *)", utc(2024, 1, 1), utc(2024, 1, 8), id="dow-name-lowercase"),
        pytest.param("cron(0 0 ? * * *)", utc(2024, 1, 1, 0, 0), utc(2024, 1, 2), id="dow-star"),
        # L in day-of-month, LW, Quartz's L-n
        pytest.param("cron(0 0 L * ? *)", utc(2024, 1, 1), utc(2024, 1, 31), id="L-january"),
        pytest.param("cron(0 0 L * ? *)", utc(2024, 4, 1), utc(2024, 4, 30), id="L-30-day-month"),
        pytest.param("cron(0 0 L-3 * ? *)", utc(2024, 1, 1), utc(2024, 1, 28), id="L-minus-3"),
        pytest.param("cron(0 0 LW * ? *)", utc(2024, 3, 1), utc(2024, 3, 29), id="LW-month-ends-sunday"),
        pytest.param("cron(0 0 LW * ? *)", utc(2024, 11, 1), utc(2024, 11, 29), id="LW-month-ends-saturday"),
        pytest.param("cron(0 0 LW * ? *)", utc(2024, 1, 1), utc(2024, 1, 31), id="LW-month-ends-weekday"),
        # W: nearest weekday, never crossing the month boundary
        pytest.param("cron(0 0 15W * ? *)", utc(2024, 6, 1), utc(2024, 6, 14), id="W-saturday-to-friday"),
        pytest.param("cron(0 0 15W * ? *)", utc(2024, 9, 1), utc(2024, 9, 16), id="W-sunday-to-monday"),
        pytest.param("cron(0 0 3W * ? *)", utc(2024, 1, 1), utc(2024, 1, 3), id="W-on-a-weekday"),
        pytest.param("cron(0 0 1W * ? *)", utc(2024, 5, 31), utc(2024, 6, 3), id="W-1st-saturday-to-monday-3rd"),
        pytest.param("cron(0 0 1W * ? *)", utc(2024, 8, 31), utc(2024, 9, 2), id="W-1st-sunday-to-monday-2nd"),
        pytest.param("cron(0 0 31W * ? *)", utc(2025, 8, 1), utc(2025, 8, 29), id="W-last-sunday-to-friday"),
        pytest.param("cron(0 0 31W * ? *)", utc(2024, 11, 1), utc(2024, 12, 31), id="W-day-missing-skips-month"),
        # L in day-of-week: alone = Saturday (Quartz); nL = last such weekday
        pytest.param("cron(0 0 ? * L *)", utc(2024, 1, 1), utc(2024, 1, 6), id="dow-L-is-saturday"),
        pytest.param("cron(0 0 ? * 5L *)", utc(2024, 1, 1), utc(2024, 1, 25), id="5L-last-thursday"),
        pytest.param("cron(0 0 ? * FRIL *)", utc(2024, 1, 1), utc(2024, 1, 26), id="FRIL-last-friday"),
        # #: nth weekday of the month
        pytest.param("cron(0 0 ? * 3#2 *)", utc(2024, 1, 1), utc(2024, 1, 9), id="second-tuesday"),
        pytest.param("cron(0 0 ? * FRI#3 *)", utc(2024, 1, 1), utc(2024, 1, 19), id="third-friday-by-name"),
        pytest.param("cron(0 0 ? * 2#5 *)", utc(2024, 1, 1), utc(2024, 1, 29), id="fifth-monday"),
        pytest.param("cron(0 0 ? * 2#5 *)", utc(2024, 1, 30), utc(2024, 4, 29), id="fifth-monday-skips-months"),
        # year
        pytest.param("cron(0 0 1 1 ? 2030)", utc(2024, 1, 1), utc(2030, 1, 1), id="single-year"),
        pytest.param("cron(0 0 1 1 ? 2025-2027)", utc(2025, 1, 1), utc(2026, 1, 1), id="year-range"),
        pytest.param("cron(0 0 1 1 ? 2199)", utc(2024, 1, 1), utc(2199, 1, 1), id="far-future-year"),
        pytest.param("cron(0 0 1 1 ? *)", utc(1900, 1, 1), utc(1970, 1, 1), id="nothing-before-1970"),
        # spacing between fields
        pytest.param("cron(0  10\t* * ? *)", utc(2024, 1, 1), utc(2024, 1, 1, 10), id="any-whitespace"),
    ],
)
def test_next_fire_time_per_syntax_element(expr: str, after: datetime, expected: datetime) -> None:
    assert next_fire(expr, after) == expected


def test_next_after_is_strictly_after() -> None:
    assert next_fire("cron(0 10 * * ? *)", utc(2024, 1, 1, 10)) == utc(2024, 1, 2, 10)


def test_a_fire_time_a_microsecond_ahead_is_next() -> None:
    assert next_fire("cron(0 10 * * ? *)", utc(2024, 1, 1, 9, 59, 59, 999999)) == utc(2024, 1, 1, 10)


def test_successive_calls_walk_the_schedule() -> None:
    assert fires("cron(0/20 9 ? * MON *)", utc(2024, 1, 1), 4) == [
        utc(2024, 1, 1, 9, 0), utc(2024, 1, 1, 9, 20), utc(2024, 1, 1, 9, 40), utc(2024, 1, 8, 9, 0),
    ]


def test_year_end_rolls_into_the_next_year() -> None:
    assert next_fire("cron(* * * * ? *)", utc(2024, 12, 31, 23, 59, 30)) == utc(2025, 1, 1)


# --- month ends and leap years ---------------------------------------------------------

@pytest.mark.parametrize(
    "expr, after, expected",
    [
        pytest.param("cron(0 0 31 * ? *)", utc(2024, 4, 1), utc(2024, 5, 31), id="31-skips-30-day-month"),
        pytest.param("cron(0 0 31 * ? *)", utc(2024, 1, 31), utc(2024, 3, 31), id="31-skips-february"),
        pytest.param("cron(0 0 30 * ? *)", utc(2024, 1, 30), utc(2024, 3, 30), id="30-skips-february"),
        pytest.param("cron(0 0 L 2 ? *)", utc(2024, 1, 1), utc(2024, 2, 29), id="L-february-leap"),
        pytest.param("cron(0 0 L 2 ? *)", utc(2025, 1, 1), utc(2025, 2, 28), id="L-february-common"),
        pytest.param("cron(0 0 L 2 ? *)", utc(2100, 1, 1), utc(2100, 2, 28), id="L-february-2100-not-leap"),
        pytest.param("cron(0 0 L-3 2 ? *)", utc(2024, 1, 1), utc(2024, 2, 26), id="L-minus-3-leap"),
        pytest.param("cron(0 0 29 2 ? *)", utc(2024, 3, 1), utc(2028, 2, 29), id="feb-29-next-leap-year"),
        pytest.param("cron(0 0 29 2 ? *)", utc(2096, 3, 1), utc(2104, 2, 29), id="feb-29-skips-2100"),
        pytest.param("cron(0 0 ? 2 5L *)", utc(2024, 1, 1), utc(2024, 2, 29), id="last-thursday-on-leap-day"),
        pytest.param("cron(0 0 ? 2 5L *)", utc(2025, 1, 1), utc(2025, 2, 27), id="last-thursday-common-feb"),
        pytest.param("cron(0 0 29W 2 ? *)", utc(2025, 1, 1), utc(2028, 2, 29), id="29W-waits-for-leap-feb"),
        pytest.param("cron(59 23 31 12 ? *)", utc(2024, 12, 31, 23, 59), utc(2025, 12, 31, 23, 59), id="last-minute-of-year"),
    ],
)
def test_month_ends_and_leap_years(expr: str, after: datetime, expected: datetime) -> None:
    assert next_fire(expr, after) == expected


# --- schedules that end or never fire: None, quickly ----------------------------------

@pytest.mark.parametrize(
    "expr, after",
    [
        pytest.param("cron(0 0 31 2 ? *)", utc(2024, 1, 1), id="feb-31"),
        pytest.param("cron(0 0 30 2 ? *)", utc(2024, 1, 1), id="feb-30"),
        pytest.param("cron(0 0 31 4,6,9,11 ? *)", utc(2024, 1, 1), id="31-in-30-day-months"),
        pytest.param("cron(0 0 L-30 2 ? *)", utc(2024, 1, 1), id="L-minus-30-in-february"),
        pytest.param("cron(0 0 ? 2 2#5 2026)", utc(2024, 1, 1), id="no-fifth-monday"),
        pytest.param("cron(0 0 1 1 ? 2024-2025)", utc(2025, 1, 1), id="year-range-exhausted"),
        pytest.param("cron(0 12 * * ? *)", utc(2199, 12, 31, 12), id="after-2199"),
        pytest.param("cron(0 12 * * ? *)", datetime.max.replace(tzinfo=UTC), id="datetime-max"),
    ],
)
def test_schedules_with_no_next_fire_return_none(expr: str, after: datetime) -> None:
    assert next_fire(expr, after) is None


# --- invalid expressions --------------------------------------------------------------

@pytest.mark.parametrize(
    "expr, complaint",
    [
        # shape
        ("cron(0 10 * * ?)", "cron needs 6 fields"),
        ("cron(0 10 * * ? * *)", "cron needs 6 fields"),
        ("cron()", "cron needs 6 fields"),
        ("cron(0 10 * * ? *", "is not cron(fields)"),
        ("CRON(0 10 * * ? *)", "is not cron(fields)"),
        # values out of range or unknown
        ("cron(60 * * * ? *)", "cron minutes field '60': 60 is out of range"),
        ("cron(-1 * * * ? *)", "cron minutes field '-1'"),
        ("cron(0 24 * * ? *)", "cron hours field '24'"),
        ("cron(0 0 0 * ? *)", "cron day-of-month field '0'"),
        ("cron(0 0 32 * ? *)", "cron day-of-month field '32'"),
        ("cron(0 0 1 13 ? *)", "cron month field '13'"),
        ("cron(0 0 1 FOO ? *)", "cron month field 'FOO': 'FOO' is not a month"),
        ("cron(0 0 ? * 0 *)", "cron day-of-week field '0'"),
        ("cron(0 0 ? * 8 *)", "cron day-of-week field '8'"),
        ("cron(0 0 ? * FOO *)", "cron day-of-week field 'FOO': 'FOO' is not a day of week"),
        ("cron(0 0 ? * MONDAY *)", "cron day-of-week field 'MONDAY'"),
        ("cron(0 0 1 * ? 1969)", "cron year field '1969'"),
        ("cron(0 0 1 * ? 2200)", "cron year field '2200'"),
        ("cron(0 0 1 * ? 2030-2025)", "runs backwards"),
        # lists and steps
        ("cron(1,,2 * * * ? *)", "empty item"),
        ("cron(1, * * * ? *)", "empty item"),
        ("cron(0/0 * * * ? *)", "step '0' must be"),
        ("cron(0/61 * * * ? *)", "step '61' must be"),
        ("cron(*/x * * * ? *)", "step 'x' must be"),
        # ? in exactly one of day-of-month / day-of-week
        ("cron(0 0 * * * *)", "exactly one of the two must be '?'"),
        ("cron(0 0 ? * ? *)", "exactly one of the two must be '?'"),
        ("cron(0 0 1 * MON *)", "exactly one of the two must be '?'"),
        ("cron(0 0 ?,1 * * *)", "'?' must be the whole field"),
        ("cron(? 0 * * ? *)", "'?' is not allowed in the minutes field"),
        ("cron(0 0 1 ? ? *)", "cron month field '?'"),
        # L, W, # in the wrong place or form
        ("cron(L 0 * * ? *)", "'L' is not allowed in the minutes field"),
        ("cron(0 0 1#2 * ? *)", "'#' is not allowed in the day-of-month field"),
        ("cron(0 0 ? * 2W *)", "cron day-of-week field '2W'"),
        ("cron(0 0 1-15W * ? *)", "must stand alone"),
        ("cron(0 0 1,L * ? *)", "must stand alone"),
        ("cron(0 0 0W * ? *)", "cron day-of-month field '0W'"),
        ("cron(0 0 32W * ? *)", "cron day-of-month field '32W'"),
        ("cron(0 0 L-31 * ? *)", "offset in 'L-n'"),
        ("cron(0 0 ? * MON,5L *)", "'L' must stand alone"),
        ("cron(0 0 ? * 3#1,6#3 *)", "only one expression"),
        ("cron(0 0 ? * 3#0 *)", "1st to 5th"),
        ("cron(0 0 ? * 3#6 *)", "1st to 5th"),
        ("cron(0 0 ? * 8#1 *)", "cron day-of-week field '8#1'"),
        ("cron(0 0 ? * MON-FRI/2 *)", "'/' is not allowed in the day-of-week field"),
    ],
)
def test_invalid_cron_says_what_and_where(expr: str, complaint: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(expr)
    message = str(caught.value)
    assert message.startswith("Parameter ScheduleExpression is not valid: ")
    assert complaint in message
