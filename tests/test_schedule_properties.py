"""Property: for generated cron expressions, next_after (which skips field by field)
agrees with a slow day-by-day scan that defines each day rule the plain way."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bus.scheduler.expression import ScheduleError, parse_schedule

HORIZON = timedelta(days=366 * 12)


def aws_weekday(d: date) -> int:
    return d.isoweekday() % 7 + 1  # 1 = Sunday ... 7 = Saturday


def same_month_days(d: date) -> list[date]:
    first = d.replace(day=1)
    return [first + timedelta(days=i) for i in range(31) if (first + timedelta(days=i)).month == d.month]


def is_weekday(d: date) -> bool:
    return d.isoweekday() <= 5


@dataclass(frozen=True)
class DayField:
    dom: str
    dow: str
    kind: str
    arg: tuple[int, ...]

    def matches(self, d: date) -> bool:
        month = same_month_days(d)
        if self.kind == "dom":
            return d.day in self.arg
        if self.kind == "L":
            return d == month[-1 - self.arg[0]] if self.arg[0] < len(month) else False
        if self.kind == "LW":
            return d == [x for x in month if is_weekday(x)][-1]
        if self.kind == "W":
            # the Mon-Fri day of this month closest to day n (never a tie, by geometry)
            if self.arg[0] > len(month):
                return False
            return d == min((x for x in month if is_weekday(x)), key=lambda x: abs(x.day - self.arg[0]))
        if self.kind == "dow":
            return aws_weekday(d) in self.arg
        if self.kind == "nL":
            return aws_weekday(d) == self.arg[0] and (d + timedelta(days=7)).month != d.month
        if self.kind == "#":
            return aws_weekday(d) == self.arg[0] and (d.day - 1) // 7 + 1 == self.arg[1]
        raise AssertionError(self.kind)


def listed(values: set[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


day_fields = st.one_of(
    st.sets(st.integers(1, 31), min_size=1, max_size=4).map(lambda s: DayField(listed(s), "?", "dom", tuple(s))),
    st.just(DayField("L", "?", "L", (0,))),
    st.integers(1, 30).map(lambda n: DayField(f"L-{n}", "?", "L", (n,))),
    st.just(DayField("LW", "?", "LW", ())),
    st.integers(1, 31).map(lambda n: DayField(f"{n}W", "?", "W", (n,))),
    st.sets(st.integers(1, 7), min_size=1, max_size=3).map(lambda s: DayField("?", listed(s), "dow", tuple(s))),
    st.integers(1, 7).map(lambda w: DayField("?", f"{w}L", "nL", (w,))),
    st.tuples(st.integers(1, 7), st.integers(1, 5)).map(lambda t: DayField("?", f"{t[0]}#{t[1]}", "#", t)),
)


@st.composite
def stepped(draw, lo: int, hi: int) -> tuple[str, set[int]]:
    """A field as a list or as start/step, with the values it stands for."""
    if draw(st.booleans()):
        values = draw(st.sets(st.integers(lo, hi), min_size=1, max_size=4))
        return listed(values), values
    start, step = draw(st.integers(lo, hi)), draw(st.integers(1, hi - lo + 1))
    return f"{start}/{step}", set(range(start, hi + 1, step))


@st.composite
def crons(draw):
    minutes, minute_set = draw(stepped(0, 59))
    hours, hour_set = draw(stepped(0, 23))
    months, month_set = draw(stepped(1, 12))
    day = draw(day_fields)
    expr = f"cron({minutes} {hours} {day.dom} {months} {day.dow} *)"
    return expr, minute_set, hour_set, month_set, day


def scan(minute_set, hour_set, month_set, day: DayField, after: datetime) -> datetime | None:
    first = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    d = first.date()
    while d <= (after + HORIZON).date():
        if d.month in month_set and day.matches(d):
            for hour in sorted(hour_set):
                for minute in sorted(minute_set):
                    candidate = datetime(d.year, d.month, d.day, hour, minute, tzinfo=UTC)
                    if candidate >= first:
                        return candidate
        d += timedelta(days=1)
    return None


@settings(max_examples=150, deadline=None)
@given(
    cron=crons(),
    after=st.datetimes(datetime(2020, 1, 1), datetime(2030, 12, 31)).map(lambda d: d.replace(tzinfo=UTC)),
)
def test_next_after_agrees_with_a_day_by_day_scan(cron, after: datetime) -> None:
    expr, minute_set, hour_set, month_set, day = cron
    got = parse_schedule(expr).next_after(after)
    want = scan(minute_set, hour_set, month_set, day, after)
    if want is None:
        assert got is None or got > after + HORIZON
    else:
        assert got == want


cron_text = st.lists(
    st.text(alphabet="0123456789*,-/?LW#JANFEBMONSUT", min_size=1, max_size=6), min_size=0, max_size=7
).map(lambda fields: f"cron({' '.join(fields)})")


@settings(max_examples=300, deadline=None)
@given(expr=st.one_of(cron_text, st.text(max_size=30)))
def test_any_text_either_parses_and_answers_or_raises_schedule_error(expr: str) -> None:
    try:
        schedule = parse_schedule(expr)
    except ScheduleError as exc:
        assert str(exc).startswith("Parameter ScheduleExpression is not valid: ")
        return
    fire = schedule.next_after(datetime(2024, 1, 1, tzinfo=UTC))
    assert fire is None or fire > datetime(2024, 1, 1, tzinfo=UTC)
