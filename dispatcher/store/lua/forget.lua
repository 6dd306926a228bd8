-- forget: delete a dead consumer from the group, only if it holds no pending entry.
--
-- XGROUP DELCONSUMER drops the consumer's pending entries (they would become unclaimable), so the check
-- and the delete must be one step: a paused worker that wakes up and reads in between keeps its entries.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  string   the consumer's heartbeat key
-- ARGV[1]  string   consumer group
-- ARGV[2]  string   consumer
-- Returns: 1 deleted, 0 kept (heartbeat present or entries pending)
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
