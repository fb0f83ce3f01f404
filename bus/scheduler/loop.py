"""The scheduler: fires every enabled schedule rule's times exactly once, however many
`bus serve` processes run and however often they restart.

One process leads (bus.store.lease). Each tick the leader reads every rule's progress,
plans what is due (bus.scheduler.plan) and fires each time with one fenced, deduplicated
Redis write (bus.store.schedule) that enqueues the Scheduled Event (bus.scheduler.event)
for the rule's own targets. Followers only poll for the lock. Rules come from the router
getter on every tick, so YAML reloads take effect without a restart.

    scheduler = Scheduler(redis, lambda: broker.router)
    await scheduler.run(stop)  # until stop is set
"""
from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Callable, Protocol

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bus import identity
from bus.broker.router import Router
from bus.config.model import Rule
from bus.observe import metrics
from bus.scheduler.event import scheduled_event
from bus.scheduler.expression import Schedule, ScheduleError
from bus.scheduler.plan import plan_firings, schedule_of, signature
from bus.store.deliveries import encode_delivery, new_delivery
from bus.store.keys import stream_key
from bus.store.lease import Lease
from bus.store.schedule import DEDUP_TTL, NotLeader, Progress, Store

log = logging.getLogger("bus.scheduler")
_encode = msgspec.json.Encoder().encode


