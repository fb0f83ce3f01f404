"""Rename the keys older busway versions wrote to the names of bus/store/keys.py, once.

Keys changed names when the layout was made Redis Cluster's (hash tags such as `{api}`): a broker
renames each old key that exists, on one Redis, before it reads anything. RENAMENX never
overwrites: if both names exist (an old broker kept writing during a rolling upgrade), the new one
wins and the old one is left for the operator, logged. A cluster never held the old names
(they could not run on one), so there is nothing to do there.
"""
from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bus.store.connect import is_cluster
from bus.store.keys import LEGACY_NAMES

log = logging.getLogger("bus.store")


async def rename_legacy_keys(redis: aioredis.Redis) -> list[str]:
    """Rename every old key present to its new name; the new names renamed."""
    if is_cluster(redis):
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for old in LEGACY_NAMES:
            pipe.exists(old)
        present = [old for old, n in zip(LEGACY_NAMES, await pipe.execute()) if n]
    renamed = []
    for old in present:
        new = LEGACY_NAMES[old]
        try:
            if await redis.renamenx(old, new):
                renamed.append(new)
                log.info("renamed %s to %s (the key layout of this version)", old, new)
            else:
                log.warning("both %s and %s exist; kept %s, left %s for you to look at", old, new, new, old)
        except ResponseError:  # gone meanwhile: another broker renamed it first
            pass
    return renamed
