-- peek_fair: read, in one call, what the fair gate (fleet/fairgate.py) needs to choose a capability's next
-- admissions of tenants' tasks: the room left in the window and, per tenant, its virtual time, weight, queue
-- length and its best-ranked waiting tasks with their waiting records. Writes nothing.
--
-- How many tasks of a tenant are returned: its turns in the room left, as admit_fair's virtual-time order would
-- give them if no task were held back by a key's cap or a rate limit (so a tenant of weight 3 gets 3 times the
-- tasks of one of weight 1), plus ARGV[2] more, so that a tenant whose first tasks are held back still shows
-- tasks that may go. Every tenant shows at least ARGV[2] tasks (when it has that many): one whose turn is taken
-- by a held-back tenant can fill it. For a tenant the caller names as held back in its last pass, the others
-- count their turns as if it were absent too (and show the more of the two counts), so that the room can be
-- filled without it, while it shows its own turns (it may go again) plus ARGV[2].
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> waiting record (the delayed record's layout, see delayed.lua)
-- KEYS[3]  zset     tenants: tenant -> virtual time
-- KEYS[4]  hash     weights: tenant -> weight (missing: 1)
-- KEYS[5..] zset    the queues of the T tenants named in ARGV[4..3+T], in that order
-- ARGV[1]  integer  admission window: the most undelivered entries the stream may hold
-- ARGV[2]  integer  extra tasks shown per tenant beyond its turns
-- ARGV[3]  integer  T, the number of tenants
-- ARGV[4..3+T] string  tenants (the caller passes those of lowest virtual time)
-- ARGV[4+T..3+2T] integer  per tenant: 1 held back in the caller's last pass, 0 not
-- Returns: an array whose first value is the room left in the window (an integer, <= 0 when full: nothing
--          else follows then), followed by one array per tenant named that is still in the tenants set, in
--          that order: {tenant, virtual time (string), weight (string), queue length, task id, waiting record, ...}
--          (the record is "" for a task id whose index field is not a waiting record any more: settled or
--          cancelled elsewhere; admit_fair drops it from its queue)
-- @include admission.lua
local room = tonumber(ARGV[1]) - waiting_undelivered(KEYS[1])
if room <= 0 then
  return {room}
end
local extra, t = tonumber(ARGV[2]), tonumber(ARGV[3])
local found = {}
for j = 1, t do
  local i = 3 + j
  local score = redis.call('ZSCORE', KEYS[3], ARGV[i])
  if score then
    local weight = redis.call('HGET', KEYS[4], ARGV[i]) or '1'
    found[#found + 1] = {i = i, key = KEYS[4 + j], score = score, vtime = tonumber(score), weight = weight,
                         step = 1 / tonumber(weight), length = redis.call('ZCARD', KEYS[4 + j]),
                         held = ARGV[3 + t + j] == '1'}
  end
end
-- turns[k]: the turns of found[k] in the room, in virtual-time order, among every tenant or (skip_held) among
-- those not held back.
local function count_turns(skip_held)
  local turns, vtime = {}, {}
  for k, f in ipairs(found) do
    turns[k], vtime[k] = 0, f.vtime
  end
  for _ = 1, room do
    local best = nil
    for k, f in ipairs(found) do
      if not (skip_held and f.held) and turns[k] < f.length and (best == nil or vtime[k] < vtime[best]) then
        best = k
      end
    end
    if best == nil then
      break
    end
    turns[best] = turns[best] + 1
    vtime[best] = vtime[best] + found[best].step
  end
  return turns
end
local with_all, without_held = count_turns(false), count_turns(true)
local out = {room}
for k, f in ipairs(found) do
  local tenant = {ARGV[f.i], f.score, f.weight, f.length}
  local count = math.min(f.length, math.max(with_all[k], without_held[k]) + extra)
  if count > 0 then
    local ids = redis.call('ZRANGE', f.key, 0, count - 1)
    local records = redis.call('HMGET', KEYS[2], unpack(ids))
    for j, task_id in ipairs(ids) do
      tenant[#tenant + 1] = task_id
      tenant[#tenant + 1] = (records[j] and string.sub(records[j], 1, 1) == 'd') and records[j] or ''
    end
  end
  out[#out + 1] = tenant
end
return out
