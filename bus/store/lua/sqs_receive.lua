-- Receive up to N messages of an SQS queue (bus/store/sqs.py): each becomes invisible for the
-- visibility timeout, its receive count goes up, and it gets a fresh receipt token. A message past
-- the queue's retention is deleted; one whose receive count would pass the redrive policy's
-- maxReceiveCount moves to the dead-letter queue instead of being received.
-- KEYS: the queues hash; ready, delayed, messages, counts, tokens, first-received of this queue;
-- then the same six of the dead-letter queue (or of this one again when it has none).
-- ARGV: queue name, now (ms), N, visibility (ms; -1: the queue's), retention (ms), max receive
-- count (0: no redrive), dead-letter queue name, then N tokens.
-- Returns per message: id, message JSON, receive count, first receive (ms), token.
local now, want, vt = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local retention, maxrc, dlq = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('ZREM', KEYS[3], id)
end
local function forget(id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
  redis.call('HDEL', KEYS[6], id)
  redis.call('HDEL', KEYS[7], id)
end
local out, got, token = {}, 0, 8
while got < want do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, want - got)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local msg = redis.call('HGET', KEYS[4], id)
    if not msg then
      redis.call('ZREM', KEYS[2], id)
    elseif now - tonumber(cjson.decode(msg)['sent']) > retention then
      forget(id)
    else
      local count = tonumber(redis.call('HGET', KEYS[5], id) or '0') + 1
      if maxrc > 0 and count > maxrc and dlq ~= '' and redis.call('HEXISTS', KEYS[1], dlq) == 1 then
        forget(id)
        redis.call('HSET', KEYS[10], id, msg)
        redis.call('ZADD', KEYS[8], now, id)
      else
        redis.call('HSET', KEYS[5], id, count)
        local first = redis.call('HGET', KEYS[7], id)
        if not first then
          first = tostring(now)
          redis.call('HSET', KEYS[7], id, first)
        end
        redis.call('HSET', KEYS[6], id, ARGV[token])
        redis.call('ZADD', KEYS[2], now + vt, id)
        table.insert(out, id)
        table.insert(out, msg)
        table.insert(out, count)
        table.insert(out, first)
        table.insert(out, ARGV[token])
        token = token + 1
        got = got + 1
      end
    end
  end
end
return out
