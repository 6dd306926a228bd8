-- now_ms: Redis' own clock in epoch milliseconds. Due times and expiry are decided by it, never by a client's clock,
-- so a worker whose clock is wrong neither starts delayed tasks early nor holds them back.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
