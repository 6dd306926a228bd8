-- bury: move a task to the dead-letter stream, if the caller's view still holds; ack and delete the entry.
--
-- The dead letter (and the task's "dead" result, when it keeps results) is written before the ack: under
-- maxmemory the first write fails and nothing changes. The dead-letter stream is capped (approximately) at
-- ARGV[8] entries.
--
-- KEYS[1]  stream   work stream of the capability
-- KEYS[2]  hash     index: task id -> entry id
-- KEYS[3]  stream   dead-letter stream of the capability
-- KEYS[4]  string   the task's result key (unused without a record)
-- KEYS[5]  hash     throughput buckets of the capability (see tput.lua): a dead letter counts as failed
-- KEYS[6]  string   optional: the owner's heartbeat; when given, act only if it no longer exists
-- ARGV[1]  string   consumer group
-- ARGV[2]  string   entry id
-- ARGV[3]  string   consumer that must hold the entry
-- ARGV[4]  string   task id, or "" when the entry could not be decoded
-- ARGV[5]  bytes    result record (msgpack, status "dead"), or "" to store and announce none
-- ARGV[6]  integer  result TTL (ms)
-- ARGV[7]  string   channel to announce the settlement on
-- ARGV[8]  integer  dead-letter stream cap (approximate MAXLEN)
-- ARGV[9]  string   "1" when the task id is the task's own; "0" when it was read from an entry that did not
--                   decode (untrusted bytes): its dead result is then stored only if that id has no result yet
--                   and the index names this entry or nothing, so a forged entry cannot overwrite another task's
-- ARGV[10..] field/value pairs of the dead letter
-- Returns: 1 buried, 0 lease lost, 2 owner alive (KEYS[6] exists)
-- @include held.lua
-- @include result.lua
-- @include tput.lua
if KEYS[6] and redis.call('EXISTS', KEYS[6]) == 1 then
  return 2
end
if not held_by(KEYS[1], ARGV[1], ARGV[3], ARGV[2], ARGV[2])[ARGV[2]] then
  return 0
end
local store = ARGV[5] ~= ''
if store and ARGV[9] == '0' then
  local place = redis.call('HGET', KEYS[2], ARGV[4])
  store = (place == false or place == ARGV[2]) and redis.call('EXISTS', KEYS[4]) == 0
end
local letter = {}
for i = 10, #ARGV do
  letter[#letter + 1] = ARGV[i]
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', unpack(letter))
if store then
  store_result(KEYS[4], ARGV[5], ARGV[6], ARGV[7])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
-- Only if the index still names this entry: the id of an undecodable entry comes from untrusted bytes.
if ARGV[4] ~= '' and redis.call('HGET', KEYS[2], ARGV[4]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[4])
end
count_outcomes(KEYS[5], 'f', 1)
return 1
