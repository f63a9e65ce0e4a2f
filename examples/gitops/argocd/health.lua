-- Argo CD health check for the ssis.sqlops.io kinds (SsisdbAvailabilityGroup, ScaleOutMasterGroup,
-- ScaleOutWorker). The operator reports kstatus conditions: Ready, Reconciling, Stalled, each with
-- observedGeneration, plus status.observedGeneration.
--   Healthy     Ready=True for the current generation
--   Degraded    Stalled=True (needs a spec change or user action)
--   Progressing anything else: no status yet, an older generation observed, Reconciling, Ready=False
local hs = {}

local function find_condition(conditions, wanted)
  for _, condition in ipairs(conditions) do
    if condition.type == wanted then
      return condition
    end
  end
  return nil
end

local function describe(condition, fallback)
  if condition == nil then
    return fallback
  end
  local text = condition.reason or fallback
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

-- A condition set for an older generation says nothing about the current spec.
local function current(condition, generation)
  return condition ~= nil
    and (generation == nil or condition.observedGeneration == nil or condition.observedGeneration >= generation)
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions or {}
local stalled = find_condition(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" and current(stalled, generation) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

local ready = find_condition(conditions, "Ready")
if ready ~= nil and ready.status == "True" and current(ready, generation) then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

local reconciling = find_condition(conditions, "Reconciling")
hs.status = "Progressing"
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = describe(reconciling, "Reconciling")
else
  hs.message = describe(ready, "Waiting for condition Ready")
end
return hs
