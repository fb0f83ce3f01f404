"""Dead-letter queues: the record kept for a delivery that ran out of retries, and the
operations on them (list, show, redrive, purge) that the CLI and the HTTP API share.

A DLQ is a Redis stream `busway:dlq:{name}`: one per target (`dead_letter: true`, named after
the target) or shared by name, and `inbox` for destination records no broker could route.
Dead letters older than RETENTION_SECONDS are trimmed when a new one is written, so a DLQ
cannot grow without bound (SQS's longest retention is 14 days).
"""
from __future__ import annotations

import re
import time
from typing import Any

import msgspec
import redis.asyncio as aioredis

from bus.store.deliveries import Delivery, encode_delivery
from bus.store.connect import is_cluster
from bus.store.keys import DLQ_PATTERN, FIELD, INBOX, as_str, dlq_key, dlq_name, key_slot, stream_key, target_key
from bus.store.once import stream_calls, write_once
from bus.store.scripts import REDRIVE, Call, run_pipelined, run_script

RETENTION_SECONDS = 14 * 24 * 3600
ERROR_MESSAGE_LIMIT = 1024  # Lambda keeps the first 1 KB of an error message
# An inbox item no broker can route: its dead letter's error_code, and the condition of both.
INBOX_UNDECODABLE = "InboxItemUndecodable"  # not an InboxItem: nothing to redrive
INBOX_UNKNOWN_BUS = "UnknownBus"  # redrivable, once the bus exists
UNROUTABLE = "Unroutable"
_ENTRY_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")  # a whole stream id: XRANGE id id is that entry only


class DeadLetter(msgspec.Struct, frozen=True):
    event: msgspec.Raw
    bus: str
    rule: str
    target: str
    function: str
    request_id: str
    error_code: str
    error_message: str
    retry_attempts: int
    exhausted_retry_condition: str
    first_enqueued: float
    failed_at: float

    @property
    def target_key(self) -> str:
        return target_key(self.bus, self.rule, self.target)

    @property
    def from_inbox(self) -> bool:
        """An unroutable inbox item (a delivery always has a rule; rule names are not empty)."""
        return not self.rule


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(DeadLetter).decode


def make_dead_letter(d: Delivery, error_code: str, error_message: str, attempts: int, condition: str) -> DeadLetter:
    return DeadLetter(
        event=d.event, bus=d.bus, rule=d.rule, target=d.target, function=d.function, request_id=d.id,
        error_code=error_code, error_message=error_message[:ERROR_MESSAGE_LIMIT],
        retry_attempts=max(0, attempts - 1), exhausted_retry_condition=condition,
        first_enqueued=d.first_enqueued, failed_at=time.time(),
    )


def make_inbox_dead_letter(entry_id: str, bus: str, event: bytes, error_code: str, error_message: str,
                           enqueued: float) -> DeadLetter:
    """The record of an inbox item no broker can route; `event` must be a JSON object."""
    return DeadLetter(
        event=msgspec.Raw(event), bus=bus, rule="", target="", function="", request_id=entry_id,
        error_code=error_code, error_message=error_message[:ERROR_MESSAGE_LIMIT], retry_attempts=0,
        exhausted_retry_condition=UNROUTABLE, first_enqueued=enqueued, failed_at=time.time(),
    )


def encode_dead_letter(letter: DeadLetter) -> bytes:
    return _encode(letter)


def trim_min_id(now: float | None = None) -> str:
    return str(int(((now or time.time()) - RETENTION_SECONDS) * 1000))


class Letter(msgspec.Struct, frozen=True):
    """A dead letter as listed: which DLQ, its entry id there, and the record."""

    dlq: str
    id: str
    letter: DeadLetter

    def as_dict(self) -> dict[str, Any]:
        out = {f: getattr(self.letter, f) for f in self.letter.__struct_fields__}
        out["event"] = msgspec.json.decode(self.letter.event)
        return {"dlq": self.dlq, "id": self.id, **out}


async def dlq_names(redis: aioredis.Redis) -> list[str]:
    """Every DLQ that holds a letter (SCAN of key names: no letter is read)."""
    return sorted([dlq_name(key) async for key in redis.scan_iter(match=DLQ_PATTERN, count=500)])


