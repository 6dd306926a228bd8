-- requeue: put a dead-lettered task back on its stream with a fresh attempt count.
--
-- The dead letter is read here, not trusted from the caller, and removed in the same step as the task is
-- re-added: two operators requeueing the same letter at once add it once.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> entry id
-- KEYS[3]  stream   dead-letter stream of the capability
-- KEYS[4]  string   the task's result key (its "dead" result is deleted: the task is queued again)
-- ARGV[1]  string   dead-letter entry id
-- ARGV[2]  string   task id the caller expects in that letter
-- ARGV[3]  string   wire format version
-- Returns: the new entry id; 0 when the letter is gone; -1 when it holds no task to requeue (decode_error)
--          or another task id
local found = redis.call('XRANGE', KEYS[3], ARGV[1], ARGV[1])
if #found == 0 then
  return 0
end
local fields = found[1][2]
local blob, task_id = nil, nil
for i = 1, #fields, 2 do
  if fields[i] == 'task' then blob = fields[i + 1] end
  if fields[i] == 'task_id' then task_id = fields[i + 1] end
end
if not blob or blob == '' or task_id ~= ARGV[2] then
  return -1
end
local entry_id = redis.call('XADD', KEYS[1], '*', 'v', ARGV[3], 'task', blob, 'attempt', 1, 'reclaims', 0)
redis.call('HSET', KEYS[2], ARGV[2], entry_id)
redis.call('DEL', KEYS[4])
redis.call('XDEL', KEYS[3], ARGV[1])
return entry_id
