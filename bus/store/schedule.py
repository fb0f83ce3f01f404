"""The scheduler's Redis state and its fenced writes: per-rule progress, and firing one
scheduled time atomically with its dedup mark.

Keys (rule id = `<bus>/<rule>`):
    busway:{scheduler}:progress                 hash: rule id -> Progress JSON
    busway:{scheduler}:fired:<rule id>:<epoch>  dedup mark of one (rule, scheduled time); expires

Every write is one Lua script that first checks the leader lock still holds the caller's
token, so a leader that lost the lock (paused, partitioned) can change nothing. Firing is
check lock, SET dedup NX, XADD every delivery, record progress: all or nothing, so a crash
can neither lose a firing nor make a second one. On Redis Cluster the deliveries are written
first, slot by slot, each slot's part once (bus.store.once), then the mark and progress.
"""
from __future__ import annotations

import logging
from datetime import datetime

import msgspec
import redis.asyncio as aioredis

from bus.store import keys
from bus.store.connect import is_cluster
from bus.store.keys import FIELD, LEADER_KEY, PROGRESS_KEY
from bus.store.once import stream_calls, write_once
from bus.store.scripts import SCHEDULE_FIRE, SCHEDULE_SAVE, Script

log = logging.getLogger("bus.scheduler")

DEDUP_TTL = 3 * 24 * 3600  # seconds; a dedup mark only has to outlive any chance of a retry
_NOT_LEADER = -1  # what both scripts answer when the lock does not hold the caller's token


class NotLeader(Exception):
    """The leader lock no longer holds our token: stop writing."""


class Progress(msgspec.Struct, frozen=True):
    """How far one rule has got: every fire time up to `cursor` (ISO 8601, exact) is dealt
    with (fired or counted missed). `done`: the schedule has no times left (a fired at())."""

    sig: str
    cursor: str
    done: bool = False

    @property
    def cursor_time(self) -> datetime:
        return datetime.fromisoformat(self.cursor)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Progress).decode


def fired_key(rule_id: str, at: datetime) -> str:
    """The dedup mark of firing `rule_id` for the scheduled time `at`."""
    return keys.fired_key(rule_id, int(at.timestamp()))


class Store:
    def __init__(self, redis: aioredis.Redis, dedup_ttl: int = DEDUP_TTL):
        self._redis = redis
        self._dedup_ttl = dedup_ttl
        self._fire = Script(redis, SCHEDULE_FIRE)
        self._save = Script(redis, SCHEDULE_SAVE)
        self._cluster = is_cluster(redis)

    async def load(self) -> dict[str, Progress]:
        """Every rule's progress. An unreadable entry counts as absent: the rule starts over."""
        out: dict[str, Progress] = {}
        for key, raw in (await self._redis.hgetall(PROGRESS_KEY)).items():
            rule_id = key.decode() if isinstance(key, bytes) else key
            try:
                out[rule_id] = _decode(raw)
            except msgspec.DecodeError:
                log.warning("unreadable scheduler progress for %s, starting it over", rule_id)
        return out

    async def save(self, token: str, rule_id: str, progress: Progress | None) -> None:
        """Record (or with None forget) one rule's progress; raise NotLeader."""
        value = _encode(progress) if progress is not None else b""
        result = await self._save([LEADER_KEY, PROGRESS_KEY], [token, rule_id, value])
        if result == _NOT_LEADER:
            raise NotLeader()

    async def fire(
        self, token: str, rule_id: str, at: datetime, deliveries: list[tuple[str, bytes]], progress: Progress,
    ) -> bool:
        """Enqueue one firing's deliveries ((stream key, Delivery JSON) pairs) and record
        `progress`. False if this (rule, time) had already fired: nothing is enqueued then.
        Raise NotLeader if the lock is not ours (nothing is written then)."""
        if self._cluster:
            return await self._fire_across_slots(token, rule_id, at, deliveries, progress)
        names = [LEADER_KEY, fired_key(rule_id, at), PROGRESS_KEY] + [stream for stream, _ in deliveries]
        args = [token, self._dedup_ttl, FIELD, rule_id, _encode(progress)] + [body for _, body in deliveries]
        result = await self._fire(names, args)
        if result == _NOT_LEADER:
            raise NotLeader()
        return result == 1

    async def _fire_across_slots(self, token: str, rule_id: str, at: datetime,
                                 deliveries: list[tuple[str, bytes]], progress: Progress) -> bool:
        """Redis Cluster: the streams lie on other slots than the scheduler's keys, so the firing
        is two steps. First the deliveries, marked per slot as step `fire/<rule>/<time>` (bus.store.once),
        then the fenced dedup mark and progress. A leader that dies (or is deposed) in between
        leaves the firing unrecorded; the next leader fires it again and the markers make that
        write nothing twice, so it is still exactly once (within once.ONCE_TTL_SECONDS)."""
        mark = fired_key(rule_id, at)
        if await self._redis.exists(mark):  # fired already: only the progress is ours to record
            await self.save(token, rule_id, progress)
            return False
        await write_once(self._redis, stream_calls(deliveries), f"fire/{rule_id}/{int(at.timestamp())}")
        result = await self._fire([LEADER_KEY, mark, PROGRESS_KEY], [token, self._dedup_ttl, FIELD, rule_id, _encode(progress)])
        if result == _NOT_LEADER:
            raise NotLeader()
        return result == 1
