-- lanes: where a flow-controlled task waits again when it comes back from the delayed set (a submit with a delay,
-- a retry after its backoff, a RateLimited hand-back) or from the dead letters, so that it is admitted by the same
-- rules as at submit (docs/flow-control.md, "Delays, retries and dead letters"). Include entry.lua, delayed.lua
-- and admission.lua first.
--
-- A lane code is one lowercase letter and the task's priority digit: "w<p>" the limited set (rate_limits, with
-- or without a concurrency key), "k<p>" the keyed set (a concurrency key alone), "r<p>" the ready set (a
-- priority alone). No lane (""): the plain path, straight onto the stream.

-- lane_of: the lane of a task from submit.lua's routing value ("w<p>", "k<p>", "<p>", "" or "f...": fairness
-- tasks have no lane yet, they go onto the stream when due).
local function lane_of(routing)
  local kind = string.sub(routing, 1, 1)
  if kind == 'w' or kind == 'k' then
    return routing
  end
  if routing ~= '' and kind ~= 'f' then
    return 'r' .. routing
  end
  return ''
end

-- into_lane: put a task whose index value is already a delayed or waiting record (kept as its waiting record)
-- into the waiting set its lane names, ranked as submit ranks it at time now (seq: its place in this call), or,
-- for a task with a priority alone while nothing waits in the ready set and the window has room, onto the
-- stream at once (submit's fast path). A lane of no known set, or none, sends it onto the stream too, so a task
-- is never left nowhere. Returns nothing; the caller has checked the record.
local function into_lane(stream, index, ready, limited, keyed, window, task_id, lane, now, seq, version, attempt,
                         reclaims, blob)
  local kind, priority = string.sub(lane, 1, 1), tonumber(string.sub(lane, 2))
  local set = nil
  if priority then
    if kind == 'w' then
      set = limited
    elseif kind == 'k' then
      set = keyed
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
