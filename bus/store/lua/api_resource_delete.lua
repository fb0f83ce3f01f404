-- Delete one API bus, connection or API destination and bump the resources version, unless
-- something still uses it (checked in the same call, so a user added meanwhile is seen).
-- KEYS[1] = the kind's hash, KEYS[2] = the resources version, KEYS[3] = the hash of its users.
-- ARGV: name, check: "" (none), "connection" (an API destination in KEYS[3] names it as its
-- `connection`), "bus" (an API rule field "<name>/<rule>" in KEYS[3]; rule names have no "/").
-- Returns the new version, or (nothing deleted) -1: no such resource; -2: still in use.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
if ARGV[2] == 'connection' then
  for _, raw in ipairs(redis.call('HVALS', KEYS[3])) do
    local ok, value = pcall(cjson.decode, raw)
    if ok and type(value) == 'table' and value['connection'] == ARGV[1] then return -2 end
  end
elseif ARGV[2] == 'bus' then
  for _, field in ipairs(redis.call('HKEYS', KEYS[3])) do
    if string.match(field, '^(.*)/[^/]*$') == ARGV[1] then return -2 end
  end
end
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('INCR', KEYS[2])
