-- requeue: put a dead-lettered task back with a fresh attempt count: on its stream, or, for a flow-controlled
-- task (the caller names its lane, read from the letter's task: lanes.lua), into the waiting set it waits in at
-- submit, so it takes its rate limits' units and its key's permit again before it runs.
--
-- The dead letter is read here, not trusted from the caller, and removed in the same step as the task is
-- re-added: two operators requeueing the same letter at once add it once. The task keeps the format version
-- the letter records for it.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> entry id, or a waiting record (see delayed.lua)
-- KEYS[3]  stream   dead-letter stream of the capability
-- KEYS[4]  string   the task's result key (its "dead" result is deleted: the task is queued again)
-- KEYS[5]  zset     optional (with ARGV[3]): ready: tasks with a priority waiting for admission, by rank
-- KEYS[6]  zset     optional: limited: tasks that take units from rate limits, waiting for the admitter
-- KEYS[7]  zset     optional: keyed: tasks with a concurrency key (and no rate limit) waiting for a permit
-- KEYS[8]  zset     optional: rejoin: tasks with a fairness_key on their way back into their tenant's queue
-- ARGV[1]  string   dead-letter entry id
-- ARGV[2]  string   task id the caller expects in that letter
-- ARGV[3]  string   optional: the task's lane ("" or absent: none, straight onto the stream)
-- ARGV[4]  integer  with ARGV[3]: admission window (a task with a priority alone goes straight onto the stream
--                   only while nothing waits in the ready set and fewer entries than this wait undelivered)
-- Returns: 1 requeued; 0 when the letter is gone; -1 when it holds no task to requeue (decode_error) or
--          another task id
-- @include entry.lua
-- @include delayed.lua
-- @include clock.lua
-- @include admission.lua
-- @include lanes.lua
local found = redis.call('XRANGE', KEYS[3], ARGV[1], ARGV[1])
if #found == 0 then
  return 0
end
local fields = found[1][2]
local blob, task_id, version = nil, nil, '1'
for i = 1, #fields, 2 do
  if fields[i] == 'task' then blob = fields[i + 1] end
  if fields[i] == 'task_id' then task_id = fields[i + 1] end
  if fields[i] == 'v' then version = fields[i + 1] end
end
if not blob or blob == '' or task_id ~= ARGV[2] then
  return -1
end
local lane = ARGV[3] or ''
if lane == '' then
  redis.call('HSET', KEYS[2], ARGV[2], add_entry(KEYS[1], version, blob, 1, 0))
else
  redis.call('HSET', KEYS[2], ARGV[2], delayed_record(version, 1, 0, blob))
  into_lane(KEYS[1], KEYS[2], KEYS[5], KEYS[6], KEYS[7], KEYS[8], tonumber(ARGV[4]), ARGV[2], lane, now_ms(), 0,
    version, 1, 0, blob)
end
redis.call('DEL', KEYS[4])
redis.call('XDEL', KEYS[3], ARGV[1])
return 1
