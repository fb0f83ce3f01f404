-- Record (or, with an empty value, forget) one rule's progress, fenced by the leader lock.
-- KEYS[1] = leader lock, KEYS[2] = progress hash; ARGV: token, rule id, progress JSON or ''.
-- Returns -1 if the lock does not hold the token, else the HSET/HDEL reply.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if ARGV[3] == '' then return redis.call('HDEL', KEYS[2], ARGV[2]) end
return redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
