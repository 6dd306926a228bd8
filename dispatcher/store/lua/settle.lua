-- settle: record a task's final result, if the caller still owns its entry; ack and delete the entry.
--
-- XACK does not check ownership, so a paused ("zombie") worker could settle an entry the reaper already
-- gave to another worker. The owner check makes that a lost lease instead of a second result.
-- The result is written before the ack: under maxmemory the SET fails first and nothing changes.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> entry id
-- KEYS[3]  string   the task's result key
-- ARGV[1]  string   consumer group
-- ARGV[2]  string   entry id
-- ARGV[3]  string   consumer that must own the entry
-- ARGV[4]  string   task id
-- ARGV[5]  bytes    result record (msgpack)
-- ARGV[6]  integer  result TTL (ms)
-- ARGV[7]  string   channel to announce the settlement on
-- ARGV[8]  string   status ("succeeded" or "failed"; the record itself is what is announced)
-- Returns: 1 settled (now, or already by this very record), 0 lease lost (entry not pending, or pending
--          for another consumer)
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if not ok or #pending == 0 or pending[1][2] ~= ARGV[3] then
  -- A client retry re-sends a settle whose reply was lost: our own record is already there, not a lost lease.
  if redis.call('GET', KEYS[3]) == ARGV[5] then
    return 1
  end
  return 0
end
redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[6])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], ARGV[4]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[4])
end
redis.call('PUBLISH', ARGV[7], ARGV[5])  -- the record: a waiter needs no second GET
return 1
