"""The Lua scripts that make delivery steps atomic in Redis, and thin async wrappers.

Every script touches one target's keys (same hash tag) except where a shared DLQ or the
destination inbox is named; those are the documented cross-slot exceptions for Redis Cluster.
"""
from __future__ import annotations

import redis.asyncio as aioredis

# Finish a delivery: XACK; only if it was still pending (first finisher wins), XDEL it and
# apply the follow-ups. KEYS[1] = stream, KEYS[2..] = follow-up keys.
# ARGV: group, entry id, then per follow-up: op ("Z" = ZADD score member, "X" = XADD field value), a, b.
FINISH = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
local k = 2
for i = 3, #ARGV, 3 do
  if ARGV[i] == 'Z' then
    redis.call('ZADD', KEYS[k], ARGV[i+1], ARGV[i+2])
  else
    redis.call('XADD', KEYS[k], '*', ARGV[i+1], ARGV[i+2])
  end
  k = k + 1
end
return 1
"""

# Renew leases: reset the idle time of entries this consumer still owns (never steal back an
# entry another worker reclaimed). KEYS[1] = stream; ARGV: group, consumer, ids...
RENEW = """
local kept = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    table.insert(kept, ARGV[i])
  end
end
return kept
"""

# Move due retries back into the stream. KEYS[1] = delayed zset, KEYS[2] = stream;
# ARGV: now (ms), max count, field name.
MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', ARGV[3], member)
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""

# Reserved concurrency: a set of leases per function, each expiring unless renewed.
# KEYS[1] = lease zset; ARGV: now (ms), expiry (ms), limit, token. Returns 1 if acquired.
ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  return 1
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], 3600000)
  return 1
end
return 0
"""


class Scripts:
    def __init__(self, redis: aioredis.Redis):
        self.finish = redis.register_script(FINISH)
        self.renew = redis.register_script(RENEW)
        self.move_due = redis.register_script(MOVE_DUE)
        self.acquire = redis.register_script(ACQUIRE)
