-- add_entry: XADD one task entry (docs/wire-format.md section 3) and return its entry id.
local function add_entry(stream, version, blob, attempt, reclaims)
  return redis.call('XADD', stream, '*', 'v', version, 'task', blob, 'attempt', attempt, 'reclaims', reclaims)
end
