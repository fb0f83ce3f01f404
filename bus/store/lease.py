"""The scheduler's leader lock: one `bus serve` at a time holds it, with an expiry and a
fencing token.

The lock is `busway:scheduler:leader` = token, set with a TTL; the token comes from INCR on
`busway:scheduler:fence`, so every tenure has its own. Holding the lock locally proves
nothing (a paused process may have lost it long ago): every write the leader makes checks,
inside Redis and atomically with the write, that the lock still holds its token.
"""
from __future__ import annotations

import redis.asyncio as aioredis

from bus.store.deliveries import PREFIX

LEADER_KEY = f"{PREFIX}:scheduler:leader"
FENCE_KEY = f"{PREFIX}:scheduler:fence"

# Take the lock only if free; INCR only then, so idle followers do not burn tokens.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """This process's view of the leader lock: `token` is set while it believes it leads."""

    def __init__(self, redis: aioredis.Redis, ttl: float):
        self.ttl_ms = max(1, int(ttl * 1000))
        self.token: str | None = None
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def hold(self) -> bool:
        """Renew the lock if ours, else try to take it. True if we lead now."""
        if self.token is not None and await self._renew(keys=[LEADER_KEY], args=[self.token, self.ttl_ms]):
            return True
        self.token = None
        token = await self._acquire(keys=[LEADER_KEY, FENCE_KEY], args=[self.ttl_ms])
        if token is not None:
            self.token = str(int(token))
        return self.token is not None

    def lost(self) -> None:
        """A fenced write was refused: someone else leads now."""
        self.token = None

    async def release(self) -> None:
        """Hand the lock over at once (clean shutdown) instead of letting it expire."""
        if self.token is not None:
            await self._release(keys=[LEADER_KEY], args=[self.token])
            self.token = None
