-- settle: record the final outcome of a batch of tasks of one capability held by one consumer; ack and delete
-- their entries and clear their index fields.
--
-- Each task whose entry the consumer still holds gets its result record stored (with a TTL) and announced, in
-- that order before its entry is acked (see result.lua); a task submitted with store_result=False has no
-- record: it is only acked and deleted. An entry the consumer no longer holds was taken back by the reaper
-- (the consumer was a "zombie": paused past its heartbeat): its late result is refused, a lost lease. The owner
-- check is one XPENDING over the range of the batch's entry ids, not one per task.
--
-- KEYS[1]   stream   work stream of the capability
-- KEYS[2]   hash     index: task id -> entry id
-- KEYS[3]   hash     throughput buckets of the capability (see tput.lua): the settled tasks count as completed
-- KEYS[3+k] string   result key of the k-th task of the batch that has a result record
-- ARGV[1]   string   consumer group
-- ARGV[2]   string   consumer that must hold the entries
-- ARGV[3]   integer  result TTL (ms)
-- ARGV[4]   string   channel prefix: a task's settlement is announced on this prefix followed by its id
-- ARGV[5]   string   the lowest entry id of the batch
-- ARGV[6]   string   the highest entry id of the batch
-- ARGV[7..] per task, 3 values: entry id, task id, result record (msgpack; "" for none)
-- Returns: an array with, per task in order, 1 settled (or already settled by this very record: a client
--          retry re-sent the call after losing its reply), 0 lease lost
-- @include held.lua
-- @include result.lua
-- @include tput.lua
local held = held_by(KEYS[1], ARGV[1], ARGV[2], ARGV[5], ARGV[6])
local out, entries, tasks = {}, {}, {}
local key = 3
for i = 7, #ARGV, 3 do
  local entry_id, task_id, record = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local result_key = nil
  if record ~= '' then
    key = key + 1
    result_key = KEYS[key]
  end
  if held[entry_id] then
    if result_key then
      store_result(result_key, record, ARGV[3], ARGV[4] .. task_id)
    end
    entries[#entries + 1] = entry_id
    tasks[#tasks + 1] = task_id
    out[#out + 1] = 1
  elseif result_key and redis.call('GET', result_key) == record then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #entries > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(entries))
  redis.call('XDEL', KEYS[1], unpack(entries))
  redis.call('HDEL', KEYS[2], unpack(tasks))
  count_outcomes(KEYS[3], 'c', #entries)
end
return out
