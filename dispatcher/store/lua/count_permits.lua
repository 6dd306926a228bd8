-- count_permits: how many permits of each of a capability's concurrency keys are held now, and the capability's
-- per-key cap, for the fair gate; stale permits of a key at its cap are removed.
--
-- A permit is a task id in its key's permit set, held while the task's index value is an entry id (on the stream
-- or running); a member whose index field is gone (settled, buried) or holds a delayed or waiting record (a retry
-- in its backoff, a task waiting again: it takes a permit again when admitted) is stale. A set with fewer members
-- than the cap is not looked into (its key has room whatever is stale: one ZCARD); a set at or over the cap has
-- its members checked in the index, and the stale ones are removed. So a key keeps at most cap stale members,
-- and they go when it is next at its cap (or when flow.holders looks at it).
--
-- KEYS[1]  hash     index: task id -> entry id, or a delayed or waiting record
-- KEYS[2]  hash     caps: per_key -> the cap
-- KEYS[3..] zset    permit sets of the concurrency keys asked about (P:{C}:permits:<key>)
-- Returns: an array: the cap (0 when none is set), then per permit set in KEYS[3..] its permits, counted as
--          said above (each below the cap, or exactly the live ones)
local cap = tonumber(redis.call('HGET', KEYS[2], 'per_key') or '0')
local out = {cap}
for k = 3, #KEYS do
  local held = redis.call('ZCARD', KEYS[k])
  if held >= cap and held > 0 then
    held = 0
    for _, task_id in ipairs(redis.call('ZRANGE', KEYS[k], 0, -1)) do
      local place = redis.call('HGET', KEYS[1], task_id)
      if place and string.sub(place, 1, 1) ~= 'd' then
        held = held + 1
      else
        redis.call('ZREM', KEYS[k], task_id)
      end
    end
  end
  out[#out + 1] = held
end
return out
