-- Send messages to an SQS queue (bus/store/sqs.py). KEYS: queues hash, ready zset, delayed zset,
-- messages hash. ARGV: queue name, now (ms), then per message: id, message JSON, delay (ms).
-- Returns 0 if the queue does not exist (nothing written), else the number sent.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local now, n = tonumber(ARGV[2]), 0
for i = 3, #ARGV, 3 do
  local id, delay = ARGV[i], tonumber(ARGV[i + 2])
  redis.call('HSET', KEYS[4], id, ARGV[i + 1])
  if delay > 0 then
    redis.call('ZADD', KEYS[3], now + delay, id)
  else
    redis.call('ZADD', KEYS[2], now, id)
  end
  n = n + 1
end
return n
