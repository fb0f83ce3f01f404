"""Schedule rules fire onto their targets' queues, once per scheduled time, on a clock the tests drive.

Real Redis; no test sleeps for scheduled time. The helpers here are shared with
tests/test_scheduler_failover.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import AsyncIterator, Callable

import pytest
from prometheus_client import REGISTRY

from bus.broker.router import Router
from bus.config.model import Bus, Config, FunctionTarget, Rule
from bus.scheduler.loop import Scheduler
from bus.store.connect import connect
from bus.store.keys import FIELD, LEADER_KEY, PROGRESS_KEY, stream_key, target_key

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """Time moves only when the test says so; sleepers wake when it passes their time."""

    def __init__(self, start: datetime = T0):
        self.t = start
        self._sleepers: list[tuple[datetime, asyncio.Future]] = []

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        entry = (self.t + timedelta(seconds=seconds), asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)
        for due, fut in self._sleepers:
            if due <= self.t and not fut.done():
                fut.set_result(None)

    def set(self, when: datetime) -> None:
        self.advance((when - self.t).total_seconds())

    async def settle(self, sleepers: int) -> None:
        """Wait until `sleepers` tasks sleep on this clock again, i.e. their ticks are done."""
        for _ in range(10_000):
            if sum(not fut.done() for _, fut in self._sleepers) >= sleepers:
                return
            await asyncio.sleep(0.001)
        raise AssertionError(f"{sleepers} schedulers never went back to sleep")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def stamp(minutes: float) -> str:
    return at(minutes).strftime("%Y-%m-%dT%H:%M:%SZ")


def schedule_rule(name: str = "tick", schedule: str = "rate(1 minute)", **kw) -> Rule:
    return Rule(name=name, schedule=schedule, targets=[FunctionTarget(id="t", function="probe.record")], **kw)


def router_of(*rules: Rule) -> Router:
    buses = {"default"} | {r.bus for r in rules}
    return Router(Config(buses={b: Bus(b) for b in buses}, rules={(r.bus, r.name): r for r in rules}, functions={}))


def events(r, rule: Rule, target: str = "t") -> list[dict]:
    """The events queued for a rule's target, oldest first."""
    entries = r.xrange(stream_key(target_key(rule.bus, rule.name, target)))
    return [json.loads(fields[FIELD])["event"] for _, fields in entries]


def times(r, rule: Rule) -> list[str]:
    return [e["time"] for e in events(r, rule)]


def metric(name: str, rule: Rule) -> float:
    return REGISTRY.get_sample_value(name, {"bus": rule.bus, "rule": rule.name}) or 0.0


@contextlib.asynccontextmanager
async def schedulers(redis_url: str, router: Callable[[], Router], clock: FakeClock, n: int = 1,
                     **kw) -> AsyncIterator[list[Scheduler]]:
    """n schedulers, each with its own Redis connection, as n brokers would have."""
    kw.setdefault("lock_ttl", 5.0)
    kw.setdefault("grace", 30.0)
    clients = [connect(redis_url) for _ in range(n)]
    try:
        yield [Scheduler(c, router, clock=clock, **kw) for c in clients]
    finally:
        for c in clients:
            await c.aclose()


async def tick_at(s: Scheduler, clock: FakeClock, minutes: float) -> int:
    clock.set(at(minutes))
    return await s.tick()


def run(coro) -> None:
    asyncio.run(coro)


# --- the event ------------------------------------------------------------------------------

def test_scheduled_event_is_eventbridges_with_the_scheduled_time_not_the_send_time(redis_url, r, monkeypatch):
    monkeypatch.setenv("BUS_ACCOUNT", "123456789012")
    monkeypatch.setenv("BUS_REGION", "eu-west-1")
    rule = schedule_rule("nightly")

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock) as [s]:
            await tick_at(s, clock, 0)
            await tick_at(s, clock, 1.25)  # 15 s late

    run(main())
    [event] = events(r, rule)
    assert event.pop("id")
    assert event == {
        "version": "0", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": stamp(1), "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/nightly"], "detail": {},
    }


def test_rule_on_a_custom_bus_names_its_bus_in_the_rule_arn(redis_url, r):
    rule = schedule_rule("hourly", bus="shop")

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock) as [s]:
            await tick_at(s, clock, 0)
            await tick_at(s, clock, 1)

    run(main())
    assert events(r, rule)[0]["resources"] == ["arn:aws:events:us-east-1:000000000000:rule/shop/hourly"]


