"""The Redis side of delivery: key names, the delivery record, the target registry, enqueue.

One stream per target (bus/rule/target id) with one consumer group; key names are in
bus.store.keys.
"""
from __future__ import annotations

import time
from collections.abc import Iterable

import msgspec
import redis.asyncio as aioredis

from bus.ids import new_id
from bus.config.model import Config, FunctionSettings, RetryPolicy, Rule, Target
from bus.store.keys import (  # noqa: F401 - re-exported until every caller imports keys
    FIELD, GROUP, PREFIX, REGISTRY, WORKERS, as_str, delayed_key, dlq_key, stream_key, target_key,
)
from bus.store.scripts import ENQUEUE, run_script

class TargetInfo(msgspec.Struct, frozen=True):
    """What a worker needs to know about a target; the broker publishes it to Redis."""

    bus: str
    rule: str
    target: str
    function: str
    retry_policy: RetryPolicy = RetryPolicy()
    dead_letter: bool | str = False
    on_success: str | None = None
    on_failure: str | None = None
    settings: FunctionSettings = FunctionSettings()

    @property
    def key(self) -> str:
        return target_key(self.bus, self.rule, self.target)

    @property
    def stream(self) -> str:
        return stream_key(self.key)

    @property
    def dlq_name(self) -> str | None:
        if self.dead_letter is True:
            return self.key
        return self.dead_letter or None


class Delivery(msgspec.Struct, frozen=True):
    """One event on its way to one target: the queued unit of work.

    `id` is the Lambda request id: stable across retries and redeliveries of this delivery.
    `retries` counts attempts already finished by earlier entries of this delivery (a retry
    re-enqueues the record); the stream's own delivery counter adds the attempts of this entry.
    """

    id: str
    event: msgspec.Raw
    bus: str
    rule: str
    target: str
    function: str
    first_enqueued: float
    ingested: float
    retries: int = 0

    @property
    def target_key(self) -> str:
        return target_key(self.bus, self.rule, self.target)


_encode = msgspec.json.Encoder().encode
_decode_delivery = msgspec.json.Decoder(Delivery).decode
_decode_target = msgspec.json.Decoder(TargetInfo).decode


def encode_delivery(d: Delivery) -> bytes:
    return _encode(d)


def decode_delivery(raw: bytes) -> Delivery:
    return _decode_delivery(raw)


def new_delivery(event: bytes, info: TargetInfo, ingested: float) -> Delivery:
    now = time.time()
    return Delivery(
        id=new_id(), event=msgspec.Raw(event), bus=info.bus, rule=info.rule,
        target=info.target, function=info.function, first_enqueued=now, ingested=ingested,
    )


def target_infos(config: Config, rule: Rule) -> list[TargetInfo]:
    return [_info(config, rule, t) for t in rule.targets]


def _info(config: Config, rule: Rule, t: Target) -> TargetInfo:
    return TargetInfo(
        bus=rule.bus, rule=rule.name, target=t.id, function=t.function,
        retry_policy=t.retry_policy, dead_letter=t.dead_letter, on_success=t.on_success,
        on_failure=t.on_failure, settings=config.function(t.function),
    )


async def publish_targets(redis: aioredis.Redis, infos: Iterable[TargetInfo]) -> None:
    """Make targets known to workers and create their groups, so no early event is missed.

    Groups start at id 0: entries enqueued before the group existed are still delivered.
    """
    infos = list(infos)
    if not infos:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for info in infos:
            pipe.hset(REGISTRY, info.key, _encode(info))
            pipe.xgroup_create(info.stream, GROUP, id="0", mkstream=True)
        results = await pipe.execute(raise_on_error=False)
    for r in results:
        if isinstance(r, Exception) and "BUSYGROUP" not in str(r):
            raise r


async def read_targets(redis: aioredis.Redis) -> dict[str, TargetInfo]:
    raw = await redis.hgetall(REGISTRY)
    return {as_str(k): _decode_target(v) for k, v in raw.items()}


async def enqueue(redis: aioredis.Redis, deliveries: list[Delivery]) -> None:
    """XADD every delivery in one atomic script call: all of a request's deliveries land, or none."""
    if not deliveries:
        return
    await run_script(redis, ENQUEUE, [stream_key(d.target_key) for d in deliveries],
                     [FIELD, *map(encode_delivery, deliveries)])


