-- Fire one scheduled time of one rule, fenced: nothing happens unless the leader lock holds the
-- caller's token. SET the dedup mark NX; only if it was fresh, XADD every delivery; record the
-- rule's progress either way. KEYS[1] = leader lock, KEYS[2] = dedup mark, KEYS[3] = progress
-- hash, KEYS[4..] = streams. ARGV: token, dedup TTL (s), field, rule id, progress JSON, then one
-- payload per stream in the order of KEYS[4..]. Returns 1 fired, 0 already fired, -1 not leader.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local fresh = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2])
if fresh then
  for i = 4, #KEYS do redis.call('XADD', KEYS[i], '*', ARGV[3], ARGV[i + 2]) end
end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
if fresh then return 1 end
return 0
