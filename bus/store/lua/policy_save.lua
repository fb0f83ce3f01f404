-- Set or remove one bus's resource policy if it is still what the caller read (bus.store.policies).
-- KEYS[1] = the policies hash (bus -> policy JSON), KEYS[2] = the policies version.
-- ARGV: bus, check ("1": compare with `expected` | "0": write whatever is stored), expected
-- ("" = no policy), new ("" = remove the policy).
-- Returns the policies version after the call (bumped only if something changed), or -1
-- (nothing written): the stored policy is not `expected` (another writer changed it).
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if ARGV[2] == '1' and current ~= ARGV[3] then return -1 end
if current == ARGV[4] then return tonumber(redis.call('GET', KEYS[2]) or '0') end
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
end
return redis.call('INCR', KEYS[2])
