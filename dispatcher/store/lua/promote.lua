-- promote: move delayed tasks that are due onto the work stream.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> delayed record "d<attempt>:<reclaims>:<task blob>"
-- KEYS[3]  zset     delayed tasks: task id scored by due time (epoch ms)
-- ARGV[1]  integer  now (epoch ms)
-- ARGV[2]  integer  the most tasks to move in this call
-- ARGV[3]  string   wire format version
-- Returns: the number of tasks moved (a due id without a delayed record is dropped from the set and not
--          counted: it was settled or cancelled elsewhere)
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local moved = 0
for _, task_id in ipairs(ids) do
  local record = redis.call('HGET', KEYS[2], task_id)
  if record and string.sub(record, 1, 1) == 'd' then
    local c1 = string.find(record, ':', 2, true)
    local c2 = string.find(record, ':', c1 + 1, true)
    local attempt = string.sub(record, 2, c1 - 1)
    local reclaims = string.sub(record, c1 + 1, c2 - 1)
    local blob = string.sub(record, c2 + 1)
    local entry_id = redis.call('XADD', KEYS[1], '*', 'v', ARGV[3], 'task', blob, 'attempt', attempt,
      'reclaims', reclaims)
    redis.call('HSET', KEYS[2], task_id, entry_id)
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[3], task_id)
end
return moved
