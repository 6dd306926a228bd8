-- admission: what the submit fast path and the admitter share about tasks with a priority (docs/flow-control.md).
--
-- rank: a waiting task's score in the ready set. Priority is a time offset (as Inngest and Trigger.dev do it):
-- each level counts as RANK_STEP_MS of waiting, so a task of priority p goes ahead of the tasks of lower
-- priorities submitted up to (p - q) * RANK_STEP_MS before it, and behind older ones: a low priority ages, and is
-- never starved. The score is that time (ms) times 1024 plus the task's place in its submit call, so the tasks of
-- one call keep their order (an exact integer in a double: 1024 * 2^41 ms < 2^53); ties left (the same ms, other
-- calls) go by task id.
local RANK_STEP_MS = 60000
local function rank(now, priority, seq)
  return (now - priority * RANK_STEP_MS) * 1024 + seq % 1024
end

-- waiting_undelivered: entries of the stream that no worker has read yet. Settled entries are deleted, so every
-- entry is either pending (read, in the group's PEL) or undelivered. No group yet (NOGROUP): nobody read any.
local function waiting_undelivered(stream)
  local length = redis.call('XLEN', stream)
  if length == 0 then
    return 0
  end
  local pending = redis.pcall('XPENDING', stream, 'workers')
  if type(pending) == 'table' and not pending.err then
    return length - pending[1]
  end
  return length
end

-- admit_now: whether a task with a priority may skip the ready set (nothing waits there, and the stream holds
-- fewer than window undelivered entries, so it starts about as soon as it would from the ready set).
local function admit_now(stream, ready, window)
  return redis.call('ZCARD', ready) == 0 and waiting_undelivered(stream) < window
end
