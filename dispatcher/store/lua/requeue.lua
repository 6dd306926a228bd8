-- requeue: put a dead-lettered task back on its stream with a fresh attempt count.
--
-- The dead letter is read here, not trusted from the caller, and removed in the same step as the task is
-- re-added: two operators requeueing the same letter at once add it once. The task keeps the format version
-- the letter records for it.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> entry id
-- KEYS[3]  stream   dead-letter stream of the capability
-- KEYS[4]  string   the task's result key (its "dead" result is deleted: the task is queued again)
-- ARGV[1]  string   dead-letter entry id
-- ARGV[2]  string   task id the caller expects in that letter
-- Returns: 1 requeued; 0 when the letter is gone; -1 when it holds no task to requeue (decode_error) or
--          another task id
-- @include entry.lua
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
redis.call('HSET', KEYS[2], ARGV[2], add_entry(KEYS[1], version, blob, 1, 0))
redis.call('DEL', KEYS[4])
redis.call('XDEL', KEYS[3], ARGV[1])
return 1
