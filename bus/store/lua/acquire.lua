-- Reserved concurrency: a set of leases per function, each expiring unless renewed.
-- KEYS[1] = lease zset; ARGV: now (ms), expiry (ms), limit, token. Returns 1 if acquired.
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
