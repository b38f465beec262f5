-- Argo CD health check for every appdb.dev kind (PrivateNetwork, AppDatabase, VpnConnection, DatabaseMigration).
local KIND = obj.kind
local hs = {}
local function condition(name)
  if obj.status == nil or obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == name then return c end
  end
  return nil
end
local state = (obj.status ~= nil and obj.status.state) or ""
if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted"
  return hs
end
if obj.status == nil or obj.status.observedGeneration == nil or obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest change"
  return hs
end
local ready = condition("Ready")
local stalled = condition("Stalled")
local reconciling = condition("Reconciling")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.reason .. ": " .. stalled.message
  return hs
end
if KIND == "DatabaseMigration" then
  if state == "Completed" then
    hs.status = "Healthy"
    hs.message = ready and ready.message or "Completed"
    return hs
  end
  if state == "Scheduled" and ready ~= nil and ready.reason == "Scheduled" then
    -- A migration waiting for its time is neither progressing nor broken.
    hs.status = "Suspended"
    hs.message = ready.message
    return hs
  end
  hs.status = "Progressing"
  hs.message = (ready and (ready.reason .. ": " .. ready.message)) or state
  return hs
end
if ready ~= nil and ready.status == "True" and (reconciling == nil or reconciling.status ~= "True") then
  hs.status = "Healthy"
  hs.message = state
  if ready.message ~= nil and ready.message ~= "" then hs.message = state .. ": " .. ready.message end
  return hs
end
hs.status = "Progressing"
if ready ~= nil then
  hs.message = ready.reason .. ": " .. ready.message
else
  hs.message = "Waiting for the operator"
end
return hs
