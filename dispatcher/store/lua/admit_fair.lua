-- admit_fair: move the tasks of tenants (fairness_key) that the fair gate chose onto the work stream, and advance
-- each tenant's virtual time by what it was admitted (start-time fair queueing, as fleet/fairgate.py simulated it
-- from peek_fair's read).
--
-- Each tenant with waiting tasks is a member of the tenants set, scored by its virtual time; each admission of a
-- tenant's task advances it by 1 / the tenant's weight, so under contention tenants are admitted in proportion
-- to their weights, whatever their backlogs. A tenant whose queue empties leaves the set (work-conserving: its
-- share goes to the others); one that comes back joins at the lowest virtual time there (submit.lua), so an idle
-- tenant banks no credit. A tenant the gate names as held back (all of its tasks it looked at wait for a key's
-- permit or a rate limit's units) is treated as idle for this call: its virtual time is raised to the lowest
-- start time of the tenants admitted now, so a blocked tenant banks no credit either.
--
-- The move of each task (ZREM from its queue, verified: a task no longer queued is skipped; XADD; index field from
-- its waiting record to its entry id; its permit in its key's permit set) is in this one script, so a crash of
-- the caller never loses or duplicates a task. Rate-limit units are taken before this call, on the limits' own
-- slots: a crash between the two under-uses a limit, never over-uses it. No window is applied here: the caller
-- counted the room in it.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> waiting record (the delayed record's layout, see delayed.lua)
-- KEYS[3]  zset     tenants: tenant -> virtual time
-- KEYS[4]  hash     weights: tenant -> weight (missing: 1)
-- KEYS[5..4+T] zset the queues of the T tenants named in ARGV[2..1+T], in that order
-- KEYS[5+T..] zset  permit sets of the chosen tasks' concurrency keys (P:{C}:permits:<key>)
-- ARGV[1]  integer  T, the number of tenants named
-- ARGV[2..1+T] string  the tenants
-- ARGV[2+T..1+2T] integer  per tenant: 1 held back (raise its virtual time as said above), 0 not
-- ARGV[2+2T..] triples  the chosen tasks, in admission order: tenant (1..T), task id, the slot k of its permit
--                   set in KEYS (0 = no concurrency key), to which the id is added as it goes onto the stream
-- Returns: an array of 2 integers: tasks moved, and tenants still waiting
-- @include entry.lua
-- @include delayed.lua
local t = tonumber(ARGV[1])
local admitted = {}
local moved = 0
for i = 2 + 2 * t, #ARGV, 3 do
  local j, task_id, permits = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  if redis.call('ZREM', KEYS[4 + j], task_id) == 1 and onto_stream(KEYS[1], KEYS[2], task_id) then
    if permits > 0 then
      redis.call('ZADD', KEYS[permits], 0, task_id)
    end
    admitted[j] = (admitted[j] or 0) + 1
    moved = moved + 1
  end
end
local vtime, floor = {}, nil
for j = 1, t do
  local score = redis.call('ZSCORE', KEYS[3], ARGV[1 + j])
  if score then
    vtime[j] = tonumber(score)
    local count = admitted[j]
    if count then
      local step = 1 / tonumber(redis.call('HGET', KEYS[4], ARGV[1 + j]) or '1')
      vtime[j] = vtime[j] + count * step
      local start = vtime[j] - step
      if floor == nil or start < floor then
        floor = start
      end
    end
  end
end
for j = 1, t do
  if vtime[j] then
    if redis.call('EXISTS', KEYS[4 + j]) == 0 then
      redis.call('ZREM', KEYS[3], ARGV[1 + j])
    else
      if floor and ARGV[1 + t + j] == '1' and vtime[j] < floor then
        vtime[j] = floor
      end
      redis.call('ZADD', KEYS[3], vtime[j], ARGV[1 + j])
    end
  end
end
return {moved, redis.call('ZCARD', KEYS[3])}
