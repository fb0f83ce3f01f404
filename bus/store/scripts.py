"""The Lua scripts that make delivery steps atomic in Redis, and thin async wrappers.

Every script touches one target's keys (same hash tag) except where a shared DLQ or the
destination inbox is named; those are the documented cross-slot exceptions for Redis Cluster.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

# Finish deliveries of one stream: per entry XACK; only if it was still pending (the first
# finisher wins, so a worker that lost its lease cannot double a retry), XDEL it and apply its
# follow-ups. KEYS[1] = stream, KEYS[2..] = follow-up keys in order.
# ARGV: group, then per entry: id, follow-up count, then per follow-up: op ("Z" = ZADD score
# member, "X" = XADD field value), a, b. Returns one 1/0 per entry.
FINISH = """
local out = {}
local i, k = 2, 2
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local acked = redis.call('XACK', KEYS[1], ARGV[1], id)
  if acked == 1 then redis.call('XDEL', KEYS[1], id) end
  for _ = 1, n do
    if acked == 1 then
      if ARGV[i] == 'Z' then
        redis.call('ZADD', KEYS[k], ARGV[i + 1], ARGV[i + 2])
      else
        redis.call('XADD', KEYS[k], '*', ARGV[i + 1], ARGV[i + 2])
      end
    end
    i, k = i + 3, k + 1
  end
  table.insert(out, acked)
end
return out
"""

# Renew leases: reset the idle time of entries this consumer still owns (never steal back an
# entry another worker reclaimed). KEYS[1] = stream; ARGV: group, consumer, ids...
# Returns the ids now owned by another consumer (entries already finished are not listed).
RENEW = """
local stolen = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] then
    if p[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      table.insert(stolen, ARGV[i])
    end
  end
end
return stolen
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


# Store a request's deliveries: one XADD per delivery, all in one atomic call (one reply to parse,
# where MULTI/EXEC costs a reply per command). KEYS = streams; ARGV[1] = field, ARGV[2..] = payloads
# in the order of KEYS. Returns the entry ids.
ENQUEUE = """
local ids = {}
for i = 1, #KEYS do
  ids[i] = redis.call('XADD', KEYS[i], '*', ARGV[1], ARGV[i + 1])
end
return ids
"""


async def run_script(redis: aioredis.Redis, body: str, keys: list, args: list) -> Any:
    """Call a Lua script by SHA, sending its body only if Redis forgot it (restart, SCRIPT FLUSH)."""
    try:
        return await redis.evalsha(_sha(body), len(keys), *keys, *args)
    except NoScriptError:
        return await redis.eval(body, len(keys), *keys, *args)


@functools.cache
def _sha(body: str) -> str:
    return hashlib.sha1(body.encode()).hexdigest()


class Script:
    """A Lua script bound to a client."""

    def __init__(self, redis: aioredis.Redis, body: str):
        self.redis = redis
        self.body = body

    @property
    def sha(self) -> str:
        return _sha(self.body)

    async def __call__(self, keys: list, args: list) -> Any:
        return await run_script(self.redis, self.body, keys, args)


FollowUp = tuple[str, str, Any, Any]  # (op, key, a, b)
FLUSH_DELAY = 0.001


class FinishBatcher:
    """Finishes deliveries in batches: one FINISH call per stream per millisecond at most.

    Deliveries finish at nearly the same moment; one round trip (and one AOF fsync) and one
    script call for all of a stream's finished entries, instead of one each, is most of the
    worker's speed. Waiting FLUSH_DELAY after the first outcome (instead of one loop turn)
    also gathers sync handlers' replies, which arrive from their slots one wakeup at a time:
    half the FINISH calls per delivery, for 1 ms more before the ack (handlers never wait on it).
    """

    def __init__(self, script: Script, group: str):
        self.script = script
        self.group = group
        self._pending: list[tuple[str, Any, list[FollowUp], asyncio.Future]] = []

    def __call__(self, stream: str, entry_id: Any, follow_ups: list[FollowUp]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_later(FLUSH_DELAY, lambda: asyncio.ensure_future(self._flush()))
        self._pending.append((stream, entry_id, follow_ups, future))
        return future

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        by_stream: dict[str, list] = {}
        for item in batch:
            by_stream.setdefault(item[0], []).append(item)
        calls = [self._call(stream, items) for stream, items in by_stream.items()]
        try:
            results = await self._send(calls)
        except Exception as exc:  # the connection failed: every caller sees it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for items, result in zip(by_stream.values(), results):
            for (*_, future), acked in zip(items, result if isinstance(result, list) else [result] * len(items)):
                if future.done():
                    continue
                if isinstance(acked, Exception):
                    future.set_exception(acked)
                else:
                    future.set_result(bool(acked))

    def _call(self, stream: str, items: list) -> tuple[list, list]:
        keys: list[Any] = [stream]
        args: list[Any] = [self.group]
        for _, entry_id, follow_ups, _ in items:
            args += [entry_id, len(follow_ups)]
            for op, key, a, b in follow_ups:
                keys.append(key)
                args += [op, a, b]
        return keys, args

    async def _send(self, calls: list[tuple[list, list]]) -> list:
        script = self.script
        async with script.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
        if any(isinstance(r, NoScriptError) for r in results):
            await script.redis.script_load(script.body)
            return await self._send(calls)
        return results


class Scripts:
    def __init__(self, redis: aioredis.Redis):
        self.finish = FinishBatcher(Script(redis, FINISH), group="busway")
        self.renew = Script(redis, RENEW)
        self.move_due = Script(redis, MOVE_DUE)
        self.acquire = Script(redis, ACQUIRE)
