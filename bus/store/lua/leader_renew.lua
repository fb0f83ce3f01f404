-- Extend the leader lock if it still holds our token. KEYS[1] = leader lock;
-- ARGV: token, TTL (ms). Returns 1 if renewed, 0 if the lock is gone or someone else's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
