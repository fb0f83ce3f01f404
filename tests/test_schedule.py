"""The public schedule API: parse_schedule's object, rate(), at(), start/end windows,
time zones, and the errors for everything that is not cron syntax."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from bus.scheduler.expression import ScheduleError, parse_schedule


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


NEW_YORK = ZoneInfo("America/New_York")


# --- the Schedule object ---------------------------------------------------------------

@pytest.mark.parametrize(
    "expr, kind",
    [("cron(0 10 * * ? *)", "cron"), ("rate(5 minutes)", "rate"), ("at(2030-01-01T00:00:00)", "at")],
)
def test_schedule_exposes_expression_kind_and_timezone(expr: str, kind: str) -> None:
    schedule = parse_schedule(expr, timezone="Europe/Berlin")
    assert (schedule.expression, schedule.kind, schedule.timezone) == (expr, kind, "Europe/Berlin")


def test_timezone_defaults_to_utc() -> None:
    assert parse_schedule("rate(1 hour)").timezone == "UTC"


def test_fire_times_are_returned_in_utc_whatever_zone_the_question_uses() -> None:
    asked = datetime(2024, 1, 1, 5, 0, tzinfo=timezone(timedelta(hours=-5)))  # 10:00 UTC
    fire = parse_schedule("cron(30 10 * * ? *)").next_after(asked)
    assert fire == utc(2024, 1, 1, 10, 30)
    assert fire.tzinfo is UTC


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValueError, match="time-zone-aware"):
        parse_schedule("rate(1 hour)").next_after(datetime(2024, 1, 1))


def test_schedule_error_is_a_value_error() -> None:
    assert issubclass(ScheduleError, ValueError)


@pytest.mark.parametrize("expr", ["", "cron", "every(5 minutes)", "cron 0 10 * * ? *", "(5 minutes)"])
def test_only_cron_rate_and_at_forms_parse(expr: str) -> None:
    with pytest.raises(ScheduleError, match=r"^Parameter ScheduleExpression is not valid: .* is not cron"):
        parse_schedule(expr)


def test_whitespace_around_the_expression_is_ignored() -> None:
    assert parse_schedule("  rate(5 minutes)\n").kind == "rate"


def test_non_string_expression_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError, match="expected a string"):
        parse_schedule(None)  # type: ignore[arg-type]


# --- rate() ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "expr, period",
    [
        ("rate(1 minute)", timedelta(minutes=1)),
        ("rate(5 minutes)", timedelta(minutes=5)),
        ("rate(1 hour)", timedelta(hours=1)),
        ("rate(12 hours)", timedelta(hours=12)),
        ("rate(1 day)", timedelta(days=1)),
        ("rate(10 days)", timedelta(days=10)),
    ],
)
def test_rate_fires_every_period_from_its_anchor(expr: str, period: timedelta) -> None:
    anchor = utc(2024, 1, 1, 10, 17)
    schedule = parse_schedule(expr, anchor=anchor)
    assert schedule.next_after(anchor) == anchor + period
    assert schedule.next_after(anchor + period * 3 - timedelta(seconds=1)) == anchor + period * 3


def test_rate_fires_at_its_anchor_first() -> None:
    anchor = utc(2024, 6, 1, 12)
    assert parse_schedule("rate(5 minutes)", anchor=anchor).next_after(utc(2024, 1, 1)) == anchor


def test_rate_without_anchor_counts_from_the_unix_epoch_so_replicas_agree() -> None:
    # 2024-01-01T00:00Z is 28,401,120 minutes after the epoch; the next multiple of 7 is +1.
    assert parse_schedule("rate(7 minutes)").next_after(utc(2024, 1, 1)) == utc(2024, 1, 1, 0, 1)
    assert parse_schedule("rate(1 hour)").next_after(utc(2024, 1, 1, 10, 30)) == utc(2024, 1, 1, 11)


def test_rate_start_is_the_first_fire_and_replaces_the_anchor() -> None:
    start = utc(2024, 5, 1, 6, 0)
    schedule = parse_schedule("rate(1 day)", start=start, anchor=utc(2000, 1, 1, 23, 59))
    assert schedule.next_after(utc(2024, 1, 1)) == start
    assert schedule.next_after(start) == utc(2024, 5, 2, 6, 0)


def test_rate_days_are_24_hours_across_dst() -> None:
    # 12:00 EST on the day before New York springs forward; 24 h later it is 13:00 EDT.
    anchor = datetime(2024, 3, 9, 12, 0, tzinfo=NEW_YORK)
    schedule = parse_schedule("rate(1 day)", timezone="America/New_York", anchor=anchor)
    fire = schedule.next_after(anchor)
    assert fire == utc(2024, 3, 10, 17, 0)
    assert fire.astimezone(NEW_YORK).hour == 13


@pytest.mark.parametrize(
    "expr, complaint",
    [
        ("rate(1 minutes)", "must say 'minute'"),
        ("rate(5 minute)", "must say 'minutes'"),
        ("rate(1 hours)", "must say 'hour'"),
        ("rate(2 hour)", "must say 'hours'"),
        ("rate(1 days)", "must say 'day'"),
        ("rate(3 day)", "must say 'days'"),
        ("rate(0 minutes)", "positive whole number"),
        ("rate(-5 minutes)", "positive whole number"),
        ("rate(1.5 hours)", "positive whole number"),
        ("rate(5 weeks)", "unit 'weeks' must be minute(s), hour(s) or day(s)"),
        ("rate(30 seconds)", "unit 'seconds'"),
        ("rate(5 Minutes)", "unit 'Minutes'"),
        ("rate(5)", "rate needs 'value unit'"),
        ("rate()", "rate needs 'value unit'"),
        ("rate(5 minutes please)", "rate needs 'value unit'"),
        ("rate(9999999999 days)", "too large"),
    ],
)
def test_invalid_rate_says_what_is_wrong(expr: str, complaint: str) -> None:
    with pytest.raises(ScheduleError, match=r"^Parameter ScheduleExpression is not valid: ") as caught:
        parse_schedule(expr)
    assert complaint in str(caught.value)


# --- at() ------------------------------------------------------------------------------

def test_at_fires_once_at_its_time() -> None:
    schedule = parse_schedule("at(2030-01-02T03:04:05)")
    assert schedule.next_after(utc(2024, 1, 1)) == utc(2030, 1, 2, 3, 4, 5)


def test_at_has_no_next_fire_once_passed() -> None:
    schedule = parse_schedule("at(2030-01-02T03:04:05)")
    assert schedule.next_after(utc(2030, 1, 2, 3, 4, 5)) is None
    assert schedule.next_after(utc(2031, 1, 1)) is None


def test_at_is_read_in_the_schedule_timezone() -> None:
    schedule = parse_schedule("at(2024-07-01T09:00:00)", timezone="Europe/Berlin")
    assert schedule.next_after(utc(2024, 1, 1)) == utc(2024, 7, 1, 7, 0)


def test_at_ignores_start_and_end_as_aws_does() -> None:
    schedule = parse_schedule(
        "at(2024-07-01T09:00:00)", start=utc(2025, 1, 1), end=utc(2025, 2, 1)
    )
    assert (schedule.start, schedule.end) == (None, None)
    assert schedule.next_after(utc(2024, 1, 1)) == utc(2024, 7, 1, 9, 0)


def test_at_in_a_repeated_hour_means_the_first_occurrence() -> None:
    schedule = parse_schedule("at(2024-11-03T01:30:00)", timezone="America/New_York")
    assert schedule.next_after(utc(2024, 1, 1)) == utc(2024, 11, 3, 5, 30)  # 01:30 EDT


def test_at_in_a_skipped_hour_is_an_error() -> None:
    with pytest.raises(ScheduleError, match="does not exist in America/New_York"):
        parse_schedule("at(2024-03-10T02:30:00)", timezone="America/New_York")


@pytest.mark.parametrize(
    "expr, complaint",
    [
        ("at(2024-01-01 00:00:00)", "at needs yyyy-mm-ddThh:mm:ss"),
        ("at(2024-01-01T00:00)", "at needs yyyy-mm-ddThh:mm:ss"),
        ("at(2024-01-01T00:00:00Z)", "at needs yyyy-mm-ddThh:mm:ss"),
        ("at(24-01-01T00:00:00)", "at needs yyyy-mm-ddThh:mm:ss"),
        ("at()", "at needs yyyy-mm-ddThh:mm:ss"),
        ("at(2024-13-01T00:00:00)", "not a real date and time"),
        ("at(2023-02-29T00:00:00)", "not a real date and time"),
        ("at(2024-01-01T24:00:00)", "not a real date and time"),
    ],
)
def test_invalid_at_says_what_is_wrong(expr: str, complaint: str) -> None:
    with pytest.raises(ScheduleError, match=r"^Parameter ScheduleExpression is not valid: ") as caught:
        parse_schedule(expr)
    assert complaint in str(caught.value)


# --- start / end windows ---------------------------------------------------------------

def test_cron_start_is_inclusive() -> None:
    schedule = parse_schedule("cron(0 10 * * ? *)", start=utc(2024, 6, 1, 10))
    assert schedule.next_after(utc(2024, 1, 1)) == utc(2024, 6, 1, 10)


def test_cron_end_is_exclusive() -> None:
    schedule = parse_schedule("cron(0 10 * * ? *)", end=utc(2024, 6, 3, 10))
    assert schedule.next_after(utc(2024, 6, 1, 10)) == utc(2024, 6, 2, 10)
    assert schedule.next_after(utc(2024, 6, 2, 10)) is None


def test_rate_stops_at_end() -> None:
    schedule = parse_schedule("rate(1 hour)", end=utc(2024, 1, 1, 3))
    assert schedule.next_after(utc(2024, 1, 1, 1, 30)) == utc(2024, 1, 1, 2)
    assert schedule.next_after(utc(2024, 1, 1, 2)) is None


def test_start_and_end_in_any_zone_are_kept_in_utc() -> None:
    start = datetime(2024, 6, 1, 12, tzinfo=ZoneInfo("Europe/Berlin"))
    schedule = parse_schedule("cron(0 * * * ? *)", start=start, end=start + timedelta(days=1))
    assert schedule.start == utc(2024, 6, 1, 10)
    assert schedule.start.tzinfo is UTC
    assert schedule.next_after(utc(2024, 1, 1)) == utc(2024, 6, 1, 10)


# --- other parameters ------------------------------------------------------------------

def test_unknown_timezone_is_rejected() -> None:
    with pytest.raises(ScheduleError, match="Parameter ScheduleExpressionTimezone is not valid: 'Mars/Olympus'"):
        parse_schedule("cron(0 10 * * ? *)", timezone="Mars/Olympus")


@pytest.mark.parametrize("parameter", ["start", "end", "anchor"])
def test_naive_start_end_or_anchor_is_rejected(parameter: str) -> None:
    with pytest.raises(ScheduleError, match="time-zone-aware"):
        parse_schedule("rate(1 hour)", **{parameter: datetime(2024, 1, 1)})


def test_end_must_be_after_start() -> None:
    with pytest.raises(ScheduleError, match="Parameter EndDate is not valid"):
        parse_schedule("rate(1 hour)", start=utc(2024, 1, 2), end=utc(2024, 1, 1))
