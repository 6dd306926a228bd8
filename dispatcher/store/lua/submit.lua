-- submit: enqueue a batch of tasks of one capability, honouring idempotency keys and task ids.
--
-- A task whose id is already queued, delayed, running or settled (its result still kept) is not added
-- twice: a client retry that re-sends the batch after a lost reply stays harmless. A task whose idempotency key was seen within the TTL is not
-- added; the reply names the task that key created.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> entry id, or a delayed record "d<attempt>:<reclaims>:<task blob>"
-- KEYS[3]  zset     delayed tasks: task id scored by due time (epoch ms)
-- KEYS[4..3+N] string  result key of each task, in task order (a settled id is not added again)
-- KEYS[4+N..] string  idempotency keys, one per task that has one, referenced by slot below
-- ARGV[1]  integer  idempotency TTL (ms)
-- ARGV[2]  string   wire format version
-- ARGV[3]  integer  N, the number of tasks
-- ARGV[4..] per task, 4 values: task id, task blob (msgpack), due time (epoch ms, 0 = now),
--                   idempotency key slot (0 = none, k = KEYS[k])
-- Returns: an array of N strings: the new entry id, "d" (delayed), or "=" .. task id (not added: that id
--          or that idempotency key already has a task)
local out = {}
local n = tonumber(ARGV[3])
for i = 0, n - 1 do
  local base = 4 + i * 4
  local task_id, blob, due, slot = ARGV[base], ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local existing = false
  if slot > 0 then
    local first = redis.call('GET', KEYS[slot])
    if first then
      existing = first
    else
      redis.call('SET', KEYS[slot], task_id, 'PX', ARGV[1])
    end
  end
  if not existing and (redis.call('HEXISTS', KEYS[2], task_id) == 1 or redis.call('EXISTS', KEYS[4 + i]) == 1) then
    existing = task_id
  end
  if existing then
    out[#out + 1] = '=' .. existing
  elseif due > 0 then
    redis.call('HSET', KEYS[2], task_id, 'd1:0:' .. blob)
    redis.call('ZADD', KEYS[3], due, task_id)
    out[#out + 1] = 'd'
  else
    local entry_id = redis.call('XADD', KEYS[1], '*', 'v', ARGV[2], 'task', blob, 'attempt', 1, 'reclaims', 0)
    redis.call('HSET', KEYS[2], task_id, entry_id)
    out[#out + 1] = entry_id
  end
end
return out
