"""The delivery queue: every Redis operation brokers and workers make on deliveries.

The worker and the broker call these methods and never Redis itself (as saq's `Queue`
keeps its worker free of Redis calls): publish and read the target registry, enqueue,
read, claim, renew, give back, finish with typed follow-ups, move due retries, take and
release reserved-concurrency leases, take turns under API destinations' rate limits,
heartbeat and prune consumers.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
import redis.asyncio as aioredis

from bus.ids import new_id
from bus.store.connect import is_cluster
from bus.store.deadletters import dlq_names, trim_min_id
from bus.store.deliveries import (
    Delivery, MappingRecord, TargetRecord, decode_mappings, decode_record, encode_delivery, encode_mappings, encode_record,
)
from bus.store.followups import FollowUp, script_args
from bus.store.groupcommit import GroupCommit, Part
from bus.store.keys import (
    FIELD, GROUP, MAPPINGS, REGISTRY, REGISTRY_VERSION, WORKERS, archive_bytes_key, archive_events_key, as_str, concurrency_key,
    delayed_key, dlq_key, invoke_claim_key, key_slot, once_key, rate_key, stream_key,
)
from bus.store.once import write_once
from bus.store.scripts import ENQUEUE, REPLY_TTL_MS, Scripts, run_pipelined, run_script

log = logging.getLogger("bus.store")

GIVE_BACK_IDLE_MS = 24 * 3600 * 1000  # past every worker's lease: reclaimable at once
DEAD_CONSUMER_IDLE_MS = 10 * 60 * 1000  # only consumers with nothing pending are removed
HEARTBEAT_TTL_SECONDS = 60
REPLICA_WAIT_MS = 1000  # --durability replicated: how long PutEvents waits for a replica's confirmation
# Redis Cluster (see docs/architecture.md, "On Redis Cluster"):
POLL_FIRST_SECONDS, POLL_MAX_SECONDS = 0.001, 0.02  # a worker's reads of streams on several slots, idle


class RateTurn(NamedTuple):
    """Queue.take_rate's answer: a turn granted (send after `wait` s), or refused (ask again in `wait` s)."""

    granted: bool
    wait: float


class Archived(NamedTuple):
    """One event to keep in one archive, written by Queue.enqueue with the request's deliveries."""

    archive: str
    score_ms: int  # the event's `time`, epoch ms: replays and retention go by it
    event: bytes  # the event's JSON, exactly as its deliveries carry it


class RateTurns(NamedTuple):
    """Queue.take_rates's answer: `count` consecutive turns, the first after `wait` s and each next
    one `interval` s after the one before; or none (count 0: ask again in `wait` s)."""

    count: int
    wait: float
    interval: float


@dataclass(frozen=True)
class TargetStats:
    """A target's queue at one moment: what the queue gauges show."""

    depth: int  # entries in the stream (pending ones included)
    pending: int  # read by a worker and not yet finished
    delayed: int  # waiting in the retry set
    oldest: float | None  # epoch s of the oldest entry in the stream


@dataclass
class Taken:
    """A stream entry this consumer now holds: read fresh, or claimed from a silent worker."""

    stream: str
    entry_id: bytes
    fields: dict
    times_delivered: int  # the stream's delivery counter, this read included


