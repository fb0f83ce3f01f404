-- Delete messages, or change their visibility, by receipt (bus/store/sqs.py). KEYS: ready,
-- messages, counts, tokens, first-received. ARGV: now (ms), visibility (ms; -1: delete), then
-- pairs of id, token. Per pair: 1 done; 0 the token is not the message's latest (a stale receipt:
-- nothing changed); -1 no such message (deleted already); -2 not in flight (visibility only).
local now, vt = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local current = redis.call('HGET', KEYS[4], id)
  if redis.call('HEXISTS', KEYS[2], id) == 0 then
    table.insert(out, -1)
  elseif current ~= token then
    table.insert(out, 0)
  elseif vt < 0 then
    redis.call('ZREM', KEYS[1], id)
    for k = 2, 5 do redis.call('HDEL', KEYS[k], id) end
    table.insert(out, 1)
  elseif tonumber(redis.call('ZSCORE', KEYS[1], id) or '0') <= now then
    table.insert(out, -2)
  else
    redis.call('ZADD', KEYS[1], now + vt, id)
    table.insert(out, 1)
  end
end
return out
