"""Several schedulers (as several `bus serve`) share one Redis: one leads, a dead or paused
leader is replaced, and no scheduled time fires twice or is lost on the way."""
from __future__ import annotations

import asyncio

import pytest

from bus.store.connect import connect
from bus.store.keys import FENCE_KEY, LEADER_KEY, PROGRESS_KEY
from bus.store.schedule import NotLeader, Progress, Store
from tests.test_scheduler import (
    FakeClock, at, run, schedule_rule, router_of, schedulers, stamp, tick_at, times,
)

SHORT_TTL = 0.3  # seconds of real time: a dead leader's lock is gone quickly


async def lock_expired(r) -> None:
    """Wait (bounded) until the dead leader's lock has expired in Redis."""
    for _ in range(1000):
        if not r.exists(LEADER_KEY):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the leader lock never expired")


class Killed(Exception):
    """Stands for the process dying at that point."""


def test_only_one_of_two_schedulers_leads_and_fires(redis_url, r):
    rule = schedule_rule()

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock, n=2) as [a, b]:
            for second in range(0, 5 * 60, 10):
                clock.set(at(second / 60))
                await a.tick()
                await b.tick()
            assert [a.is_leader, b.is_leader] == [True, False]

    run(main())
    assert times(r, rule) == [stamp(m) for m in range(1, 5)]


@pytest.mark.cluster
def test_killed_leader_is_replaced_when_its_lock_expires_and_no_time_fires_twice(redis_url, r):
    rule = schedule_rule()

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock, n=2, lock_ttl=SHORT_TTL) as [a, b]:
            await a.tick()
            await tick_at(a, clock, 1)  # a fires 12:01, then dies (is never called again)
            await lock_expired(r)
            await tick_at(b, clock, 1.5)
            await tick_at(b, clock, 2)
            assert b.is_leader

    run(main())
    assert times(r, rule) == [stamp(1), stamp(2)]


@pytest.mark.cluster
def test_leader_killed_right_after_its_firing_write_is_not_repeated_by_the_next(redis_url, r):
    rule = schedule_rule()

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock, n=2, lock_ttl=SHORT_TTL) as [a, b]:
            await a.tick()
            real_fire = a._store.fire

            async def fire_then_die(*args, **kw):
                await real_fire(*args, **kw)
                raise Killed()  # the write is in Redis; the process never hears back

            a._store.fire = fire_then_die
            clock.set(at(1))
            try:
                await a.tick()
            except Killed:
                pass
            await lock_expired(r)
            await tick_at(b, clock, 1.2)
            await tick_at(b, clock, 2)

    run(main())
    assert times(r, rule) == [stamp(1), stamp(2)]


@pytest.mark.cluster
def test_a_leader_whose_lock_was_taken_over_cannot_write(redis_url, r):
    rule = schedule_rule()

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock, n=2, lock_ttl=SHORT_TTL) as [a, b]:
            await a.tick()
            stale_token = a._lease.token  # a pauses here, holding a token it thinks is good
            await lock_expired(r)
            await tick_at(b, clock, 1)  # b leads now and fires 12:01
            client = connect(redis_url)
            try:
                store = Store(client)
                for write in (store.fire(stale_token, "default/tick", at(1), [], Progress("x", "y")),
                              store.save(stale_token, "default/tick", None)):
                    try:
                        await write
                        raise AssertionError("a stale leader wrote")
                    except NotLeader:
                        pass
            finally:
                await client.aclose()

    run(main())
    assert times(r, rule) == [stamp(1)]
    assert r.hget(PROGRESS_KEY, "default/tick") is not None  # b's, untouched


def test_a_time_already_marked_fired_is_not_enqueued_again(redis_url, r):
    rule = schedule_rule()

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock) as [s]:
            await s.tick()
            await tick_at(s, clock, 1)
            # Progress rewound behind 12:01 (as if its record were lost): the dedup mark holds.
            progress = Progress(sig="rate(1 minute)|||", cursor=at(0).isoformat())
            await s._store.save(s._lease.token, "default/tick", progress)
            await tick_at(s, clock, 1.2)
            await tick_at(s, clock, 2)

    run(main())
    assert times(r, rule) == [stamp(1), stamp(2)]


def test_stop_hands_the_lock_over_at_once(redis_url, r):
    rule = schedule_rule()

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock) as [s]:
            stop = asyncio.Event()
            task = asyncio.create_task(s.run(stop))
            await clock.settle(1)
            assert r.exists(LEADER_KEY)
            stop.set()
            await task

    run(main())
    assert not r.exists(LEADER_KEY)


@pytest.mark.cluster
def test_two_running_schedulers_fire_each_time_once_when_the_leader_is_killed_mid_run(redis_url, r):
    rule = schedule_rule()

    async def main():
        clock = FakeClock()
        async with schedulers(redis_url, lambda: router_of(rule), clock, n=2, lock_ttl=0.5) as pair:
            stop = asyncio.Event()
            tasks = {s: asyncio.create_task(s.run(stop)) for s in pair}
            await clock.settle(2)
            survivor = None
            while clock.now() < at(10):
                if survivor is None and clock.now() >= at(5.5):
                    dead = next(s for s in pair if s.is_leader)
                    tasks.pop(dead).cancel()  # killed: no hand-over, its lock must expire
                    [survivor] = tasks
                if survivor is not None and not survivor.is_leader:
                    # The dead leader's lock expires in real time; let the survivor poll for
                    # it with the clock crawling, so the failover takes a few seconds of it.
                    await asyncio.sleep(0.02)
                    clock.advance(0.2)
                else:
                    clock.advance(5)
                await clock.settle(len(tasks))
            stop.set()
            await asyncio.gather(*tasks.values())

    run(main())
    assert times(r, rule) == [stamp(m) for m in range(1, 11)]
    assert int(r.get(FENCE_KEY)) == 2  # two tenures: the dead leader's and the survivor's