class Clock(Protocol):
    def now(self) -> datetime: ...  # aware

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Scheduler:
    """Fires schedule rules. `run(stop)` in every broker; `tick()` is one step, for tests.

    lock_ttl: how long a dead leader blocks the others (failover time). tick_interval: the
    longest pause between ticks; a leader wakes earlier when a time comes due. grace: a due
    time older than this counts as missed and goes through the rule's catch_up policy.
    catch_up_limit: at most this many missed times fire per rule under catch_up "all".
    """

    def __init__(
        self, redis: aioredis.Redis, router: Callable[[], Router], *, clock: Clock | None = None,
        lock_ttl: float = 10.0, tick_interval: float = 1.0, grace: float = 60.0,
        catch_up_limit: int = 100, dedup_ttl: int = DEDUP_TTL,
    ):
        self._router = router  # a getter: YAML reloads swap the router
        self._clock = clock or SystemClock()
        self._lease = Lease(redis, lock_ttl)
        self._store = Store(redis, dedup_ttl)
        self._interval = min(tick_interval, lock_ttl / 3)  # renew well before the lock expires
        self._grace = grace
        self._limit = catch_up_limit
        self._who = identity.from_env()
        self._next_due: datetime | None = None
        self._reported: set[str] = set()  # signatures of invalid schedules already logged

    @property
    def is_leader(self) -> bool:
        return self._lease.token is not None

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set, then hand the lock over at once. Cancelling the task is
        treated like a crash: the lock stays until it expires (lock_ttl)."""
        while not stop.is_set():
            try:
                await self.tick()
            except RedisError as exc:  # Redis away: keep trying; the lock expires meanwhile
                log.warning("scheduler tick failed: %s", exc)
            except Exception:  # a scheduler that dies silently would stop every schedule
                log.exception("scheduler tick failed")
            await self._pause(stop)
        try:
            await self._lease.release()
        except RedisError as exc:
            log.warning("could not release the scheduler lock (it will expire): %s", exc)

    async def tick(self) -> int:
        """Keep or take the lead; if leading, fire whatever is due. Returns the firings made."""
        self._next_due = None
        was_leader = self.is_leader
        if not await self._lease.hold():
            if was_leader:
                log.warning("scheduler lock lost; another process fires from now on")
            return 0
        if not was_leader:
            log.info("this process now leads the scheduler (fencing token %s)", self._lease.token)
        try:
            return await self._fire_due(self._router(), self._clock.now())
        except NotLeader:
            log.warning("scheduler lock lost mid-tick; another process fires from now on")
            self._lease.lost()
            return 0

    # --- one tick as leader ------------------------------------------------------------

    async def _fire_due(self, router: Router, now: datetime) -> int:
        progress = await self._store.load()
        rules = _schedule_rules(router)
        for rule_id in progress.keys() - rules.keys():
            # Removed or disabled: forget it, so coming back starts from then, not with
            # a catch-up of the times it was off.
            await self._store.save(self._token, rule_id, None)
        fired = 0
        for rule_id, rule in rules.items():
            fired += await self._rule_tick(router, rule_id, rule, progress.get(rule_id), now)
        return fired

    async def _rule_tick(self, router: Router, rule_id: str, rule: Rule, progress: Progress | None, now: datetime) -> int:
        schedule = self._schedule(rule)
        if schedule is None:
            return 0
        sig = signature(rule)
        if progress is None or progress.sig != sig:
            # First sight (or an edited schedule): nothing fires retroactively.
            await self._save(rule_id, Progress(sig, now.isoformat(), schedule.next_after(now) is None))
            self._note(schedule.next_after(now))
            return 0
        if progress.done:
            return 0
        plan = plan_firings(schedule, progress.cursor_time, now, catch_up=rule.catch_up,
                            grace=self._grace, limit=self._limit)
        fired = 0
        for at in plan.fire:
            fired += await self._fire(router, rule_id, rule, sig, schedule, at)
        if plan.cursor is not None and not plan.fire:  # only misses: record them as dealt with
            await self._save(rule_id, Progress(sig, plan.cursor.isoformat(), schedule.next_after(plan.cursor) is None))
        self._count_misses(rule, plan.missed)
        self._note(now if plan.more else schedule.next_after(plan.cursor or progress.cursor_time))
        return fired

    async def _fire(self, router: Router, rule_id: str, rule: Rule, sig: str, schedule: Schedule, at: datetime) -> int:
        records = router.targets_of(rule.bus, rule.name)
        event = _encode(scheduled_event(rule, at, self._who))
        # Ingested = now, not the scheduled time: a caught-up firing must not start out
        # older than its targets' maximum event age.
        ingested = self._clock.now().timestamp()
        deliveries = [new_delivery(event, record, ingested) for record in records]
        pairs = [(stream_key(d.target_key), encode_delivery(d)) for d in deliveries]
        progress = Progress(sig, at.isoformat(), schedule.next_after(at) is None)
        if not await self._store.fire(self._token, rule_id, at, pairs, progress):
            log.info("schedule %s: %s had already fired, not firing it again", rule_id, at.isoformat())
            return 0
        lateness = (self._clock.now() - at).total_seconds()
        metrics.SCHEDULE_FIRINGS.labels(rule.bus, rule.name).inc()
        metrics.SCHEDULE_LATENESS.labels(rule.bus, rule.name).observe(max(0.0, lateness))
        for record in records:
            metrics.DELIVERIES_ENQUEUED.labels(rule.bus, rule.name, record.key).inc()
        return 1

    # --- helpers -------------------------------------------------------------------------

    @property
    def _token(self) -> str:
        token = self._lease.token
        if token is None:  # only leaders get here; a lost lock raised NotLeader first
            raise NotLeader()
        return token

    async def _save(self, rule_id: str, progress: Progress) -> None:
        await self._store.save(self._token, rule_id, progress)

    def _schedule(self, rule: Rule) -> Schedule | None:
        try:
            return schedule_of(rule)
        except (ScheduleError, ValueError, KeyError) as exc:  # KeyError: unknown time zone
            sig = signature(rule)
            if sig not in self._reported:  # once per definition, not once per tick
                self._reported.add(sig)
                log.error("schedule rule %s/%s does not fire: %s", rule.bus, rule.name, exc)
            return None

    def _count_misses(self, rule: Rule, missed: list[datetime]) -> None:
        if not missed:
            return
        metrics.SCHEDULE_MISSES.labels(rule.bus, rule.name).inc(len(missed))
        log.warning("schedule %s/%s: %d scheduled times missed (%s to %s, catch_up=%s)", rule.bus,
                    rule.name, len(missed), missed[0].isoformat(), missed[-1].isoformat(), rule.catch_up)

    def _note(self, due: datetime | None) -> None:
        if due is not None and (self._next_due is None or due < self._next_due):
            self._next_due = due

    async def _pause(self, stop: asyncio.Event) -> None:
        """Until the next due time (leader), at most one tick interval; stop ends it early."""
        seconds = self._interval
        if self.is_leader and self._next_due is not None:
            seconds = min(seconds, max(0.0, (self._next_due - self._clock.now()).total_seconds()))
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()


def _schedule_rules(router: Router) -> dict[str, Rule]:
    """Enabled schedule rules by rule id (`<bus>/<rule>`)."""
    return {
        f"{rule.bus}/{rule.name}": rule
        for rule in router.config.rules.values()
        if rule.schedule is not None and rule.state == "ENABLED"
    }
