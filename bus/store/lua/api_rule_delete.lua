-- Delete one API rule and bump the version, keeping its bus's count (if counted) in step.
-- KEYS[1] = rules hash, KEYS[2] = version, KEYS[3] = per-bus counts hash; ARGV: field, bus.
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 and redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
end
return redis.call('INCR', KEYS[2])
