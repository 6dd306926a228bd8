-- rejoin: move tasks with a fairness_key that came back (a delay or a retry's backoff ended, a RateLimited
-- hand-back, a reclaim of a rate-limited task, a dead letter requeued: lanes.lua) from the rejoin set into their
-- tenants' queues, keeping the rank they were given there, so that the fair gate admits them by the same rules as
-- at submit: in their tenant's virtual-time turn, taking their rate limits' units and their key's permit again.
--
-- The rejoin set holds no tenant: the caller read each task's fairness_key from its waiting record's blob (a
-- script does not decode msgpack tasks) and names its queue here. A tenant not in the tenants set joins it at
-- the lowest virtual time there (0 when it is empty), as at submit. Each task's ZREM from the rejoin set (verified:
-- a task another call moved is skipped) and its ZADD into its queue are in this one script: a crash of the caller
-- never loses or duplicates a task. A task whose index field is no longer a waiting record (settled or cancelled
-- elsewhere) is dropped from the set; one whose tenant the caller could not read (slot 0: a blob that is not a
-- valid task) goes onto the stream, where the worker that reads it dead-letters it with the reason.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> waiting record (the delayed record's layout, see delayed.lua)
-- KEYS[3]  zset     rejoin: tasks on their way back into their tenant's queue, by rank (see admission.lua)
-- KEYS[4]  zset     tenants: tenant -> virtual time
-- KEYS[5..4+T] zset the queues of the T tenants named in ARGV[2..1+T], in that order
-- ARGV[1]  integer  T, the number of tenants
-- ARGV[2..1+T] string  the tenants
-- ARGV[2+T..] pairs the tasks: task id, its tenant (1..T; 0 = none could be read: onto the stream)
-- Returns: the number of tasks moved (into a queue or onto the stream)
-- @include entry.lua
-- @include delayed.lua
-- @include tenants.lua
local t = tonumber(ARGV[1])
local moved = 0
for i = 2 + t, #ARGV, 2 do
  local task_id, j = ARGV[i], tonumber(ARGV[i + 1])
  local score = redis.call('ZSCORE', KEYS[3], task_id)
  if score then
    redis.call('ZREM', KEYS[3], task_id)
    if j == 0 then
      if onto_stream(KEYS[1], KEYS[2], task_id) then
        moved = moved + 1
      end
    elseif read_delayed(redis.call('HGET', KEYS[2], task_id)) then
      redis.call('ZADD', KEYS[4 + j], score, task_id)
      join_tenant(KEYS[4], ARGV[1 + j])
      moved = moved + 1
    end
  end
end
return moved
