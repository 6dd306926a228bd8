-- join_tenant: a tenant (fairness_key) that has a waiting task again joins the tenants set at the lowest virtual
-- time there (0 when it is empty), so an idle tenant banks no credit (admit_fair.lua); one already there keeps its
-- virtual time.
local function join_tenant(tenants, tenant)
  if not redis.call('ZSCORE', tenants, tenant) then
    local lowest = redis.call('ZRANGE', tenants, 0, 0, 'WITHSCORES')
    redis.call('ZADD', tenants, lowest[2] or 0, tenant)
  end
end
