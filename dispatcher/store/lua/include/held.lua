-- held_by: the entries of the group's pending list with ids in [first_id, last_id] that consumer holds, as a set
-- (entry id -> true). A missing stream or group (NOGROUP) holds nothing.
--
-- An entry never changes hands in this design (a reclaim re-adds the task as a fresh entry and acks the old
-- one; nothing XCLAIMs), so "pending for consumer" is exactly "still owned by the worker that read it": the
-- check that keeps a paused ("zombie") worker from settling an entry the reaper already gave away.
local function held_by(stream, group, consumer, first_id, last_id)
  local held = {}
  local ok, pending = pcall(redis.call, 'XPENDING', stream, group, first_id, last_id, 1000000, consumer)
  if ok then
    for _, entry in ipairs(pending) do
      held[entry[1]] = true
    end
  end
  return held
end
