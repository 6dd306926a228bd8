-- count_outcomes: add n to the throughput counter of one kind ('c' completed, 'f' failed) of the capability, in
-- the bucket of the current 5 s by Redis' clock. The hash is a ring of 16 buckets (80 s): fields b<i> (the
-- bucket number that slot i holds), c<i> and f<i>; a slot found holding an older bucket is reset first, so the
-- hash never grows past 48 fields and stats ignores slots outside its window by their stamp. Called once per
-- script call (a settle batch counts all its tasks at once), after the script's other writes: a script that has
-- written may write again under maxmemory, so counting never refuses a transition that was allowed.
local function count_outcomes(key, kind, n)
  local t = redis.call('TIME')
  local bucket = math.floor(tonumber(t[1]) / 5)
  local slot = bucket % 16
  if redis.call('HGET', key, 'b' .. slot) ~= tostring(bucket) then
    redis.call('HSET', key, 'b' .. slot, bucket, 'c' .. slot, 0, 'f' .. slot, 0)
  end
  redis.call('HINCRBY', key, kind .. slot, n)
  redis.call('PEXPIRE', key, 90000)
end
