-- drop: delete the keys of a capability that holds no task, so that it can leave the capability set.
--
-- The check and the delete are one step: a task submitted in between would be deleted with the keys. Only the
-- capability's own slot is touched; the caller removes it from the fleet-wide set afterwards (another slot),
-- then looks again (see dispatcher/fleet/capabilities.py for why that order is safe against a submit).
-- Result records (P:{C}:result:<id>) and idempotency keys are left to expire: they cannot be listed without
-- SCAN, and nothing reads them once the capability is gone.
--
-- KEYS[1]  stream   work stream of the capability (with its group)
-- KEYS[2]  hash     index: task id -> entry id or delayed record
-- KEYS[3]  zset     delayed tasks
-- KEYS[4]  stream   dead letters
-- ARGV[1]  string   consumer group
-- ARGV[2]  integer  1 = delete the dead letters too, 0 = refuse while there are any
-- Returns: 1 dropped, 0 kept (tasks waiting, running or delayed), -1 kept (dead letters and ARGV[2] is 0)
if redis.call('XLEN', KEYS[1]) > 0 or redis.call('HLEN', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[3]) > 0 then
  return 0
end
-- A pending entry whose stream entry is gone still counts as running (stats count it so too). No stream or
-- no group (NOGROUP, an error reply here): nothing is pending.
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if type(pending) == 'table' and not pending.err and pending[1] > 0 then
  return 0
end
if ARGV[2] ~= '1' and redis.call('XLEN', KEYS[4]) > 0 then
  return -1
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
