-- settle_many: settle.lua for a batch of tasks of one capability and one consumer, in one call.
--
-- Each task: if the consumer still owns its entry, store its result, ack and delete the entry, clear its
-- index field and announce it; else leave everything as it is (lease lost). See settle.lua for why the
-- owner is checked and why the result is written before the ack.
--
-- KEYS[1]   stream   work stream of the capability
-- KEYS[2]   hash     index: task id -> entry id
-- KEYS[2+i] string   result key of task i (1-based)
-- ARGV[1]   string   consumer group
-- ARGV[2]   string   consumer that must own the entries
-- ARGV[3]   integer  result TTL (ms)
-- ARGV[4..] per task, 5 values: entry id, task id, result record (msgpack, also what is announced), channel,
--                   status
-- Returns: an array with, per task, 1 settled (or already settled by this very record) or 0 lease lost
local out = {}
local n = (#ARGV - 3) / 5
for i = 1, n do
  local base = 4 + (i - 1) * 5
  local entry_id, task_id = ARGV[base], ARGV[base + 1]
  local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], entry_id, entry_id, 1)
  if not ok or #pending == 0 or pending[1][2] ~= ARGV[2] then
    -- 1 when a re-sent call finds its own record already stored (its first reply was lost)
    out[i] = redis.call('GET', KEYS[2 + i]) == ARGV[base + 2] and 1 or 0
  else
    redis.call('SET', KEYS[2 + i], ARGV[base + 2], 'PX', ARGV[3])
    redis.call('XACK', KEYS[1], ARGV[1], entry_id)
    redis.call('XDEL', KEYS[1], entry_id)
    if redis.call('HGET', KEYS[2], task_id) == entry_id then
      redis.call('HDEL', KEYS[2], task_id)
    end
    redis.call('PUBLISH', ARGV[base + 3], ARGV[base + 2])
    out[i] = 1
  end
end
return out
