"""Tags of buses, rules, archives, connections and API destinations (TagResource and the create
calls), kept in Redis for every broker.

One hash (keys.API_TAGS): resource ARN -> {key: value} JSON (the callers pass the resource's
canonical ARN, bus.broker.awstags).

Every change is one Lua call (TAGS_SAVE): merging or removing keys never loses another
writer's, and the 50-tag cap is checked with the write. A rule's PutRule tags live in the rule;
its entry, once written, takes their place (`base` is where a first change starts from).
"""
from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from bus.store.keys import API_TAGS
from bus.store.scripts import TAGS_SAVE, run_script

MAX_TAGS = 50  # AWS's tags per resource

Tags = dict[str, str]
_decode = msgspec.json.Decoder(Tags).decode
_encode = msgspec.json.encode


class TooManyTags(Exception):
    """The change would leave the resource with more than its cap of tags (nothing written)."""


# --- reading and writing -----------------------------------------------------------------------

async def get(redis: aioredis.Redis, arn: str) -> Tags | None:
    """The stored tags; None if the resource has no entry (a rule's tags are then its own)."""
    raw = await redis.hget(API_TAGS, arn)
    if raw is None:
        return None
    try:
        return _decode(raw)
    except msgspec.DecodeError:  # not ours to fix here: show none rather than fail the call
        return {}


async def tag(redis: aioredis.Redis, arn: str, tags: Tags, base: Tags | None = None, limit: int = MAX_TAGS) -> int:
    """Add or overwrite `tags`; how many the resource holds now. TooManyTags past `limit`."""
    return await _save(redis, arn, "tag", _encode(tags), base, limit)


async def untag(redis: aioredis.Redis, arn: str, keys: list[str], base: Tags | None = None) -> int:
    """Remove `keys` (absent ones are no error, as on AWS); how many tags are left."""
    return await _save(redis, arn, "untag", _encode(keys), base, MAX_TAGS)


async def replace(redis: aioredis.Redis, arn: str, tags: Tags, limit: int = MAX_TAGS) -> int:
    """Set the resource's tags whole (a create call's Tags); none removes the entry."""
    return await _save(redis, arn, "replace", _encode(tags), None, limit)


async def forget(redis: aioredis.Redis, *arns: str) -> None:
    """Drop deleted resources' tags, so a new one of the same name starts with its own."""
    if arns:
        await redis.hdel(API_TAGS, *arns)


async def _save(redis: aioredis.Redis, arn: str, mode: str, change: bytes, base: Tags | None, limit: int) -> int:
    got = await run_script(redis, TAGS_SAVE, [API_TAGS], [arn, mode, limit, _encode(base or {}), change])
    if got == -1:
        raise TooManyTags(arn)
    return int(got)
