-- Drop the leader lock if it still holds our token (never someone else's).
-- KEYS[1] = leader lock; ARGV[1] = token. Returns 1 if released, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
