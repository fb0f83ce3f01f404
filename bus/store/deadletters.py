"""Dead-letter queues: the record kept for a delivery that ran out of retries, and the
operations on them (list, show, redrive, purge) that the CLI and the HTTP API share.

A DLQ is a Redis stream `busway:dlq:{name}`: one per target (`dead_letter: true`, named after
the target) or shared by name. Dead letters older than RETENTION_SECONDS are trimmed when a
new one is written, so a DLQ cannot grow without bound (SQS's longest retention is 14 days).
"""
from __future__ import annotations

import time
from typing import Any

import msgspec
import redis.asyncio as aioredis

from bus.store.deliveries import FIELD, PREFIX, Delivery, dlq_key, encode_delivery, stream_key, target_key

RETENTION_SECONDS = 14 * 24 * 3600
ERROR_MESSAGE_LIMIT = 1024  # Lambda keeps the first 1 KB of an error message


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


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(DeadLetter).decode


def make_dead_letter(d: Delivery, error_code: str, error_message: str, attempts: int, condition: str) -> DeadLetter:
    return DeadLetter(
        event=d.event, bus=d.bus, rule=d.rule, target=d.target, function=d.function, request_id=d.id,
        error_code=error_code, error_message=error_message[:ERROR_MESSAGE_LIMIT],
        retry_attempts=max(0, attempts - 1), exhausted_retry_condition=condition,
        first_enqueued=d.first_enqueued, failed_at=time.time(),
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
    prefix = f"{PREFIX}:dlq:{{"
    names = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=500):
        key = key.decode() if isinstance(key, bytes) else key
        names.append(key[len(prefix):-1])
    return sorted(names)


async def list_letters(redis: aioredis.Redis, target: str | None = None, ids: list[str] | None = None) -> list[Letter]:
    out = []
    for name in await dlq_names(redis):
        for entry_id, fields in await redis.xrange(dlq_key(name)):
            entry_id = entry_id.decode()
            if ids is not None and entry_id not in ids:
                continue
            letter = _decode(fields[FIELD])
            if target is None or letter.target_key == target:
                out.append(Letter(name, entry_id, letter))
    return out


async def redrive(redis: aioredis.Redis, letters: list[Letter]) -> int:
    """Back to each target's queue as a fresh delivery (attempts and event age reset)."""
    now = time.time()
    for item in letters:
        letter = item.letter
        delivery = Delivery(
            id=letter.request_id, event=letter.event, bus=letter.bus, rule=letter.rule, target=letter.target,
            function=letter.function, first_enqueued=now, ingested=now, retries=0,
        )
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(stream_key(letter.target_key), {FIELD: encode_delivery(delivery)})
            pipe.xdel(dlq_key(item.dlq), item.id)
            await pipe.execute()
    return len(letters)


async def purge(redis: aioredis.Redis, letters: list[Letter]) -> int:
    async with redis.pipeline(transaction=True) as pipe:
        for item in letters:
            pipe.xdel(dlq_key(item.dlq), item.id)
        await pipe.execute()
    return len(letters)