class Queue:
    def __init__(self, redis: aioredis.Redis, replicas: int = 0, wait_ms: int = REPLICA_WAIT_MS):
        self.redis = redis
        self.replicas = replicas  # enqueue WAITs for this many replicas (--durability replicated: 1)
        self.wait_ms = wait_ms  # ... this long at most
        self.cluster = is_cluster(redis)  # then writes and reads go slot by slot
        self._scripts = Scripts(redis, cluster=self.cluster)
        self._read_turn = 0
        # One Redis: blocking reads go on a connection of their own, whose client id wake_reader
        # unblocks (a worker's targets changed). None on Cluster, where reads go slot by slot.
        self._reader = None if self.cluster else redis.client()
        self._reader_id: int | None = None
        # One Redis: requests arriving while ENQUEUE calls are in flight share the next one (see
        # bus/store/groupcommit.py). Two in flight: while Redis runs one, the broker sends the next
        # (A/B +8-12 % over one). On Cluster a request's calls go slot by slot, each on its own.
        self.group_commit = None if self.cluster else GroupCommit(self._enqueue_part, max_in_flight=2)

    # --- the target registry (brokers publish, workers read) --------------------------------

    async def publish_targets(self, records: Iterable[TargetRecord]) -> None:
        """Make targets known to workers and create their groups, so no early event is missed.

        Groups start at id 0: entries enqueued before the group existed are still delivered.
        """
        records = list(records)
        if not records:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for record in records:
                pipe.hset(REGISTRY, record.key, encode_record(record))
                pipe.xgroup_create(record.stream, GROUP, id="0", mkstream=True)
            pipe.incr(REGISTRY_VERSION)  # after the groups: a worker that sees it finds them made
            results = await pipe.execute(raise_on_error=False)
        for r in results:
            if isinstance(r, Exception) and "BUSYGROUP" not in str(r):
                raise r

    async def publish_mappings(self, records: list[MappingRecord]) -> None:
        """Make the event source mappings known to workers (they read them with the targets)."""
        raw = encode_mappings(records)
        if await self.redis.get(MAPPINGS) != raw:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(MAPPINGS, raw)
                pipe.incr(REGISTRY_VERSION)
                await pipe.execute()

    async def mappings(self) -> list[MappingRecord]:
        raw = await self.redis.get(MAPPINGS)
        try:
            return decode_mappings(raw) if raw else []
        except msgspec.DecodeError as exc:
            log.warning("unreadable event source mappings (%s); none polled", exc)
            return []

    async def targets_version(self) -> int:
        """The registry's change counter (REGISTRY_VERSION): it moves whenever targets are published."""
        return int(await self.redis.get(REGISTRY_VERSION) or 0)

    async def targets(self) -> dict[str, TargetRecord]:
        """Published targets by stream key. A record this busway cannot read is skipped (logged):
        a broker of this version republishes every target it declares when it starts."""
        out = {}
        for key, raw in (await self.redis.hgetall(REGISTRY)).items():
            try:
                record = decode_record(raw)
            except msgspec.DecodeError as exc:
                log.warning("target %s: unreadable registry record (%s); skipped", as_str(key), exc)
                continue
            out[record.stream] = record
        return out

    # --- deliveries in ------------------------------------------------------------------------

    async def enqueue(self, deliveries: list[Delivery], archived: Iterable[Archived] = (),
                      step: str | None = None) -> None:
        """XADD every delivery and ZADD every archived event in one atomic script call: all of a
        request's deliveries and archive entries land, or none.

        On Redis Cluster, one call per slot the keys fall on; when there are several, bus.store.once
        writes them as step `step` (a request id: a client's retry with the same one writes no slot
        twice), so a partial failure ends in every delivery stored once, or in an error."""
        archived = list(archived)
        if not deliveries and not archived:
            return
        if self.group_commit is not None:  # the hot path: one call, shared with other requests
            await self.group_commit.write(_part(deliveries, archived))
            return
        calls = self._enqueue_calls(deliveries, archived)
        if len(calls) == 1:  # one slot: one atomic call, no marker needed (TTL 0)
            [(slot, (keys, args))] = calls.items()
            await self._enqueue_one(once_key(slot, "-"), keys, args)
            return
        await write_once(self.redis, calls, step or new_id(), replicas=self.replicas, wait_ms=self.wait_ms)

    async def _enqueue_one(self, marker: str, keys: list, args: list) -> None:
        if not self.replicas:
            await run_script(self.redis, ENQUEUE, [marker, *keys], [0, *args])
            return
        [result] = await run_pipelined(self.redis, [(ENQUEUE, [marker, *keys], [0, *args])], replicas=self.replicas,
                                       wait_ms=self.wait_ms)
        if isinstance(result, Exception):
            raise result

    def _enqueue_calls(self, deliveries: list[Delivery], archived: list[Archived]) -> dict[int, tuple[list, list]]:
        """ENQUEUE's (keys, args) without the marker, one per cluster slot the keys fall on."""
        streams: dict[int, list[Delivery]] = {}
        for d in deliveries:
            streams.setdefault(key_slot(stream_key(d.target_key)), []).append(d)
        archives: dict[int, list[Archived]] = {}
        for item in archived:
            archives.setdefault(key_slot(archive_events_key(item.archive)), []).append(item)
        return {slot: _call_args(_part(streams.get(slot, []), archives.get(slot, [])))
                for slot in {*streams, *archives}}

    async def _enqueue_part(self, part: Part) -> None:
        await self._enqueue_one(_no_marker(), *_call_args(part))

    # --- taking work --------------------------------------------------------------------------

    async def read(self, consumer: str, streams: Iterable[str], count: int, block_ms: int) -> list[Taken]:
        """Up to `count` new entries of `streams` for `consumer`, waiting up to `block_ms` for one.

        On Redis Cluster one XREADGROUP cannot span slots: streams are read one slot at a time,
        every slot's read in one pipeline (a round trip per node), and when that finds nothing the
        reads are repeated every few ms (POLL_MAX_SECONDS at most) until `block_ms` is over; with
        all streams on one slot, it blocks as on one Redis."""
        streams = list(streams)
        if not self.cluster:
            return await self._read(consumer, streams, count, block_ms)
        groups: dict[int, list[str]] = {}
        for stream in streams:
            groups.setdefault(key_slot(stream), []).append(stream)
        if len(groups) <= 1:
            return await self._read(consumer, streams, count, block_ms)
        deadline = time.monotonic() + block_ms / 1000
        pause = POLL_FIRST_SECONDS
        while True:
            taken = await self._read_slots(consumer, list(groups.values()), count)
            if taken or time.monotonic() >= deadline:
                return taken
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(POLL_MAX_SECONDS, pause * 2)

    async def _read(self, consumer: str, streams: list[str], count: int, block_ms: int) -> list[Taken]:
        reader = self._reader or self.redis
        try:
            if self._reader is not None and self._reader_id is None:
                self._reader_id = await reader.client_id()
            replies = await reader.xreadgroup(GROUP, consumer, {s: ">" for s in streams}, count=count, block=block_ms)
        except BaseException:
            self._reader_id = None  # its connection may be a new one next time: ask again
            raise
        return [Taken(as_str(stream), entry_id, fields, 1)
                for stream, entries in replies or [] for entry_id, fields in entries]

    async def _read_slots(self, consumer: str, groups: list[list[str]], count: int) -> list[Taken]:
        """One non-blocking read per slot, pipelined, starting at a different slot each time so
        that a small `count` does not always serve the same streams first."""
        self._read_turn = (self._read_turn + 1) % len(groups)
        groups = groups[self._read_turn:] + groups[:self._read_turn]
        per = max(1, count // len(groups))
        groups = groups[:max(1, count // per)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for group in groups:
                # Named node: redis-py's cluster client would otherwise ask a node COMMAND GETKEYS for
                # every XREADGROUP to find its key (a round trip each; a fifth of a worker's time).
                pipe.execute_command("XREADGROUP", "GROUP", GROUP, consumer, "COUNT", per, "STREAMS", *group,
                                     *[">"] * len(group), target_nodes=self.redis.get_node_from_key(group[0]))
            replies = await pipe.execute()
        return [Taken(as_str(stream), entry_id, fields, 1)
                for reply in replies for stream, entries in reply or [] for entry_id, fields in entries]

    async def wake_reader(self) -> None:
        """End a read blocked in Redis now, as if its time were up (CLIENT UNBLOCK ... TIMEOUT: no
        entry is taken by it), so the next read can include streams the blocked one lacks. Does
        nothing on Cluster or with no read begun; a read still on its way blocks its full time."""
        if self._reader_id is not None:
            await self.redis.client_unblock(self._reader_id)

    async def claim(self, consumer: str, stream: str, idle_ms: int, count: int) -> list[Taken]:
        """Take over entries of `stream` idle longer than `idle_ms` (their worker died or hung)."""
        _, entries, *_ = await self.redis.xautoclaim(stream, GROUP, consumer, idle_ms, "0-0", count=count)
        out = []
        for entry_id, fields in entries:
            if not fields:  # deleted meanwhile (Redis < 7 returns it with no fields)
                await self.redis.xack(stream, GROUP, entry_id)
                continue
            pending = await self.redis.xpending_range(stream, GROUP, entry_id, entry_id, 1)
            out.append(Taken(stream, entry_id, fields, pending[0]["times_delivered"] if pending else 1))
        return out

    async def renew(self, consumer: str, stream: str, entry_ids: Iterable[bytes]) -> list[bytes]:
        """Reset the lease of entries this consumer holds; return those another worker took."""
        return await self._scripts.renew([stream], [GROUP, consumer, *entry_ids])

    async def give_back(self, consumer: str, taken: list[Taken]) -> None:
        """Undo the read of entries that never started: restore their count, make them claimable."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for t in taken:
                pipe.xclaim(t.stream, GROUP, consumer, 0, [t.entry_id], idle=GIVE_BACK_IDLE_MS,
                            retrycount=t.times_delivered - 1, justid=True)
            await pipe.execute()

    # --- finishing ----------------------------------------------------------------------------

    async def finish(self, record: TargetRecord, entry_id: bytes, follow_ups: list[FollowUp]) -> bool:
        """Ack and delete the entry and write its follow-ups, atomically; False (and nothing
        written) if another worker finished it first. Batched: one script call per stream per ms."""
        args = [script_args(record, f) for f in follow_ups]
        return await self._scripts.finish(record.stream, entry_id, args)

    async def trim_dead_letters(self, dlq: str) -> None:
        """Drop dead letters past their retention (bus.store.deadletters.RETENTION_SECONDS)."""
        await self.redis.xtrim(dlq_key(dlq), minid=trim_min_id(), approximate=True)

    async def move_due(self, records: Iterable[TargetRecord], limit: int = 100) -> None:
        """Move retries whose time has come from each target's retry set back into its stream."""
        now_ms = int(time.time() * 1000)
        for record in records:
            await self._scripts.move_due([delayed_key(record.key), record.stream], [now_ms, limit, FIELD])

    # --- reserved concurrency -----------------------------------------------------------------

    async def acquire(self, function: str, limit: int, token: str, expiry_ms: int) -> bool:
        """Take one of `limit` leases of `function` (a dead worker's lease ends at its expiry)."""
        now_ms = int(time.time() * 1000)
        return bool(await self._scripts.acquire([concurrency_key(function)], [now_ms, expiry_ms, limit, token]))

    async def release(self, function: str, token: str) -> None:
        await self.redis.zrem(concurrency_key(function), token)

    # --- synchronous Invoke --------------------------------------------------------------------

    async def claim_invocation(self, request_id: str, claimer: str, ttl_ms: int) -> str:
        """Claim a synchronous Invoke for `claimer`; who holds it (`claimer` if this claim won)."""
        return as_str(await self._scripts.invoke_claim([invoke_claim_key(request_id)], [claimer, ttl_ms]))

    async def read_replies(self, reader: Any, stream: str, after: bytes, block_ms: int) -> list[tuple[bytes, bytes]]:
        """Replies on a broker's reply stream after entry `after`, waiting up to `block_ms` on
        `reader` (a connection of the broker's own: the wait blocks it)."""
        found = await reader.xread({stream: after}, block=block_ms)
        return [(entry_id, fields.get(FIELD, b"")) for _, entries in found or [] for entry_id, fields in entries]

    async def drop_replies(self, stream: str, entry_ids: list[bytes]) -> None:
        """Delete replies the broker has read (and keep the stream's TTL: it is read)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xdel(stream, *entry_ids)
            pipe.pexpire(stream, REPLY_TTL_MS)
            await pipe.execute()

    # --- API destination rate limits ------------------------------------------------------------

    async def take_rate(self, destination: str, rate_per_second: int, max_wait: float = 0.0) -> RateTurn:
        """A turn under `destination`'s rate limit, shared by every worker (rate_take.lua).

        Granted: send after `wait` seconds (0: now; at most `max_wait`). Not granted: nothing
        was taken; `wait` is how long until a turn could be had."""
        turns = await self.take_rates(destination, rate_per_second, max_wait, 1)
        return RateTurn(turns.count > 0, turns.wait)

    async def take_rates(self, destination: str, rate_per_second: int, max_wait: float, count: int) -> RateTurns:
        """Up to `count` consecutive turns under `destination`'s rate limit in one call: as many
        as are due within `max_wait` (at least one, or none and nothing taken)."""
        interval_us = max(1, round(1_000_000 / max(rate_per_second, 1)))
        n, wait_us = await self._scripts.rate_take(
            [rate_key(destination)], [interval_us, max(0, round(max_wait * 1_000_000)), max(1, count)])
        return RateTurns(int(n), int(wait_us) / 1_000_000, interval_us / 1_000_000)

    # --- what operators see -----------------------------------------------------------------

    async def stats(self, records: list[TargetRecord]) -> dict[str, TargetStats]:
        """Every target's queue, by target key, in one pipelined round trip (cheap to scrape)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for record in records:
                pipe.xlen(record.stream)
                pipe.xpending(record.stream, GROUP)
                pipe.zcard(delayed_key(record.key))
                pipe.xrange(record.stream, count=1)
            results = await pipe.execute(raise_on_error=False)
        out = {}
        for i, record in enumerate(records):
            depth, pending, delayed, first = results[i * 4:(i + 1) * 4]
            if isinstance(depth, Exception):  # e.g. the stream is not a stream: no figures for it
                continue
            out[record.key] = TargetStats(
                depth, pending["pending"] if isinstance(pending, dict) else 0,
                delayed if isinstance(delayed, int) else 0,
                _entry_time(first[0][0]) if isinstance(first, list) and first else None)
        return out

    async def dead_letter_depths(self) -> dict[str, int]:
        """Letters in every DLQ, by DLQ name."""
        names = await dlq_names(self.redis)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.xlen(dlq_key(name))
            lengths = await pipe.execute()
        return dict(zip(names, lengths))

    # --- consumers ----------------------------------------------------------------------------

    async def heartbeat(self, consumer: str) -> None:
        await self.redis.zadd(WORKERS, {consumer: time.time()})

    async def leave(self, consumer: str) -> None:
        await self.redis.zrem(WORKERS, consumer)

    async def prune(self, consumer: str, streams: Iterable[str]) -> None:
        """Forget dead workers: every restart is a new consumer name, and groups would grow forever.

        Only consumers with no pending entries go (deleting one with pending entries would make
        them unclaimable); a live one that is merely idle is recreated by its next read.
        """
        await self.redis.zremrangebyscore(WORKERS, "-inf", time.time() - HEARTBEAT_TTL_SECONDS)
        for stream in streams:
            for c in await self.redis.xinfo_consumers(stream, GROUP):
                name = as_str(c["name"])
                if c["pending"] == 0 and c["idle"] > DEAD_CONSUMER_IDLE_MS and name != consumer:
                    await self.redis.xgroup_delconsumer(stream, GROUP, name)


def _part(deliveries: list[Delivery], archived: list[Archived]) -> Part:
    """A request's deliveries and archive copies as ENQUEUE's keys and args will carry them."""
    payloads = [encode_delivery(d) for d in deliveries]
    part = Part([stream_key(d.target_key) for d in deliveries], payloads, size=sum(map(len, payloads)))
    by_archive: dict[str, list[Any]] = {}
    for item in archived:  # one ZADD per archive, not per event
        by_archive.setdefault(item.archive, []).extend((item.score_ms, item.event))
        part.size += len(item.event)
    for archive, pairs in by_archive.items():
        part.archive_keys += (archive_events_key(archive), archive_bytes_key(archive))
        part.archive_args += (len(pairs) // 2, *pairs)
    return part


def _call_args(part: Part) -> tuple[list, list]:
    """ENQUEUE's keys and args (without the marker and its TTL) for a part."""
    return [*part.streams, *part.archive_keys], [FIELD, len(part.payloads), *part.payloads, *part.archive_args]


@functools.cache
def _no_marker() -> str:
    """ENQUEUE's first key when it sets no marker (one Redis: any key does; read once)."""
    return once_key(0, "-")


def _entry_time(entry_id: bytes) -> float:
    """When a stream entry was added: its id's milliseconds."""
    return int(entry_id.split(b"-")[0]) / 1000
