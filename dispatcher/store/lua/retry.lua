-- retry: give a task back to the fleet as a fresh entry (now, or delayed), if the caller's view still holds.
--
-- Used for handler failures that will be retried, for hand-back at shutdown, and by the reaper for entries of
-- dead consumers or hung handlers. The new entry (or delayed record) is written before the old entry is acked
-- and deleted, in one script: the task is never in the queue zero times or twice, and under maxmemory the first
-- write fails and nothing changes. Attempt and reclaim counts travel inside the entry, because a fresh XADD
-- starts Redis' own delivery counter again; the entry's format version is kept as it was.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> entry id or delayed record
-- KEYS[3]  zset     delayed tasks
-- KEYS[4]  hash     throughput buckets of the capability (see tput.lua)
-- KEYS[5]  string   optional: the owner's heartbeat; when given, act only if it no longer exists
-- ARGV[1]  string   consumer group
-- ARGV[2]  string   entry id
-- ARGV[3]  string   consumer that must hold the entry
-- ARGV[4]  string   task id
-- ARGV[5]  bytes    task blob (msgpack), as read from the entry
-- ARGV[6]  integer  attempt number of the new entry
-- ARGV[7]  integer  reclaim count of the new entry
-- ARGV[8]  integer  delay (ms) from now by Redis' clock; 0 = now
-- ARGV[9]  string   format version of the task entry
-- ARGV[10] string   "1" when the attempt failed (a handler error, a worker that died or hung): counted as failed
--                   in the throughput buckets; "0" for a hand-back, which is no attempt
-- ARGV[11] string   optional: the task's lane (lanes.lua; "" or absent: none). A task with a lane always goes
--                   through the delayed set, even with no delay (then due now): when due, the mover puts it
--                   into its waiting set, so a retry takes its rate limits' units and its key's permit again.
--                   The caller gives no lane for a reclaim or a hand-back: those go straight onto the stream
--                   and keep the permit they hold
-- Returns: 1 given back (re-added now or delayed), 0 lease lost, 2 owner alive (KEYS[5] exists)
-- @include held.lua
-- @include entry.lua
-- @include delayed.lua
-- @include clock.lua
-- @include tput.lua
if KEYS[5] and redis.call('EXISTS', KEYS[5]) == 1 then
  return 2
end
if not held_by(KEYS[1], ARGV[1], ARGV[3], ARGV[2], ARGV[2])[ARGV[2]] then
  return 0
end
local lane = ARGV[11] or ''
if tonumber(ARGV[8]) > 0 or lane ~= '' then
  redis.call('HSET', KEYS[2], ARGV[4], delayed_record(ARGV[9], ARGV[6], ARGV[7], ARGV[5], lane))
  redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[8]), ARGV[4])
else
  redis.call('HSET', KEYS[2], ARGV[4], add_entry(KEYS[1], ARGV[9], ARGV[5], ARGV[6], ARGV[7]))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[10] == '1' then
  count_outcomes(KEYS[4], 'f', 1)
end
return 1
