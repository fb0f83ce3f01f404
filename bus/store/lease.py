"""A leader lock: one `bus serve` at a time holds it, with an expiry and a fencing token.
The scheduler's (the defaults) and the replay runner's (bus.replay.runner) are two of them.

The scheduler's lock is `busway:scheduler:leader` = token, set with a TTL; the token comes from INCR on
`busway:scheduler:fence`, so every tenure has its own. Holding the lock locally proves
nothing (a paused process may have lost it long ago): every write the leader makes checks,
inside Redis and atomically with the write, that the lock still holds its token.
"""
from __future__ import annotations

import redis.asyncio as aioredis

from bus.store.keys import FENCE_KEY, LEADER_KEY
from bus.store.scripts import LEADER_ACQUIRE, LEADER_RELEASE, LEADER_RENEW, Script


class Lease:
    """This process's view of the leader lock: `token` is set while it believes it leads."""

    def __init__(self, redis: aioredis.Redis, ttl: float, lock_key: str = LEADER_KEY, fence_key: str = FENCE_KEY):
        self.ttl_ms = max(1, int(ttl * 1000))
        self.token: str | None = None
        self.lock_key, self.fence_key = lock_key, fence_key
        self._acquire = Script(redis, LEADER_ACQUIRE)
        self._renew = Script(redis, LEADER_RENEW)
        self._release = Script(redis, LEADER_RELEASE)

    async def hold(self) -> bool:
        """Renew the lock if ours, else try to take it. True if we lead now."""
        if self.token is not None and await self._renew([self.lock_key], [self.token, self.ttl_ms]):
            return True
        self.token = None
        token = await self._acquire([self.lock_key, self.fence_key], [self.ttl_ms])
        if token is not None:
            self.token = str(int(token))
        return self.token is not None

    def lost(self) -> None:
        """A fenced write was refused: someone else leads now."""
        self.token = None

    async def release(self) -> None:
        """Hand the lock over at once (clean shutdown) instead of letting it expire."""
        if self.token is not None:
            await self._release([self.lock_key], [self.token])
            self.token = None
