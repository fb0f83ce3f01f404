"""Bus resource policies (PutPermission, RemovePermission), kept in Redis for every broker.

One hash (keys.API_POLICIES): bus name -> the policy document's JSON text, exactly as
DescribeEventBus shows it. Every change bumps keys.API_POLICIES_VERSION, which every broker
polls (bus.broker.policies). A change is a compare-and-set in one Lua call (POLICY_SAVE): the
caller says what policy it read, and another writer's change in between is a Conflict, never
overwritten (AWS's ConcurrentModificationException).
"""
from __future__ import annotations

import redis.asyncio as aioredis

from bus.store.connect import snapshot_pipeline
from bus.store.keys import API_POLICIES, API_POLICIES_VERSION
from bus.store.scripts import POLICY_SAVE, run_script


class Conflict(Exception):
    """The stored policy is no longer the one the caller read."""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


async def version(redis: aioredis.Redis) -> int:
    return int(await redis.get(API_POLICIES_VERSION) or 0)


async def get(redis: aioredis.Redis, bus: str) -> str | None:
    raw = await redis.hget(API_POLICIES, bus)
    return None if raw is None else _text(raw)


async def load(redis: aioredis.Redis) -> tuple[int, dict[str, str]]:
    """(version, every bus's policy), read together so the version is the policies'."""
    async with snapshot_pipeline(redis) as pipe:
        pipe.get(API_POLICIES_VERSION)
        pipe.hgetall(API_POLICIES)
        raw_version, raw = await pipe.execute()
    return int(raw_version or 0), {_text(k): _text(v) for k, v in raw.items()}


async def save(redis: aioredis.Redis, bus: str, expected: str | None, new: str | None) -> int:
    """Replace the policy the caller read (`expected`; None: none) by `new` (None: remove it).
    The new version; Conflict if another writer changed it meanwhile."""
    got = await run_script(redis, POLICY_SAVE, [API_POLICIES, API_POLICIES_VERSION],
                           [bus, "1", expected or "", new or ""])
    if got == -1:
        raise Conflict(bus)
    return int(got)


async def forget(redis: aioredis.Redis, bus: str) -> None:
    """Remove a deleted bus's policy, whatever it is (a new bus of that name starts with none)."""
    await run_script(redis, POLICY_SAVE, [API_POLICIES, API_POLICIES_VERSION], [bus, "0", "", ""])


async def replace(redis: aioredis.Redis, bus: str, expected: str | None, new: str | None) -> bool:
    """save() as a compare-and-set answer: whether it wrote (False: another writer changed it)."""
    try:
        await save(redis, bus, expected, new)
    except Conflict:
        return False
    return True
