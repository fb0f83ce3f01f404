"""Which due times fire and which are missed: the catch-up policies, without Redis."""
from datetime import UTC, datetime, timedelta

import pytest

from bus.config.model import Rule
from bus.scheduler.expression import parse_schedule
from bus.scheduler.plan import plan_firings, schedule_of, signature

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
EVERY_MINUTE = parse_schedule("rate(1 minute)")


def minutes(*ns: int) -> list[datetime]:
    return [T0 + timedelta(minutes=n) for n in ns]


def plan(now_minutes: float, catch_up="latest", limit=100, scan_limit=1000, schedule=EVERY_MINUTE):
    now = T0 + timedelta(minutes=now_minutes)
    return plan_firings(schedule, T0, now, catch_up=catch_up, grace=30, limit=limit, scan_limit=scan_limit)


def test_nothing_due_leaves_the_cursor_where_it_is():
    p = plan(0.5)
    assert (p.fire, p.missed, p.cursor) == ([], [], None)


@pytest.mark.parametrize("catch_up", ["none", "latest", "all"])
def test_a_time_that_just_came_due_fires_under_every_policy(catch_up):
    p = plan(1.1, catch_up)
    assert (p.fire, p.missed, p.cursor) == (minutes(1), [], minutes(1)[0])


def test_none_fires_no_missed_time_and_counts_them_all():
    p = plan(5.75, "none")
    assert (p.fire, p.missed, p.cursor) == ([], minutes(1, 2, 3, 4, 5), minutes(5)[0])


def test_none_still_fires_the_on_time_one_after_missed_ones():
    p = plan(5.2, "none")  # 12:05 is 12 s old: within the 30 s grace; 12:01-12:04 are missed
    assert (p.fire, p.missed) == (minutes(5), minutes(1, 2, 3, 4))


def test_latest_fires_only_the_most_recent_missed_time():
    p = plan(5.75, "latest")
    assert (p.fire, p.missed, p.cursor) == (minutes(5), minutes(1, 2, 3, 4), minutes(5)[0])


def test_all_fires_every_missed_time_within_the_limit():
    p = plan(5.75, "all", limit=10)
    assert (p.fire, p.missed) == (minutes(1, 2, 3, 4, 5), [])


def test_all_fires_only_the_most_recent_limit_and_counts_the_rest_missed():
    p = plan(5.75, "all", limit=2)
    assert (p.fire, p.missed) == (minutes(4, 5), minutes(1, 2, 3))


@pytest.mark.parametrize("catch_up, keep", [("none", 0), ("latest", 1), ("all", 3)])
def test_a_long_backlog_is_planned_in_bounded_scans_that_keep_the_candidates(catch_up, keep):
    p = plan(100.75, catch_up, limit=3, scan_limit=10)
    assert p.more and p.fire == []
    assert p.missed == minutes(*range(1, 11 - keep))
    assert p.cursor == p.missed[-1]  # the kept candidates are scanned again next time


def test_bounded_scans_end_with_the_same_firings_as_one_big_scan():
    cursor, fired, missed = T0, [], 0
    for _ in range(50):
        p = plan_firings(EVERY_MINUTE, cursor, T0 + timedelta(minutes=100.75), catch_up="all",
                         grace=30, limit=3, scan_limit=10)
        fired += p.fire
        missed += len(p.missed)
        cursor = p.cursor or cursor
        if not p.more:
            break
    assert fired == minutes(98, 99, 100) and missed == 97


def test_rule_start_and_end_bound_the_schedule_and_read_naive_times_in_its_zone():
    rule = Rule(name="r", schedule="rate(1 hour)", timezone="Europe/Berlin",
                start="2030-01-01T10:00:00", end="2030-01-01T12:00:00Z")
    s = schedule_of(rule)
    assert s.next_after(T0 - timedelta(days=1)) == datetime(2030, 1, 1, 9, 0, tzinfo=UTC)  # 10:00 Berlin
    assert s.next_after(datetime(2030, 1, 1, 11, 0, tzinfo=UTC)) is None  # 12:00Z is the end


def test_signature_changes_with_the_schedule_but_not_with_catch_up():
    a = Rule(name="r", schedule="rate(1 hour)")
    assert signature(a) == signature(Rule(name="r", schedule="rate(1 hour)", catch_up="all"))
    assert signature(a) != signature(Rule(name="r", schedule="rate(2 hours)"))
    assert signature(a) != signature(Rule(name="r", schedule="rate(1 hour)", timezone="UTC"))
