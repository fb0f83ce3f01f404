-- Store a request's deliveries and archive its events, all in one atomic call (one reply to parse,
-- where MULTI/EXEC costs a reply per command): an event answered with an EventId is in every
-- matching archive, or nothing of the request was written.
-- On Redis Cluster a request's keys may lie on several slots: then it is one call per slot, each
-- marked done by KEYS[1] (bus/store/keys.py once_key) so that a call repeated after a partial
-- failure (by the broker, or by the client with the same request id) writes nothing twice.
-- KEYS[1] = the marker (unused when ARGV[1] is 0), then the streams of the deliveries, in order;
-- then, for each archive the request writes to, its events sorted set and bytes counter
-- (archive_events_key, archive_bytes_key).
-- ARGV[1] = the marker's TTL in ms (0: no marker), ARGV[2] = field, ARGV[3] = n (the number of
-- deliveries), ARGV[4..n+3] = their payloads, then per archive: c (how many of its events follow),
-- then c pairs of score (the event's time, epoch ms) and member (its JSON).
-- Returns the deliveries' entry ids, or 0 if the marker says this was written already.
local ttl = tonumber(ARGV[1])
-- A repeat rewrites only the marker's TTL: a write, so that a WAIT after this call (--durability
-- replicated) waits for the replicas to have everything up to now, the first try's writes included.
if ttl > 0 and redis.call('PEXPIRE', KEYS[1], ttl) == 1 then return 0 end
local n = tonumber(ARGV[3])
local ids = {}
for i = 1, n do
  ids[i] = redis.call('XADD', KEYS[i + 1], '*', ARGV[2], ARGV[i + 3])
end
local a = n + 4
local CHUNK = 500  -- members per ZMSCORE/ZADD: unpack() has a limit (a bulk load may carry thousands)
for k = n + 2, #KEYS - 1, 2 do
  local c = tonumber(ARGV[a])
  local bytes = 0
  for first = 1, c, CHUNK do
    local last = math.min(c, first + CHUNK - 1)
    local zadd, members = {}, {}
    for j = first, last do
      local score, member = ARGV[a + 2 * j - 1], ARGV[a + 2 * j]
      zadd[#zadd + 1], zadd[#zadd + 2] = score, member
      members[#members + 1] = member
    end
    -- A member already there (the same event archived twice) must not count its bytes twice.
    local known = redis.call('ZMSCORE', KEYS[k], unpack(members))
    for i = 1, #members do
      if not known[i] then bytes = bytes + string.len(members[i]) end
    end
    redis.call('ZADD', KEYS[k], unpack(zadd))
  end
  if bytes > 0 then redis.call('INCRBY', KEYS[k + 1], bytes) end
  a = a + 1 + 2 * c
end
if ttl > 0 then redis.call('SET', KEYS[1], '1', 'PX', ttl) end
return ids
