-- admit_fair: move waiting tasks of tenants (fairness_key) onto the work stream in weighted virtual-time order
-- (start-time fair queueing), keeping at most a window of undelivered entries on the stream.
--
-- Each tenant with waiting tasks is a member of the tenants set, scored by its virtual time. Each admission takes
-- the head of the queue of the tenant with the lowest virtual time among those passed, and advances that
-- tenant's virtual time by 1 / its weight. So under contention tenants are admitted in proportion to their
-- weights, whatever their backlogs; a tenant whose queue empties leaves the set (work-conserving: its share goes to
-- the others), and one that comes back joins at the lowest virtual time there (submit.lua), so an idle tenant
-- banks no credit. The move of each task (XADD, index field, ZREM from its queue) is in this one script.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> waiting record (the delayed record's layout, see delayed.lua)
-- KEYS[3]  zset     tenants: tenant -> virtual time
-- KEYS[4]  hash     weights: tenant -> weight (missing: 1)
-- KEYS[5..] zset    the queues of the tenants named in ARGV[2..], in that order (the caller passes the tenants
--                   of lowest virtual time, as many as the window may admit)
-- ARGV[1]  integer  admission window: the most undelivered entries the stream may hold after this call
-- ARGV[2..] string  tenants
-- Returns: an array of 2 integers: tasks moved, and tenants still waiting
-- @include entry.lua
-- @include delayed.lua
-- @include admission.lua
local room = tonumber(ARGV[1]) - waiting_undelivered(KEYS[1])
local tenants, vtime, weight = {}, {}, {}
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[3], ARGV[i])
  if score then
    tenants[#tenants + 1] = i
    vtime[i] = tonumber(score)
    weight[i] = tonumber(redis.call('HGET', KEYS[4], ARGV[i]) or '1')
  end
end
local moved = 0
while room > 0 and #tenants > 0 do
  local best = 1
  for j = 2, #tenants do
    if vtime[tenants[j]] < vtime[tenants[best]] then
      best = j
    end
  end
  local i = tenants[best]
  local queue = KEYS[i + 3]
  local head = redis.call('ZRANGE', queue, 0, 0)
  if #head == 1 then
    redis.call('ZREM', queue, head[1])
    if onto_stream(KEYS[1], KEYS[2], head[1]) then
      moved = moved + 1
      room = room - 1
      vtime[i] = vtime[i] + 1 / weight[i]
    end
  end
  if redis.call('EXISTS', queue) == 0 then
    redis.call('ZREM', KEYS[3], ARGV[i])
    table.remove(tenants, best)
  else
    redis.call('ZADD', KEYS[3], vtime[i], ARGV[i])
  end
end
return {moved, redis.call('ZCARD', KEYS[3])}
