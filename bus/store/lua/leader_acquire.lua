-- Take the leader lock only if free; INCR the fence only then, so idle followers do not burn
-- tokens. KEYS[1] = leader lock, KEYS[2] = fence counter; ARGV[1] = TTL (ms).
-- Returns the new token, or nil if someone holds the lock.
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
