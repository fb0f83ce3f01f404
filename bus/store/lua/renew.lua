-- Renew leases: reset the idle time of entries this consumer still owns (never steal back an
-- entry another worker reclaimed). KEYS[1] = stream; ARGV: group, consumer, ids...
-- Returns the ids now owned by another consumer (entries already finished are not listed).
local stolen = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] then
    if p[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      table.insert(stolen, ARGV[i])
    end
  end
end
return stolen