def test_scheduled_event_goes_only_to_the_schedule_rules_own_targets(redis_url, r):
    rule = schedule_rule()
    watcher = Rule(name="watch-aws", event_pattern={"source": ["aws.events"]},
                   targets=[FunctionTarget(id="t", function="probe.record")])

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule, watcher), clock) as [s]:
            await tick_at(s, clock, 0)
            await tick_at(s, clock, 1)

    run(main())
    assert len(events(r, rule)) == 1 and events(r, watcher) == []


@pytest.mark.cluster
def test_every_target_of_the_rule_gets_the_same_event(redis_url, r):
    rule = Rule(name="fan", schedule="rate(1 minute)",
                targets=[FunctionTarget(id="a", function="probe.record"), FunctionTarget(id="b", function="probe.record")])

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock) as [s]:
            await tick_at(s, clock, 0)
            await tick_at(s, clock, 1)

    run(main())
    [a], [b] = events(r, rule, "a"), events(r, rule, "b")
    assert a == b


# --- once per scheduled time ------------------------------------------------------------------

def test_first_sight_of_a_rule_fires_nothing_retroactively(redis_url, r):
    every = schedule_rule("every", "rate(1 minute)")
    past = schedule_rule("past", "at(2030-01-01T11:59:00)")

    async def main():
        clock = FakeClock(at(0.5))  # 12:00 and 11:59 are both in the past
        async with schedulers(redis_url, lambda: router_of(every, past), clock) as [s]:
            assert await s.tick() == 0
            await tick_at(s, clock, 1.1)

    run(main())
    assert times(r, every) == [stamp(1)] and times(r, past) == []


@pytest.mark.cluster
def test_each_scheduled_time_fires_once_however_often_it_ticks(redis_url, r):
    rule = schedule_rule()

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock) as [s]:
            await s.tick()
            for _ in range(5 * 6):
                clock.advance(10)
                await s.tick()
                await s.tick()

    run(main())
    assert times(r, rule) == [stamp(m) for m in range(1, 6)]


@pytest.mark.cluster
def test_at_schedule_fires_once_and_stays_done_after_a_restart(redis_url, r):
    rule = schedule_rule("once", "at(2030-01-01T12:00:30)")

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock) as [s]:
            await s.tick()
            await tick_at(s, clock, 1)
        r.delete(LEADER_KEY)  # the process is gone; its lock expired
        async with schedulers(redis_url, lambda: router_of(rule), clock) as [s]:
            await tick_at(s, clock, 60)

    run(main())
    assert times(r, rule) == ["2030-01-01T12:00:30Z"]
    assert json.loads(r.hget(PROGRESS_KEY, "default/once"))["done"] is True


def test_end_of_the_window_stops_a_recurring_schedule(redis_url, r):
    rule = schedule_rule(end="2030-01-01T12:02:30Z")

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock) as [s]:
            for minute in range(6):
                await tick_at(s, clock, minute)

    run(main())
    assert times(r, rule) == [stamp(1), stamp(2)]


# --- downtime and catch-up ------------------------------------------------------------------

def downtime(redis_url, r, rule: Rule, limit: int = 100) -> None:
    """Fire 12:01, go down, come back at 12:10:45 (12:02-12:10 missed: older than the 30 s grace)."""

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock) as [s]:
            await s.tick()
            await tick_at(s, clock, 1)
        r.delete(LEADER_KEY)  # down for longer than the lock lives
        async with schedulers(redis_url, lambda: router_of(rule), clock, catch_up_limit=limit) as [s]:
            await tick_at(s, clock, 10.75)
            await tick_at(s, clock, 10.9)  # the catch-up is not repeated

    run(main())


def test_after_downtime_catch_up_none_fires_no_missed_time_and_counts_them(redis_url, r):
    rule = schedule_rule("c-none", catch_up="none")
    missed = metric("busway_schedule_misses_total", rule)
    downtime(redis_url, r, rule)
    assert times(r, rule) == [stamp(1)]
    assert metric("busway_schedule_misses_total", rule) - missed == 9


def test_after_downtime_catch_up_latest_fires_only_the_latest_missed_time(redis_url, r):
    rule = schedule_rule("c-latest", catch_up="latest")
    missed = metric("busway_schedule_misses_total", rule)
    downtime(redis_url, r, rule)
    assert times(r, rule) == [stamp(1), stamp(10)]
    assert metric("busway_schedule_misses_total", rule) - missed == 8


