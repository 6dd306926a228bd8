-- take: take units from one rate limit by GCRA (generic cell rate algorithm), all or nothing.
--
-- The limit is one hash under its own hash tag (several capabilities share it): rate_per_min, burst (units) and
-- tat_ms, the theoretical arrival time. Each unit advances tat by the emission interval (60000 / rate ms); a
-- take is allowed while the new tat stays within burst intervals of now. So over any span of t seconds at most
-- burst + t * rate / 60 units are taken: never more than rate + burst in any 1 s at a rate per second. A negative
-- count refunds units (tat moves back, never before now). O(1), one key.
--
-- KEYS[1]  hash     the limit (P:{limit.<name>})
-- ARGV[1]  integer  units to take (negative: refund; 0 with ARGV[2]: only pause)
-- ARGV[2]  integer  optional: pause the limit for this many ms from now (nothing fits until then: a provider
--                   answered 429), then take nothing; "" for no pause
-- ARGV[3]  string   optional: "force" takes the units even beyond the burst (a handler reporting what it really
--                   used: the limit then stays shut until the debt is paid back at its rate)
-- Returns: an array {code, wait_ms}: code 1 taken (wait_ms 0), 0 not now (wait_ms: when these units would fit,
--          from now), -1 no such limit, -2 more units than the burst (never fits)
-- @include clock.lua
local rate, burst, tat = unpack(redis.call('HMGET', KEYS[1], 'rate_per_min', 'burst', 'tat_ms'))
if not rate then
  return {-1, 0}
end
local units = tonumber(ARGV[1])
burst = tonumber(burst)
local force = ARGV[3] == 'force'
if units > burst and not force then
  return {-2, 0}
end
local interval = 60000 / tonumber(rate)
local now = now_ms()
tat = math.max(tonumber(tat or 0), now)
if ARGV[2] and ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'tat_ms', math.max(tat, now + tonumber(ARGV[2]) + burst * interval))
  return {1, 0}
end
local new_tat = tat + units * interval
if units < 0 then
  redis.call('HSET', KEYS[1], 'tat_ms', math.max(new_tat, now))
  return {1, 0}
end
local over = new_tat - now - burst * interval
if over > 0 and not force then
  return {0, math.ceil(over)}
end
redis.call('HSET', KEYS[1], 'tat_ms', new_tat)
return {1, 0}
