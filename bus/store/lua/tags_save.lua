-- Change one resource's tags (bus.store.tags), in one step, so two writers never lose each other's keys.
-- KEYS[1] = the tags hash (field -> {key: value} JSON).
-- ARGV: field, mode ("tag": merge | "untag": remove keys | "replace": set whole), cap (the most
-- tags a resource may hold), base (the tags to start from when the field is absent: a rule's own
-- PutRule tags), change ("tag"/"replace": {key: value} JSON; "untag": [key, ...] JSON).
-- Returns how many tags the resource holds now, or -1 (nothing written): more than `cap`.
-- "replace" with no tags removes the field; "tag" and "untag" keep it (even empty: the field
-- being there is what says the stored tags, not `base`, are the resource's).
local current = redis.call('HGET', KEYS[1], ARGV[1])
local tags = cjson.decode(current or ARGV[4])
local change = cjson.decode(ARGV[5])
local mode = ARGV[2]
if mode == 'replace' then
  tags = change
elseif mode == 'tag' then
  for k, v in pairs(change) do tags[k] = v end
else
  for _, k in ipairs(change) do tags[k] = nil end
end
local n = 0
for _ in pairs(tags) do n = n + 1 end
if n > tonumber(ARGV[3]) then return -1 end
if mode == 'replace' and n == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(tags))
end
return n
