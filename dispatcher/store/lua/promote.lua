-- promote: move delayed tasks that are due onto the work stream.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> delayed record (see delayed.lua)
-- KEYS[3]  zset     delayed tasks: task id scored by due time (epoch ms)
-- ARGV[1]  integer  the most tasks to move in this call (due means: due by Redis' clock)
-- Returns: the number of tasks moved (a due id without a delayed record is dropped from the set and not
--          counted: it was settled or cancelled elsewhere)
-- @include entry.lua
-- @include delayed.lua
-- @include clock.lua
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms(), 'LIMIT', 0, ARGV[1])
local moved = 0
for _, task_id in ipairs(ids) do
  if onto_stream(KEYS[1], KEYS[2], task_id) then
    moved = moved + 1
  end
end
if #ids > 0 then
  redis.call('ZREM', KEYS[3], unpack(ids))
end
return moved
