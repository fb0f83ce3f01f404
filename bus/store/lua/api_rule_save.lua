-- Store one API rule and bump the version; a new rule only while its bus has fewer than the cap.
-- KEYS[1] = rules hash, KEYS[2] = version, KEYS[3] = per-bus counts hash.
-- ARGV: field ("<bus>/<rule>"), rule JSON, bus, cap (0 = none). Returns the new version, or -1
-- (nothing written) when the bus already holds `cap` API rules. The count is made from the hash
-- once per bus (a rule name has no "/", so a field's bus is what precedes its last "/").
local new = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
if new then
  local n = redis.call('HGET', KEYS[3], ARGV[3])
  if n then
    n = tonumber(n)
  else
    n = 0
    for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
      if string.match(field, '^(.*)/[^/]*$') == ARGV[3] then n = n + 1 end
    end
  end
  local cap = tonumber(ARGV[4])
  if cap > 0 and n >= cap then return -1 end
  redis.call('HSET', KEYS[3], ARGV[3], n + 1)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('INCR', KEYS[2])
