"""Writes across Redis Cluster slots that may be repeated: each slot's part at most once.

One script call cannot span slots, so a step that writes streams on several slots (a request's
deliveries, a schedule firing, a replay step, a redrive) is one ENQUEUE call per slot, each of
which also sets a marker (keys.once_key(slot, step)) in the same atomic call and writes nothing
if the marker is there. The step is then repeated until every slot answered: by us after a
failed node or a failover, by a client retrying with the same request id, by the next scheduler
or replay leader redoing a step its predecessor died in. Each repeat writes only the slots
still missing, so every delivery is stored once or the caller gets an error.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis

from bus.observe import metrics
from bus.store.connect import Backoff, unreachable
from bus.store.keys import FIELD, key_slot, once_key
from bus.store.scripts import ENQUEUE, NotReplicated, run_pipelined

log = logging.getLogger("bus.store")

ONCE_TTL_SECONDS = 120  # how long a slot's part of a step stays marked done: past botocore's 3 attempts (<= 20 s apart)
RETRY_SECONDS = 10.0  # how long unwritten slots are tried again (a failover takes seconds)

Calls = dict[int, tuple[list[Any], list[Any]]]  # slot -> ENQUEUE's keys and args without the marker


def stream_calls(items: Iterable[tuple[str, bytes]], slot_of: Callable[[str], int] = key_slot) -> Calls:
    """ENQUEUE calls for (stream, payload) pairs, one per slot."""
    by_slot: dict[int, list[tuple[str, bytes]]] = {}
    for stream, payload in items:
        by_slot.setdefault(slot_of(stream), []).append((stream, payload))
    return {slot: ([s for s, _ in pairs], [FIELD, len(pairs), *(p for _, p in pairs)]) for slot, pairs in by_slot.items()}


async def write_once(redis: aioredis.Redis, calls: Calls, step: str, retry_seconds: float = RETRY_SECONDS,
                     replicas: int = 0, wait_ms: int = 1000) -> int:
    """Make every slot's call of `step`, marked, until all are done; how many slots were done
    already (a repeat's). Raise the last error if some slot still fails after `retry_seconds`,
    or at once for an error that is no outage (a wrong key type, say). `replicas`: WAIT for that
    many replicas of each node written (scripts.run_pipelined); NotReplicated is raised as is."""
    ttl_ms = ONCE_TTL_SECONDS * 1000
    left = dict(calls)
    deadline = time.monotonic() + retry_seconds
    backoff = Backoff()
    repeats = 0
    while True:
        batch = [(ENQUEUE, [once_key(slot, step), *keys], [ttl_ms, *args]) for slot, (keys, args) in left.items()]
        try:
            results = await run_pipelined(redis, batch, replicas=replicas, wait_ms=wait_ms)
        except NotReplicated:
            raise
        except Exception as exc:  # a node's connection failed: which of its calls ran is unknown
            results = [exc] * len(batch)
        errors = []
        for slot, result in zip(list(left), results):
            if isinstance(result, Exception):
                errors.append(result)
                continue
            if result == 0:  # marked done: a repeat of this step, whose earlier try wrote it
                repeats += 1
                metrics.CROSS_SLOT_DUPLICATES.labels("enqueue").inc()
            del left[slot]
        if not left:
            return repeats
        if not (unreachable(errors[0]) or moved(errors[0])) or time.monotonic() > deadline:
            raise errors[0]
        log.warning("%s: %d of %d slots not written yet (%s); trying them again", step, len(left), len(calls), errors[0])
        await asyncio.sleep(backoff.next())


def moved(exc: BaseException) -> bool:
    """A cluster's answer that a slot is elsewhere now or not served yet (a failover, a reshard):
    worth asking again once the client has the new topology."""
    text = str(exc)
    return any(word in text for word in ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "slot"))
