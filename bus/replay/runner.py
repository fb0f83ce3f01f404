"""The replay runner: the broker holding the replay lease runs every active replay, a paced step
at a time, each step one fenced Redis call (bus.store.replays.step).

Every broker runs one; one leads (bus.store.lease, on REPLAY_LEADER_KEY). Each tick the leader
renews the lease and, when pacing allows (bus.replay.plan), gives each active replay one step:
read the next page of its archive window from its checkpoint, mark each event with
"replay-name" (its id and time kept), route it on the replay's bus to the rules named (all the
bus's enabled pattern rules if none), and write the deliveries with the new checkpoint in one
call. A leader that dies leaves the checkpoint of its last written step: the next leader goes on
from there, so no event of the window is skipped and none is sent twice.

    await ReplayRunner(redis, lambda: broker.router, lock_ttl=10).run(stop)
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bus.broker.router import Router
from bus.observe import metrics
from bus.replay import plan
from bus.store import replays, resources
from bus.store.deliveries import encode_delivery, new_delivery
from bus.store.keys import (
    REPLAY_FENCE_KEY,
    REPLAY_LEADER_KEY,
    archive_events_key,
    stream_key,
)
from bus.store.lease import Lease
from bus.store.replays import Replay, Stored

log = logging.getLogger("bus.replay")
_decode_event = msgspec.json.Decoder(dict).decode
_encode = msgspec.json.Encoder().encode


def rate_from_env() -> float:
    """BUS_REPLAY_RATE: events per second a leader replays, all replays together (default 1000)."""
    try:
        rate = float(os.environ.get("BUS_REPLAY_RATE", plan.DEFAULT_RATE))
    except ValueError:
        log.error("BUS_REPLAY_RATE is not a number; using %g", plan.DEFAULT_RATE)
        return plan.DEFAULT_RATE
    return rate if rate > 0 else plan.DEFAULT_RATE


class ReplayRunner:
    """Runs replays while this process holds the replay lease. `tick()` is one turn, for tests."""

    def __init__(self, redis: aioredis.Redis, router: Callable[[], Router], *, lock_ttl: float = 10.0,
                 rate: float | None = None, max_page: int = plan.MAX_PAGE, clock: Callable[[], float] = time.time):
        self._redis = redis
        self._router = router  # a getter: YAML reloads swap the router
        self._lease = Lease(redis, lock_ttl, REPLAY_LEADER_KEY, REPLAY_FENCE_KEY)
        self._rate = rate if rate is not None else rate_from_env()
        self._page = plan.page_size(self._rate, max_page)
        self._clock = clock
        self._interval = min(1.0, lock_ttl / 3)  # renew well before the lease expires
        self._next_step = 0.0
        self._lagging: set[str] = set()  # replays with a REPLAY_LAG series in this process

    @property
    def is_leader(self) -> bool:
        return self._lease.token is not None

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set, then hand the lease over at once."""
        log.info("replay runner: %g events/s, pages of %d", self._rate, self._page)
        while not stop.is_set():
            pause = self._interval
            try:
                pause = await self.tick()
            except RedisError as exc:  # Redis away: keep trying; the lease expires meanwhile
                log.warning("replay tick failed: %s", exc)
            except Exception:  # a runner that dies silently would stall every replay
                log.exception("replay tick failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, pause))
            except TimeoutError:
                pass
        self._forget_lag()
        try:
            await self._lease.release()
        except RedisError as exc:
            log.warning("could not release the replay lease (it will expire): %s", exc)

    async def tick(self) -> float:
        """Keep or take the lease; if leading and pacing allows, step every active replay.
        Returns how long to wait before the next tick."""
        was_leader = self.is_leader
        if not await self._lease.hold():
            if was_leader:
                log.warning("replay lease lost; another broker runs replays from now on")
                self._forget_lag()
            return self._interval
        if not was_leader:
            log.info("this broker now runs replays (fencing token %s)", self._lease.token)
        now = self._clock()
        if now < self._next_step:
            return min(self._interval, self._next_step - now)
        active = [s for s in (await replays.load(self._redis)).values() if s.replay.active]
        if not active:
            return self._interval
        sent = 0
        try:
            for stored in sorted(active, key=lambda s: (s.replay.replay_start, s.replay.name)):
                sent += await self._step(self._router(), stored)
        except replays.NotLeader:
            log.warning("replay lease lost mid-step; another broker runs replays from now on")
            self._lease.lost()
            self._forget_lag()
            return self._interval
        self._next_step = plan.next_step_at(now, sent, self._rate)
        return min(self._interval, max(0.0, self._next_step - self._clock()))

    # --- one replay's step -----------------------------------------------------------------

    async def _step(self, router: Router, stored: Stored) -> int:
        """One step of one replay; the number of events sent."""
        replay = stored.replay
        gone = await self._gone(router, replay) if replay.state in ("STARTING", "RUNNING") else None
        if gone == "":  # not in this broker's router yet (a new archive or bus): next tick
            return 0
        decision = plan.decide(replay, gone)
        if decision is None:
            return 0
        if not decision.send:
            await self._write(stored, plan.ended(replay, decision.state, decision.reason, self._clock()))
            self._end_lag(replay.name)
            log.info("replay %s %s: %s", replay.name, decision.state, decision.reason)
            return 0
        page = plan.next_page(replay, self._page)
        members = await self._redis.zrangebyscore(
            archive_events_key(replay.archive), page.min_score, f"({page.max_score}",
            start=page.offset, num=page.count, withscores=True)
        n = plan.take([len(member) for member, _ in members])
        chosen = members[:n]
        deliveries, counts = self._deliveries(router, replay, [member for member, _ in chosen])
        new = plan.after_step(replay, [int(score) for _, score in chosen], len(members), page.count, self._clock())
        if not await self._write(stored, new, deliveries):
            return 0
        self._count(replay, len(chosen), counts)
        if new.state == "COMPLETED":
            self._end_lag(replay.name)
            log.info("replay %s COMPLETED: %d events replayed", replay.name, new.replayed)
        else:
            metrics.REPLAY_LAG.labels(replay.name).set(plan.lag_seconds(new))
            self._lagging.add(replay.name)
        return len(chosen)

    def _deliveries(self, router: Router, replay: Replay, members: list[bytes]
                    ) -> tuple[list[tuple[str, bytes]], dict[tuple[str, str], int]]:
        """(stream, Delivery JSON) for each of the events' matches among the replay's rules, and the
        deliveries per (rule, target) for the counters."""
        wanted = None if replay.rules is None else set(replay.rules)
        ingested = self._clock()  # now, not the event's time: an old event must not start out too old
        out: list[tuple[str, bytes]] = []
        counts: dict[tuple[str, str], int] = {}
        for member in members:
            event = _replayed(member, replay.name)
            if event is None:
                log.error("replay %s: an archived event of %s does not decode; skipped", replay.name, replay.archive)
                continue
            raw = None
            for rule, records in router.route(replay.bus, event):
                if wanted is not None and rule not in wanted:
                    continue
                raw = raw or _encode(event)
                counts[(rule, "")] = counts.get((rule, ""), 0) + 1
                for record in records:
                    out.append((stream_key(record.key), encode_delivery(new_delivery(raw, record, ingested))))
                    counts[(rule, record.key)] = counts.get((rule, record.key), 0) + 1
        return out, counts

    async def _write(self, stored: Stored, new: Replay, deliveries: list[tuple[str, bytes]] = ()) -> bool:
        """The fenced step; False if the replay changed meanwhile (cancelled): read again next tick."""
        token = self._lease.token
        if token is None:
            raise replays.NotLeader()
        try:
            await replays.step(self._redis, token, stored, new, deliveries)
        except replays.Changed:
            log.info("replay %s changed meanwhile (cancelled?); reading it again", new.name)
            return False
        return True

    async def _gone(self, router: Router, replay: Replay) -> str | None:
        """Why the replay cannot go on (archive or bus deleted), None if it can, "" if this
        broker's router has not caught up with a newly stored archive or bus yet."""
        if replay.archive in router.config.archives and router.has_bus(replay.bus):
            return None
        stored = await resources.load(self._redis)  # rare: only when the router misses one
        if replay.archive not in router.config.archives and replay.archive not in stored.archives:
            return f"Archive {replay.archive} does not exist."
        if not router.has_bus(replay.bus) and replay.bus not in stored.buses:
            return f"Event bus {replay.bus} does not exist."
        return ""

    # --- metrics ---------------------------------------------------------------------------

    def _count(self, replay: Replay, events: int, counts: dict[tuple[str, str], int]) -> None:
        if events:
            metrics.REPLAYED_EVENTS.labels(replay.archive).inc(events)
        for (rule, target), n in counts.items():
            if target:
                metrics.DELIVERIES_ENQUEUED.labels(replay.bus, rule, target).inc(n)
            else:
                metrics.RULE_MATCHES.labels(replay.bus, rule).inc(n)

    def _end_lag(self, name: str) -> None:
        if name in self._lagging:
            self._lagging.discard(name)
            try:
                metrics.REPLAY_LAG.remove(name)
            except KeyError:
                pass

    def _forget_lag(self) -> None:
        """No longer leading: this process's lag series would only go stale."""
        for name in list(self._lagging):
            self._end_lag(name)


def _replayed(member: bytes, name: str) -> dict[str, Any] | None:
    """The archived event as replayed: the same event (id, time and all) with "replay-name"."""
    try:
        event = _decode_event(member)
    except msgspec.DecodeError:
        return None
    event["replay-name"] = name
    return event
