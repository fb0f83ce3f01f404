-- Create a replay, or change one the caller read (CancelReplay), unfenced: any broker or the CLI.
-- KEYS[1] = replays hash. ARGV: replay name, expected JSON ('' = create: the name must be free),
-- new JSON, the cap on active replays (creating only; 0 = none), then the active state names.
-- Returns 1 written, 0 the name is taken (create) or the replay changed or went (update),
-- -2 creating would exceed the cap of active replays.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if current then return 0 end
  local cap = tonumber(ARGV[4])
  if cap > 0 then
    local active = {}
    for i = 5, #ARGV do active[ARGV[i]] = true end
    local n = 0
    for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
      local ok, replay = pcall(cjson.decode, raw)
      if ok and type(replay) == 'table' and active[replay['state']] then n = n + 1 end
    end
    if n >= cap then return -2 end
  end
elseif current ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
