-- bury: move a task to the dead-letter stream, if the caller's view still holds; ack and delete the entry.
--
-- The dead letter and the task's "dead" result are written before the ack: under maxmemory they fail
-- first and nothing changes. The dead-letter stream is capped (approximately) at ARGV[8] entries.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> entry id
-- KEYS[3]  stream   dead-letter stream of the capability
-- KEYS[4]  string   the task's result key (unused when the task id is unknown)
-- KEYS[5]  string   optional: the owner's heartbeat; when given, act only if it no longer exists
-- ARGV[1]  string   consumer group
-- ARGV[2]  string   entry id
-- ARGV[3]  string   consumer that must own the entry
-- ARGV[4]  string   task id, or "" when the entry could not be decoded
-- ARGV[5]  bytes    result record (msgpack, status "dead")
-- ARGV[6]  integer  result TTL (ms)
-- ARGV[7]  string   channel to announce the settlement on
-- ARGV[8]  integer  dead-letter stream cap (approximate MAXLEN)
-- ARGV[9..] field/value pairs of the dead letter
-- Returns: 1 buried, 0 lease lost, 2 owner alive (KEYS[5] exists)
if KEYS[5] and redis.call('EXISTS', KEYS[5]) == 1 then
  return 2
end
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if not ok or #pending == 0 or pending[1][2] ~= ARGV[3] then
  return 0
end
local letter = {}
for i = 9, #ARGV do
  letter[#letter + 1] = ARGV[i]
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', unpack(letter))
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[4] ~= '' then
  if redis.call('HGET', KEYS[2], ARGV[4]) == ARGV[2] then
    redis.call('HDEL', KEYS[2], ARGV[4])
  end
  redis.call('PUBLISH', ARGV[7], ARGV[5])  -- the dead result record
end
return 1
