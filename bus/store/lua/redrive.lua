-- Redrive one dead letter: XDEL it from its DLQ and, only if that removed it, XADD the payload
-- to the destination stream. Two redrives of one letter at once enqueue it once.
-- KEYS[1] = DLQ, KEYS[2] = destination stream; ARGV: DLQ entry id, field, payload.
-- Returns 1 if redriven, 0 if the letter was already gone.
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
return 1
