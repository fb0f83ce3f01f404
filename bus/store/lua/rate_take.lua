-- An API destination's invocation rate limit, shared by every worker: a token bucket of one
-- token kept as a schedule (GCRA): the key holds the next free turn, in microseconds of server
-- TIME (one clock for all workers). Taking a turn moves it on by one interval (1 s / rate).
-- A caller may reserve turns up to `max wait` ahead and wait for them (pacing); a later turn is
-- not reserved, so a refused caller costs the limit nothing. One call takes up to `count`
-- consecutive turns (the calls of one worker that want one at the same moment): as many as
-- fit within `max wait`, at least one or none.
-- KEYS[1] = the schedule (string); ARGV: interval (us), max wait (us), count (default 1).
-- Returns {n, wait_us}: n >= 1 turns are reserved, the first after wait_us (0: now), each next
--         one interval after the one before;
--         {0, wait_us}: nothing taken, ask again in wait_us.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local count = tonumber(ARGV[3] or '1')
local turn = tonumber(redis.call('GET', KEYS[1]) or '0')
if turn < now then
  turn = now
end
local wait = turn - now
if wait > max_wait then
  return {0, wait - max_wait}
end
local n = math.min(count, math.floor((max_wait - wait) / interval) + 1)
local next_turn = turn + n * interval
-- %d: tostring would print a 16-digit number as 1.7e+15 and lose the microseconds.
redis.call('SET', KEYS[1], string.format('%d', next_turn), 'PX', math.floor((next_turn - now) / 1000) + 1000)
return {n, wait}
