-- Claim a synchronous Invoke: the first claimer runs it (a worker) or refuses it (the broker, past
-- its start deadline). KEYS[1] = the claim; ARGV: claimer, ttl (ms). Returns who holds the claim.
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
