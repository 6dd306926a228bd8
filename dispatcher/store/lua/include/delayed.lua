-- delayed_record / read_delayed: the index value of a delayed task (docs/wire-format.md section 5):
-- "d<attempt>:<reclaims>:<blob>" for a version 1 task, "d<attempt>:<reclaims>:<version>:<blob>" for later
-- versions, and "d<attempt>:<reclaims>:<version>:<lane>:<blob>" for a flow-controlled task that waits in its
-- lane again when due (lanes.lua). A task blob is a msgpack map, whose first byte is never an ASCII digit or
-- letter: that tells the parts apart.
local function delayed_record(version, attempt, reclaims, blob, lane)
  if lane and lane ~= '' then
    return 'd' .. attempt .. ':' .. reclaims .. ':' .. version .. ':' .. lane .. ':' .. blob
  end
  if version == '1' then
    return 'd' .. attempt .. ':' .. reclaims .. ':' .. blob
  end
  return 'd' .. attempt .. ':' .. reclaims .. ':' .. version .. ':' .. blob
end

-- version, attempt, reclaims, blob, lane ('' for none) of a delayed record; nil when the value is not one (an
-- entry id).
local function read_delayed(record)
  if not record or string.sub(record, 1, 1) ~= 'd' then
    return nil
  end
  local c1 = string.find(record, ':', 2, true)
  local c2 = c1 and string.find(record, ':', c1 + 1, true)
  if not c2 then
    return nil
  end
  local attempt, reclaims = string.sub(record, 2, c1 - 1), string.sub(record, c1 + 1, c2 - 1)
  local version, blob, lane = '1', string.sub(record, c2 + 1), ''
  local first = string.byte(blob, 1)
  if first and first >= 48 and first <= 57 then
    local c3 = string.find(blob, ':', 1, true)
    if c3 then
      version, blob = string.sub(blob, 1, c3 - 1), string.sub(blob, c3 + 1)
      first = string.byte(blob, 1)
      if first and first >= 97 and first <= 122 then
        local c4 = string.find(blob, ':', 1, true)
        if c4 then
          lane, blob = string.sub(blob, 1, c4 - 1), string.sub(blob, c4 + 1)
        end
      end
    end
  end
  return version, attempt, reclaims, blob, lane
end

-- Put a task whose index value is a delayed or waiting record onto the work stream, its index field now naming
-- the new entry (entry.lua's add_entry: include entry.lua first). False, doing nothing, when the value is not such
-- a record (the task was settled or cancelled elsewhere).
local function onto_stream(stream, index, task_id)
  local version, attempt, reclaims, blob = read_delayed(redis.call('HGET', index, task_id))
  if not version then
    return false
  end
  redis.call('HSET', index, task_id, add_entry(stream, version, blob, attempt, reclaims))
  return true
end
