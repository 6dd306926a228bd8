-- submit: enqueue a batch of tasks of one capability, honouring idempotency keys and task ids.
--
-- A task whose id is already queued, delayed or running, or repeated earlier in the batch, or settled with its
-- result still kept, is not added twice: a client retry that re-sends the batch after a lost reply stays
-- harmless. A task whose idempotency key was seen within the TTL is not added; the reply names the task that key
-- created. The index fields are written once for the whole batch, after the entries.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> entry id, or a delayed record (see delayed.lua)
-- KEYS[3]  zset     delayed tasks: task id scored by due time (epoch ms)
-- KEYS[4]  zset     ready: tasks with a priority waiting for admission, scored by rank (see admission.lua)
-- KEYS[5]  zset     limited: tasks that take units from rate limits, waiting for the admitter, scored by rank
-- KEYS[6]  zset     tenants: tenants with waiting tasks, scored by virtual time (see admit_fair.lua)
-- KEYS[7]  zset     keyed: tasks with a concurrency key (and no rate limit) waiting for a permit, by rank
-- KEYS[8..] string  result keys (of the tasks that keep a result), idempotency keys and tenant queues, referenced by slot below
-- ARGV[1]  integer  idempotency TTL (ms)
-- ARGV[2]  integer  N, the number of tasks
-- ARGV[3]  integer  admission window: a task with a priority goes straight onto the stream only while nothing
--                   waits in the ready set and fewer entries than this wait undelivered on the stream
-- ARGV[4..] per task, 7 values: task id, task blob (msgpack), format version, delay (ms from now by Redis' clock,
--                   0 = now),
--                   result key slot (0 = the task keeps no result, k = KEYS[k]), idempotency key slot (0 = none),
--                   priority ("" = none: the task takes the plain path, and nothing of flow control runs;
--                   "w<priority>": the task takes units from rate limits and always waits in KEYS[5];
--                   "k<priority>": the task has a concurrency key and always waits in KEYS[7];
--                   "f<slot>:<priority>:<tenant>": the task waits in its tenant's queue KEYS[slot], ranked by
--                   its priority (0 when it has none; its rate limits and concurrency key, if any, are checked
--                   by the fair gate), and a tenant not in KEYS[6] joins it at the lowest virtual time there,
--                   0 when it is empty); a task with a delay and any of these waits in the delayed set, its
--                   record naming its lane (lanes.lua), and the mover puts it into its waiting set when due (a
--                   tenant's task into the rejoin set, from which the fair gate moves it into its queue)
-- Returns: an array of N values: 1 queued, 2 delayed, or a task id (string) when nothing was added because
--          that task (the same id, or the first task of that idempotency key) already exists
-- @include entry.lua
-- @include delayed.lua
-- @include clock.lua
-- @include admission.lua
-- @include lanes.lua
-- @include tenants.lua
local n = tonumber(ARGV[2])
local ids, result_keys = {}, {}
for i = 0, n - 1 do
  local base = 4 + i * 7
  ids[i + 1] = ARGV[base]
  local slot = tonumber(ARGV[base + 4])
  if slot > 0 then
    result_keys[#result_keys + 1] = KEYS[slot]
  end
end
local places = redis.call('HMGET', KEYS[2], unpack(ids))
local some_settled = #result_keys > 0 and redis.call('EXISTS', unpack(result_keys)) > 0
local out, index, delayed, seen = {}, {}, {}, {}
local now = nil
for i = 0, n - 1 do
  local base = 4 + i * 7
  local task_id, blob, version = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local delay, result_slot, idem_slot = tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4]), tonumber(ARGV[base + 5])
  local priority = ARGV[base + 6]
  local existing = false
  if idem_slot > 0 then
    existing = redis.call('GET', KEYS[idem_slot])
    if not existing then
      redis.call('SET', KEYS[idem_slot], task_id, 'PX', ARGV[1])
    end
  end
  if not existing and (places[i + 1] or seen[task_id]
      or (some_settled and result_slot > 0 and redis.call('EXISTS', KEYS[result_slot]) == 1)) then
    existing = task_id
  end
  if existing then
    out[i + 1] = existing
  else
    seen[task_id] = true
    index[#index + 1] = task_id
    if delay > 0 then
      now = now or now_ms()
      index[#index + 1] = delayed_record(version, 1, 0, blob, lane_of(priority))
      delayed[#delayed + 1] = now + delay
      delayed[#delayed + 1] = task_id
      out[i + 1] = 2
    elseif string.sub(priority, 1, 1) == 'f' then
      now = now or now_ms()
      local slot, level, tenant = fair_parts(priority)
      index[#index + 1] = delayed_record(version, 1, 0, blob)
      redis.call('ZADD', KEYS[slot], rank(now, tonumber(level), i), task_id)
      join_tenant(KEYS[6], tenant)
      out[i + 1] = 1
    elseif string.sub(priority, 1, 1) == 'w' or string.sub(priority, 1, 1) == 'k' then
      now = now or now_ms()
      index[#index + 1] = delayed_record(version, 1, 0, blob)
      local set = string.sub(priority, 1, 1) == 'w' and KEYS[5] or KEYS[7]
      redis.call('ZADD', set, rank(now, tonumber(string.sub(priority, 2)), i), task_id)
      out[i + 1] = 1
    elseif priority ~= '' and not admit_now(KEYS[1], KEYS[4], tonumber(ARGV[3])) then
      now = now or now_ms()
      index[#index + 1] = delayed_record(version, 1, 0, blob)
      redis.call('ZADD', KEYS[4], rank(now, tonumber(priority), i), task_id)
      out[i + 1] = 1
    else
      index[#index + 1] = add_entry(KEYS[1], version, blob, 1, 0)
      out[i + 1] = 1
    end
  end
end
if #index > 0 then
  redis.call('HSET', KEYS[2], unpack(index))
end
if #delayed > 0 then
  redis.call('ZADD', KEYS[3], unpack(delayed))
end
return out
