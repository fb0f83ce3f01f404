-- Store a request's deliveries: one XADD per delivery, all in one atomic call (one reply to parse,
-- where MULTI/EXEC costs a reply per command). KEYS = streams; ARGV[1] = field, ARGV[2..] = payloads
-- in the order of KEYS. Returns the entry ids.
local ids = {}
for i = 1, #KEYS do
  ids[i] = redis.call('XADD', KEYS[i], '*', ARGV[1], ARGV[i + 1])
end
return ids