def test_after_downtime_catch_up_all_fires_every_missed_time_up_to_the_limit(redis_url, r):
    rule = schedule_rule("c-all", catch_up="all")
    missed = metric("busway_schedule_misses_total", rule)
    downtime(redis_url, r, rule, limit=5)
    assert times(r, rule) == [stamp(m) for m in (1, 6, 7, 8, 9, 10)]
    assert metric("busway_schedule_misses_total", rule) - missed == 4


def test_catch_up_after_days_of_downtime_is_bounded(redis_url, r):
    rule = schedule_rule("c-days", catch_up="all")

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock, catch_up_limit=3) as [s]:
            await s.tick()
            clock.advance(3 * 24 * 3600 + 45)  # 4320 minutes later
            for _ in range(10):  # a long backlog takes a few bounded ticks
                await s.tick()

    run(main())
    assert times(r, rule) == [stamp(m) for m in (4318, 4319, 4320)]


# --- rules change while running ---------------------------------------------------------------

def test_rule_added_while_running_fires_without_a_restart(redis_url, r):
    rule = schedule_rule("late-comer")
    live = {"router": router_of()}

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: live["router"], clock) as [s]:
            await s.tick()
            live["router"] = router_of(rule)  # what a YAML reload does
            await tick_at(s, clock, 0.5)
            await tick_at(s, clock, 1)

    run(main())
    assert times(r, rule) == [stamp(1)]


def test_disabled_rule_does_not_fire_and_does_not_catch_up_when_enabled(redis_url, r):
    rule = schedule_rule("toggled")
    live = {"router": router_of(rule)}

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: live["router"], clock) as [s]:
            await s.tick()
            await tick_at(s, clock, 1)
            live["router"] = router_of(schedule_rule("toggled", state="DISABLED"))
            for minute in (2, 3, 4):
                await tick_at(s, clock, minute)
            live["router"] = router_of(rule)
            await tick_at(s, clock, 4.5)
            await tick_at(s, clock, 5)

    run(main())
    assert times(r, rule) == [stamp(1), stamp(5)]


def test_edited_schedule_starts_over_from_now_instead_of_catching_up(redis_url, r):
    hourly = schedule_rule("edited", "rate(1 hour)")
    live = {"router": router_of(hourly)}

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: live["router"], clock) as [s]:
            await s.tick()
            live["router"] = router_of(schedule_rule("edited", "rate(1 minute)"))
            await tick_at(s, clock, 30.5)  # edited at 12:30:30; nothing before fires
            await tick_at(s, clock, 31)

    run(main())
    assert times(r, hourly) == [stamp(31)]


def test_invalid_schedule_is_skipped_and_the_other_rules_still_fire(redis_url, r):
    bad = schedule_rule("bad", timezone="Mars/Olympus")
    good = schedule_rule("good")

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(bad, good), clock) as [s]:
            await s.tick()
            await tick_at(s, clock, 1)

    run(main())
    assert times(r, good) == [stamp(1)] and times(r, bad) == []


# --- metrics ----------------------------------------------------------------------------------

def test_firings_and_lateness_are_measured_from_the_scheduled_time(redis_url, r):
    rule = schedule_rule("measured")
    firings = metric("busway_schedule_firings_total", rule)
    late_sum = metric("busway_schedule_lateness_seconds_sum", rule)

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock) as [s]:
            await s.tick()
            await tick_at(s, clock, 1 + 2 / 60)  # 2 s late

    run(main())
    assert metric("busway_schedule_firings_total", rule) - firings == 1
    assert metric("busway_schedule_lateness_seconds_sum", rule) - late_sum == 2.0


# --- the real clock ---------------------------------------------------------------------------

def test_run_on_the_real_clock_fires_an_at_schedule_when_it_comes(redis_url, r):
    when = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    rule = schedule_rule("soon", f"at({when:%Y-%m-%dT%H:%M:%S})")

    async def main():
        client = connect(redis_url)
        stop = asyncio.Event()
        task = asyncio.create_task(Scheduler(client, lambda: router_of(rule)).run(stop))
        try:
            for _ in range(200):  # bounded wait for the queue, not a timing assertion
                if times(r, rule):
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task
            await client.aclose()

    run(main())
    assert times(r, rule) == [when.strftime("%Y-%m-%dT%H:%M:%SZ")]
