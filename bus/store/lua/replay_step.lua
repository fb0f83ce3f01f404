-- One step of a replay, fenced: nothing happens unless the replay leader lock holds the caller's
-- token AND the stored replay is still exactly the JSON the caller read (a CancelReplay, or another
-- leader's step, in between wins). Then XADD every delivery and store the replay's new JSON (its
-- new checkpoint and state) in the same call: a new leader resumes from that checkpoint, so no
-- event is skipped and none is sent twice.
-- KEYS[1] = replay leader lock, KEYS[2] = replays hash, KEYS[3..] = target streams.
-- ARGV: token, replay name, expected JSON, new JSON, stream field, then one payload per stream in
-- the order of KEYS[3..]. Returns 1 written, 0 the replay changed meanwhile, -1 not leader.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[3] then return 0 end
for i = 3, #KEYS do redis.call('XADD', KEYS[i], '*', ARGV[5], ARGV[i + 3]) end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
return 1
