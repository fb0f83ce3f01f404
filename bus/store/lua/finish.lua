-- Finish deliveries of one stream: per entry XACK; only if it was still pending (the first
-- finisher wins, so a worker that lost its lease cannot double a retry), XDEL it and apply its
-- follow-ups. KEYS[1] = stream, KEYS[2..] = follow-up keys in order.
-- ARGV: group, then per entry: id, follow-up count, then per follow-up: op ("Z" = ZADD score
-- member, "X" = XADD field value, "R" = XADD field value to a broker's reply stream, which
-- expires unless its broker keeps reading it), a, b. Returns one 1/0 per entry.
local out = {}
local i, k = 2, 2
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local acked = redis.call('XACK', KEYS[1], ARGV[1], id)
  if acked == 1 then redis.call('XDEL', KEYS[1], id) end
  for _ = 1, n do
    if acked == 1 then
      if ARGV[i] == 'Z' then
        redis.call('ZADD', KEYS[k], ARGV[i + 1], ARGV[i + 2])
      else
        redis.call('XADD', KEYS[k], '*', ARGV[i + 1], ARGV[i + 2])
        if ARGV[i] == 'R' then redis.call('PEXPIRE', KEYS[k], 600000) end
      end
    end
    i, k = i + 3, k + 1
  end
  table.insert(out, acked)
end
return out