def valid_entry_id(entry_id: object) -> bool:
    """A whole stream entry id (`<ms>-<seq>`, each under 2**64), as Redis takes it in XRANGE."""
    match = _ENTRY_ID.match(entry_id) if isinstance(entry_id, str) else None  # ids from JSON may be anything
    return bool(match) and all(int(part) < 2 ** 64 for part in match.groups())


async def find_letters(redis: aioredis.Redis, entry_id: str) -> list[Letter]:
    """The dead letters with this entry id: one XRANGE id id per DLQ, nothing else is read.
    A malformed id finds nothing (rather than a Redis error)."""
    if not valid_entry_id(entry_id):
        return []
    names = await dlq_names(redis)
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.xrange(dlq_key(name), entry_id, entry_id, count=1)
        replies = await pipe.execute()
    return [_letter(name, eid, fields) for name, entries in zip(names, replies) for eid, fields in entries]


async def list_letters(redis: aioredis.Redis, target: str | None = None, ids: list[str] | None = None) -> list[Letter]:
    """Every dead letter, or those of `target` (a target key), or those with these entry ids."""
    if ids is not None:
        found = [letter for entry_id in dict.fromkeys(ids) for letter in await find_letters(redis, entry_id)]
    else:
        found = [_letter(name, entry_id, fields) for name in await dlq_names(redis)
                 for entry_id, fields in await redis.xrange(dlq_key(name))]
    return [item for item in found if target is None or item.letter.target_key == target]


def _letter(name: str, entry_id: bytes | str, fields: dict) -> Letter:
    return Letter(name, as_str(entry_id), _decode(fields[FIELD]))


async def redrive(redis: aioredis.Redis, letters: list[Letter]) -> int:
    """Back to each target's queue as a fresh delivery (attempts and event age reset); an inbox
    item back to the inbox. Each letter moves in one script (XDEL, then XADD only if that removed
    it), so concurrent redrives move it once. Returns how many letters this call moved."""
    calls = [_redrive_call(item) for item in letters if not _undecodable(item.letter)]
    if is_cluster(redis):
        return await _redrive_across_slots(redis, calls)
    results = await run_pipelined(redis, calls) if calls else []
    for result in results:
        if isinstance(result, Exception):
            raise result
    return sum(1 for result in results if result == 1)


async def _redrive_across_slots(redis: aioredis.Redis, calls: list[Call]) -> int:
    """Redis Cluster: a shared DLQ and its letters' target streams lie on different slots. Each
    letter is written to its destination once (bus.store.once, step `redrive/<dlq entry>`: two
    redrives at once write it once), then XDEL'd; a crash in between leaves the letter in its DLQ
    as well, and redriving it again within once.ONCE_TTL_SECONDS writes nothing twice."""
    moved = 0
    for _, (dlq, destination), (entry_id, field, payload) in calls:
        if key_slot(dlq) == key_slot(destination):
            moved += await run_script(redis, REDRIVE, [dlq, destination], [entry_id, field, payload]) == 1
            continue
        if not await redis.xrange(dlq, entry_id, entry_id, count=1):
            continue  # gone already (redriven or purged)
        await write_once(redis, stream_calls([(destination, payload)]), f"redrive/{as_str(dlq)}/{entry_id}")
        moved += await redis.xdel(dlq, entry_id) == 1
    return moved


def _undecodable(letter: DeadLetter) -> bool:
    return letter.from_inbox and letter.error_code == INBOX_UNDECODABLE


def _redrive_call(item: Letter) -> Call:
    letter = item.letter
    if letter.from_inbox:
        item_json = _encode({"bus": letter.bus, "event": letter.event})  # an InboxItem
        return REDRIVE, [dlq_key(item.dlq), INBOX], [item.id, FIELD, item_json]
    now = time.time()
    delivery = Delivery(
        id=letter.request_id, event=letter.event, bus=letter.bus, rule=letter.rule, target=letter.target,
        function=letter.function, first_enqueued=now, ingested=now, retries=0,
    )
    return REDRIVE, [dlq_key(item.dlq), stream_key(letter.target_key)], [item.id, FIELD, encode_delivery(delivery)]


async def purge(redis: aioredis.Redis, letters: list[Letter]) -> int:
    """Delete these dead letters; returns how many were still there."""
    if not letters:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for item in letters:
            pipe.xdel(dlq_key(item.dlq), item.id)
        return sum(await pipe.execute())
