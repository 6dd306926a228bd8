-- store_result: keep a task's result record for ttl_ms and announce it on its channel (the record itself is
-- announced, so a waiter needs no second GET). Called before the entry is acked: under maxmemory the SET fails
-- first, the script stops, and nothing has changed.
local function store_result(key, record, ttl_ms, channel)
  redis.call('SET', key, record, 'PX', ttl_ms)
  redis.call('PUBLISH', channel, record)
end
