-- Store a request's deliveries and archive its events, all in one atomic call (one reply to parse,
-- where MULTI/EXEC costs a reply per command): an event answered with an EventId is in every
-- matching archive, or nothing of the request was written.
-- KEYS: the streams of the deliveries, in order; then, for each archived event, its archive's
-- events sorted set and bytes counter (bus/store/keys.py archive_events_key, archive_bytes_key).
-- ARGV[1] = field, ARGV[2] = n (the number of deliveries), ARGV[3..n+2] = their payloads, then per
-- archived event: score (its time, epoch ms), member (its JSON). Returns the deliveries' entry ids.
local n = tonumber(ARGV[2])
local ids = {}
for i = 1, n do
  ids[i] = redis.call('XADD', KEYS[i], '*', ARGV[1], ARGV[i + 2])
end
local a = n + 3
for k = n + 1, #KEYS - 1, 2 do
  -- A member already there (the same event archived twice) must not count its bytes twice.
  if redis.call('ZADD', KEYS[k], ARGV[a], ARGV[a + 1]) == 1 then
    redis.call('INCRBY', KEYS[k + 1], string.len(ARGV[a + 1]))
  end
  a = a + 2
end
return ids
