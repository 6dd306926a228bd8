-- lease: take, renew or release a fleet-wide lease (one reaper or one delayed-task mover at a time).
--
-- KEYS[1]  string   the lease key
-- ARGV[1]  string   who asks (a consumer name)
-- ARGV[2]  integer  lease time (ms); 0 releases the lease if the caller holds it
-- Returns: 1 held by the caller (taken or renewed) or released by it, 0 held by another
if ARGV[2] == '0' then
  if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
