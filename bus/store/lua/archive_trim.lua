-- Trim one archive: remove up to ARGV[2] events scored (event time, epoch ms) below ARGV[1], and
-- subtract their lengths from the archive's byte count in the same call, so SizeBytes stays exact.
-- KEYS[1] = the archive's events sorted set, KEYS[2] = its bytes counter.
-- ARGV[1] = cutoff (epoch ms, exclusive), ARGV[2] = at most this many events in this call.
-- Returns the number removed (fewer than ARGV[2]: nothing older is left).
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #old == 0 then return 0 end
local bytes = 0
for i = 1, #old do bytes = bytes + string.len(old[i]) end
for first = 1, #old, 500 do  -- unpack() has a limit
  redis.call('ZREM', KEYS[1], unpack(old, first, math.min(#old, first + 499)))
end
if redis.call('DECRBY', KEYS[2], bytes) <= 0 or redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
end
return #old
