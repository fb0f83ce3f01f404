-- Move due retries back into the stream. KEYS[1] = delayed zset, KEYS[2] = stream;
-- ARGV: now (ms), max count, field name. Returns how many moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', ARGV[3], member)
  redis.call('ZREM', KEYS[1], member)
end
return #due
