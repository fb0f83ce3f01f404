"""cron() in time zones with daylight saving time, EventBridge Scheduler's rule: a wall
time the spring-forward skips does not fire; a wall time the fall-back repeats fires
once, at its first occurrence.

2024 transitions used here (wall clock):
  America/New_York  Mar 10 02:00 EST -> 03:00 EDT (07:00Z);  Nov 3 02:00 EDT -> 01:00 EST (06:00Z)
  Europe/Berlin     Mar 31 02:00 CET -> 03:00 CEST (01:00Z); Oct 27 03:00 CEST -> 02:00 CET (01:00Z)
  Australia/Sydney  Oct 6 02:00 AEST -> 03:00 AEDT (Oct 5 16:00Z)
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bus.scheduler.expression import parse_schedule


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def next_fire(expr: str, zone: str, after: datetime) -> datetime | None:
    return parse_schedule(expr, timezone=zone).next_after(after)


NY, BERLIN = "America/New_York", "Europe/Berlin"


@pytest.mark.parametrize(
    "expr, zone, after, expected",
    [
        # spring forward: the skipped wall time does not fire that day
        pytest.param("cron(30 2 * * ? *)", NY, utc(2024, 3, 9, 8), utc(2024, 3, 11, 6, 30), id="ny-skipped-02:30"),
        pytest.param("cron(30 2 * * ? *)", BERLIN, utc(2024, 3, 30, 12), utc(2024, 4, 1, 0, 30), id="berlin-skipped-02:30"),
        pytest.param("cron(30 2 * * ? *)", "Australia/Sydney", utc(2024, 10, 5), utc(2024, 10, 6, 15, 30), id="sydney-skipped-02:30"),
        pytest.param("cron(0 * * * ? *)", NY, utc(2024, 3, 10, 6, 30), utc(2024, 3, 10, 7), id="ny-hourly-01:00-then-03:00"),
        pytest.param("cron(0/15 * * * ? *)", BERLIN, utc(2024, 3, 31, 0, 50), utc(2024, 3, 31, 1), id="berlin-01:45-then-03:00"),
        # fall back: the repeated wall time fires once, the first time round
        pytest.param("cron(30 1 * * ? *)", NY, utc(2024, 11, 3, 4), utc(2024, 11, 3, 5, 30), id="ny-repeated-01:30-first"),
        pytest.param("cron(30 1 * * ? *)", NY, utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30), id="ny-repeated-01:30-once"),
        pytest.param("cron(30 2 * * ? *)", BERLIN, utc(2024, 10, 26, 12), utc(2024, 10, 27, 0, 30), id="berlin-repeated-02:30-first"),
        pytest.param("cron(30 2 * * ? *)", BERLIN, utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30), id="berlin-repeated-02:30-once"),
        pytest.param("cron(0/30 * * * ? *)", NY, utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 7), id="ny-half-hourly-skips-second-pass"),
        pytest.param("cron(0/30 * * * ? *)", NY, utc(2024, 11, 3, 6, 15), utc(2024, 11, 3, 7), id="ny-asked-during-second-pass"),
        pytest.param("cron(0 * * * ? *)", BERLIN, utc(2024, 10, 27, 0), utc(2024, 10, 27, 2), id="berlin-hourly-02:00-once"),
        # the wall clock, not UTC, is what stays fixed
        pytest.param("cron(0 9 * * ? *)", BERLIN, utc(2024, 7, 1), utc(2024, 7, 1, 7), id="berlin-summer-is-utc+2"),
        pytest.param("cron(0 9 * * ? *)", BERLIN, utc(2024, 1, 1), utc(2024, 1, 1, 8), id="berlin-winter-is-utc+1"),
        pytest.param("cron(0 9 * * ? *)", "Asia/Kolkata", utc(2024, 1, 1), utc(2024, 1, 1, 3, 30), id="half-hour-offset"),
        pytest.param("cron(0 0 L * ? *)", NY, utc(2024, 1, 31, 4, 59), utc(2024, 1, 31, 5), id="day-rules-use-local-date"),
    ],
)
def test_cron_follows_the_wall_clock_across_dst(expr: str, zone: str, after: datetime, expected: datetime) -> None:
    assert next_fire(expr, zone, after) == expected


# --- brute force: every UTC minute around each transition ------------------------------

TRANSITIONS = [
    pytest.param(NY, utc(2024, 3, 10, 7), id="ny-spring"),
    pytest.param(NY, utc(2024, 11, 3, 6), id="ny-fall"),
    pytest.param(BERLIN, utc(2024, 3, 31, 1), id="berlin-spring"),
    pytest.param(BERLIN, utc(2024, 10, 27, 1), id="berlin-fall"),
]

CRONS = [
    # (expression, minutes it names, hours it names)
    ("cron(* * * * ? *)", range(60), range(24)),
    ("cron(0/15 * * * ? *)", range(0, 60, 15), range(24)),
    ("cron(30 2 * * ? *)", {30}, {2}),
    ("cron(0 1-3 * * ? *)", {0}, range(1, 4)),
    ("cron(0/20 1,2 * * ? *)", {0, 20, 40}, {1, 2}),
    ("cron(59 0,1 * * ? *)", {59}, {0, 1}),
]


def expected_fires(zone: ZoneInfo, minutes, hours, start: datetime, stop: datetime) -> list[datetime]:
    """Each UTC minute whose wall time matches, counted only on a wall time's first
    occurrence (wall times DST skips never come up: no UTC minute shows them)."""
    out, t = [], start
    while t <= stop:
        wall = t.astimezone(zone)
        first_time = wall.replace(fold=0).astimezone(UTC) == t
        if wall.minute in minutes and wall.hour in hours and first_time:
            out.append(t)
        t += timedelta(minutes=1)
    return out


@pytest.mark.parametrize("zone_name, transition", TRANSITIONS)
@pytest.mark.parametrize("expr, minutes, hours", CRONS, ids=[c[0] for c in CRONS])
def test_cron_matches_brute_force_around_transitions(zone_name, transition, expr, minutes, hours) -> None:
    start, stop = transition - timedelta(hours=4), transition + timedelta(hours=4)
    schedule = parse_schedule(expr, timezone=zone_name)
    actual, t = [], start - timedelta(microseconds=1)
    while (t := schedule.next_after(t)) is not None and t <= stop:
        actual.append(t)
    assert actual == expected_fires(ZoneInfo(zone_name), minutes, hours, start, stop)
