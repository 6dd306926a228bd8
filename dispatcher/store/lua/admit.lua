-- admit: move the best-ranked waiting tasks with a priority from the ready set onto the work stream, keeping at
-- most a window of undelivered entries on the stream (so a task of a high priority submitted behind a backlog
-- waits behind at most that window, not behind the whole backlog).
--
-- The move of each task (XADD, index field from its waiting record to its entry id, ZREM) is in this one script:
-- a crash of the caller between calls never loses or duplicates a task. A ready id without a waiting record in
-- the index (settled or cancelled elsewhere) is dropped from the set and not counted.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> waiting record (the delayed record's layout, see delayed.lua)
-- KEYS[3]  zset     ready: waiting tasks scored by rank (see admission.lua)
-- ARGV[1]  integer  admission window: the most undelivered entries the stream may hold after this call
-- KEYS[4..] zset    with ARGV[2..]: the permit sets of the chosen tasks' concurrency keys (P:{C}:permits:<key>)
-- ARGV[2..] pairs   optional: move exactly these tasks (those still in KEYS[3]; the window is not applied: the
--                   caller took their rate-limit units and checked their keys' caps), instead of the
--                   best-ranked; per task: its id, and the slot k of its permit set in KEYS (0 = no key), to
--                   which its id is added in the same step as it goes onto the stream
-- Returns: an array of 2 integers: the number of tasks moved, and how many still wait in the ready set
-- @include entry.lua
-- @include delayed.lua
-- @include admission.lua
if #ARGV > 1 then
  local moved = 0
  for i = 2, #ARGV, 2 do
    local task_id, permits = ARGV[i], tonumber(ARGV[i + 1])
    if redis.call('ZREM', KEYS[3], task_id) == 1 and onto_stream(KEYS[1], KEYS[2], task_id) then
      if permits > 0 then
        redis.call('ZADD', KEYS[permits], 0, task_id)
      end
      moved = moved + 1
    end
  end
  return {moved, redis.call('ZCARD', KEYS[3])}
end
local waiting = redis.call('ZCARD', KEYS[3])
if waiting == 0 then
  return {0, 0}
end
local room = tonumber(ARGV[1]) - waiting_undelivered(KEYS[1])
if room <= 0 then
  return {0, waiting}
end
local ids = redis.call('ZRANGE', KEYS[3], 0, room - 1)
local moved = 0
for _, task_id in ipairs(ids) do
  if onto_stream(KEYS[1], KEYS[2], task_id) then
    moved = moved + 1
  end
end
if #ids > 0 then
  redis.call('ZREM', KEYS[3], unpack(ids))
end
return {moved, waiting - #ids}
