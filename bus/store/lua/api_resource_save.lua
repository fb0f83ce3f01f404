-- Create or update one API bus, connection or API destination, and bump the resources version.
-- KEYS[1] = the kind's hash (name -> JSON), KEYS[2] = the resources version.
-- ARGV: name, JSON, mode ("create" | "update"), cap (create: the most the hash may hold; 0 = none),
-- expected (update: the JSON the caller changed; a different stored one means another writer won).
-- Returns the new version, or (nothing written) -1: create of a name that exists, or update of
-- one that does not; -2: the hash already holds `cap`; -3: the stored value is not `expected`.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == 'create' then
  if current then return -1 end
  local cap = tonumber(ARGV[4])
  if cap > 0 and redis.call('HLEN', KEYS[1]) >= cap then return -2 end
else
  if not current then return -1 end
  if current ~= ARGV[5] then return -3 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('INCR', KEYS[2])
