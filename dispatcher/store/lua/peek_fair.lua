-- peek_fair: read, in one call, what the fair gate (fleet/fairgate.py) needs to choose a capability's next
-- admissions of tenants' tasks: the room left in the window and, per tenant, its virtual time, weight, queue
-- length and its best-ranked waiting tasks with their waiting records. Writes nothing.
--
-- How many tasks of a tenant are returned: its turns in the room left, as admit_fair's virtual-time order would
-- give them if no task were held back by a key's cap or a rate limit (so a tenant of weight 3 gets 3 times the
-- tasks of one of weight 1), plus ARGV[2] more, so that a tenant whose first tasks are held back still shows
-- tasks that may go. Every tenant shows at least ARGV[2] tasks (when it has that many): one whose turn is taken
-- by a held-back tenant can fill it.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> waiting record (the delayed record's layout, see delayed.lua)
-- KEYS[3]  zset     tenants: tenant -> virtual time
-- KEYS[4]  hash     weights: tenant -> weight (missing: 1)
-- KEYS[5..] zset    the queues of the tenants named in ARGV[3..], in that order
-- ARGV[1]  integer  admission window: the most undelivered entries the stream may hold
-- ARGV[2]  integer  extra tasks shown per tenant beyond its turns
-- ARGV[3..] string  tenants (the caller passes those of lowest virtual time)
-- Returns: an array whose first value is the room left in the window (an integer, <= 0 when full: nothing
--          else follows then), followed by one array per tenant of ARGV still in the tenants set, in ARGV's
--          order: {tenant, virtual time (string), weight (string), queue length, task id, waiting record, ...}
--          (the record is "" for a task id whose index field is not a waiting record any more: settled or
--          cancelled elsewhere; admit_fair drops it from its queue)
-- @include admission.lua
local room = tonumber(ARGV[1]) - waiting_undelivered(KEYS[1])
if room <= 0 then
  return {room}
end
local extra = tonumber(ARGV[2])
local found = {}
for i = 3, #ARGV do
  local score = redis.call('ZSCORE', KEYS[3], ARGV[i])
  if score then
    local weight = redis.call('HGET', KEYS[4], ARGV[i]) or '1'
    found[#found + 1] = {i = i, score = score, vtime = tonumber(score), weight = weight,
                         step = 1 / tonumber(weight), length = redis.call('ZCARD', KEYS[i + 2]), turns = 0}
  end
end
for _ = 1, room do
  local best = nil
  for _, t in ipairs(found) do
    if t.turns < t.length and (best == nil or t.vtime < best.vtime) then
      best = t
    end
  end
  if best == nil then
    break
  end
  best.turns = best.turns + 1
  best.vtime = best.vtime + best.step
end
local out = {room}
for _, t in ipairs(found) do
  local tenant = {ARGV[t.i], t.score, t.weight, t.length}
  local count = math.min(t.length, t.turns + extra)
  if count > 0 then
    local ids = redis.call('ZRANGE', KEYS[t.i + 2], 0, count - 1)
    local records = redis.call('HMGET', KEYS[2], unpack(ids))
    for j, task_id in ipairs(ids) do
      tenant[#tenant + 1] = task_id
      tenant[#tenant + 1] = (records[j] and string.sub(records[j], 1, 1) == 'd') and records[j] or ''
    end
  end
  out[#out + 1] = tenant
end
return out
