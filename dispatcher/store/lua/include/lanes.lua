-- lanes: where a flow-controlled task waits again when it comes back from the delayed set (a submit with a delay,
-- a retry after its backoff, a RateLimited hand-back) or from the dead letters, so that it is admitted by the same
-- rules as at submit (docs/flow-control.md, "Delays, retries and dead letters"). Include entry.lua, delayed.lua
-- and admission.lua first.
--
-- A lane code is one lowercase letter and the task's priority digit: "w<p>" the limited set (rate_limits, with
-- or without a concurrency key), "k<p>" the keyed set (a concurrency key alone), "r<p>" the ready set (a
-- priority alone), "f<p>" the rejoin set (a fairness_key, with or without the others: the fair gate reads the
-- task's tenant from its blob and moves it into that tenant's queue, rejoin.lua). No lane (""): the plain path,
-- straight onto the stream.

-- fair_parts: the KEYS slot of the tenant's queue, the priority digit and the tenant of submit.lua's routing
-- value "f<slot>:<p>:<tenant>" of a task with a fairness_key.
local function fair_parts(routing)
  local colon = string.find(routing, ':', 2, true)
  local second = string.find(routing, ':', colon + 1, true)
  return tonumber(string.sub(routing, 2, colon - 1)), string.sub(routing, colon + 1, second - 1),
    string.sub(routing, second + 1)
end

-- lane_of: the lane of a task from submit.lua's routing value ("w<p>", "k<p>", "<p>", "f<slot>:<p>:<tenant>"
-- or "").
local function lane_of(routing)
  local kind = string.sub(routing, 1, 1)
  if kind == 'w' or kind == 'k' then
    return routing
  end
  if kind == 'f' then
    local _, priority = fair_parts(routing)
    return 'f' .. priority
  end
  if routing ~= '' then
    return 'r' .. routing
  end
  return ''
end

-- into_lane: put a task whose index value is already a delayed or waiting record (kept as its waiting record)
-- into the waiting set its lane names, ranked as submit ranks it at time now (seq: its place in this call), or,
-- for a task with a priority alone while nothing waits in the ready set and the window has room, onto the
-- stream at once (submit's fast path). A lane of no known set, or none, sends it onto the stream too, so a task
-- is never left nowhere. Returns nothing; the caller has checked the record.
local function into_lane(stream, index, ready, limited, keyed, rejoin, window, task_id, lane, now, seq, version,
                         attempt, reclaims, blob)
  local kind, priority = string.sub(lane, 1, 1), tonumber(string.sub(lane, 2))
  local set = nil
  if priority then
    if kind == 'w' then
      set = limited
    elseif kind == 'k' then
      set = keyed
    elseif kind == 'f' then
      set = rejoin
    elseif kind == 'r' and not admit_now(stream, ready, window) then
      set = ready
    end
  end
  if set then
    redis.call('ZADD', set, rank(now, priority, seq), task_id)
  else
    redis.call('HSET', index, task_id, add_entry(stream, version, blob, attempt, reclaims))
  end
end
