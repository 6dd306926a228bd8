-- promote: move delayed tasks that are due out of the delayed set: onto the work stream, or, for a
-- flow-controlled task (its delayed record names a lane: lanes.lua), into the waiting set it waits in at submit,
-- ranked as submit ranks it, so that the admitter lets it in by the same rules (its rate limits' units taken
-- again, its key's permit taken again, its priority ranked among the waiting tasks; a task with a fairness_key
-- into the rejoin set, from which the fair gate moves it into its tenant's queue: rejoin.lua).
--
-- Each task's move (XADD and its index field, or ZADD into its waiting set, where its delayed record stays as its
-- waiting record) and its ZREM from the delayed set are in this one script: a crash of the caller between calls never loses or
-- duplicates a task. A task without a lane costs what it always did.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> delayed record (see delayed.lua)
-- KEYS[3]  zset     delayed tasks: task id scored by due time (epoch ms)
-- KEYS[4]  zset     ready: tasks with a priority waiting for admission, by rank (see admission.lua)
-- KEYS[5]  zset     limited: tasks that take units from rate limits, waiting for the admitter, by rank
-- KEYS[6]  zset     keyed: tasks with a concurrency key (and no rate limit) waiting for a permit, by rank
-- KEYS[7]  zset     rejoin: tasks with a fairness_key on their way back into their tenant's queue, by rank (the
--                   fair gate moves them: rejoin.lua)
-- ARGV[1]  integer  the most tasks to move in this call (due means: due by Redis' clock)
-- ARGV[2]  integer  admission window: a due task with a priority alone goes straight onto the stream only while
--                   nothing waits in the ready set and fewer entries than this wait undelivered on the stream
-- Returns: the number of tasks moved, onto the stream or into their waiting set (a due id without a delayed
--          record is dropped from the set and not counted: it was settled or cancelled elsewhere)
-- @include entry.lua
-- @include delayed.lua
-- @include clock.lua
-- @include admission.lua
-- @include lanes.lua
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, ARGV[1])
local moved = 0
for seq, task_id in ipairs(ids) do
  local version, attempt, reclaims, blob, lane = read_delayed(redis.call('HGET', KEYS[2], task_id))
  if version then
    if lane == '' then
      redis.call('HSET', KEYS[2], task_id, add_entry(KEYS[1], version, blob, attempt, reclaims))
    else
      into_lane(KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6], KEYS[7], tonumber(ARGV[2]), task_id, lane, now,
        seq - 1, version, attempt, reclaims, blob)
    end
    moved = moved + 1
  end
end
if #ids > 0 then
  redis.call('ZREM', KEYS[3], unpack(ids))
end
return moved
