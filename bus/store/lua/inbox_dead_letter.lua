-- Give up on an inbox item that can never be routed: XACK it and, only if it was still pending
-- (another broker may have finished it), XDEL it and XADD its dead letter, trimming the DLQ to
-- its retention. KEYS[1] = inbox stream, KEYS[2] = DLQ; ARGV: group, entry id, field,
-- dead letter JSON, oldest id to keep. Returns 1 if dead-lettered, 0 if it was gone.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[5], '*', ARGV[3], ARGV[4])
return 1
