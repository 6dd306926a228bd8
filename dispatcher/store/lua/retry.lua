-- retry: give a task back to the fleet as a fresh entry (now, or delayed), if the caller's view still holds.
--
-- Used for handler failures that will be retried, for hand-back at shutdown, and by the reaper for
-- entries of dead consumers or hung handlers. The new entry is written before the old one is acked and
-- deleted, in one script: the task is never in the queue zero times or twice. Attempt and reclaim counts
-- travel inside the entry, because a fresh XADD starts Redis' own delivery counter again.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> entry id or delayed record
-- KEYS[3]  zset     delayed tasks
-- KEYS[4]  string   optional: the owner's heartbeat; when given, act only if it no longer exists
-- ARGV[1]  string   consumer group
-- ARGV[2]  string   entry id
-- ARGV[3]  string   consumer that must own the entry
-- ARGV[4]  string   task id
-- ARGV[5]  bytes    task blob (msgpack), as read from the entry
-- ARGV[6]  integer  attempt number of the new entry
-- ARGV[7]  integer  reclaim count of the new entry
-- ARGV[8]  integer  due time (epoch ms); 0 = now
-- ARGV[9]  string   wire format version
-- Returns: the new entry id (re-added now), "d" (delayed), 0 lease lost, 2 owner alive (KEYS[4] exists)
if KEYS[4] and redis.call('EXISTS', KEYS[4]) == 1 then
  return 2
end
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if not ok or #pending == 0 or pending[1][2] ~= ARGV[3] then
  return 0
end
local reply
if tonumber(ARGV[8]) > 0 then
  redis.call('HSET', KEYS[2], ARGV[4], 'd' .. ARGV[6] .. ':' .. ARGV[7] .. ':' .. ARGV[5])
  redis.call('ZADD', KEYS[3], ARGV[8], ARGV[4])
  reply = 'd'
else
  reply = redis.call('XADD', KEYS[1], '*', 'v', ARGV[9], 'task', ARGV[5], 'attempt', ARGV[6], 'reclaims', ARGV[7])
  redis.call('HSET', KEYS[2], ARGV[4], reply)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return reply
