-- Argo CD health check for leen.dev/LeenConnection.
-- Install: argocd-cm, key resource.customizations.health.leen.dev_LeenConnection (see README.md).
local hs = {}
-- These three lists mirror the operator's Reason (src/decision/reason.rs): is_transient,
-- releases_finalizer and is_progressing. tests/argocd_health.rs runs this script for every
-- reason and fails when one of them is missing here.
local transient = {LeenUnavailable = true, RateLimited = true, InvalidResponse = true, UnexpectedResponse = true, CacheStale = true}
local releases = {Deleted = true, AlreadyDeleted = true, Orphaned = true, StillReferenced = true, NotCreated = true, ObserveOnly = true}
local progressing = {Pending = true, StateDrift = true, AwaitingAuthorization = true, CreatePending = true}

-- Paused by annotation (leen.dev/paused: "true"): the operator does nothing with it, so
-- nothing is progressing or degrading; also while it is being deleted, or edited.
local paused = obj.metadata.annotations ~= nil and type(obj.metadata.annotations["leen.dev/paused"]) == "string"
  and obj.metadata.annotations["leen.dev/paused"]:match("^%s*(.-)%s*$") == "true"
if paused then
  hs.status = "Suspended"
  hs.message = "Reconciliation paused by the annotation leen.dev/paused; remove it to resume"
  return hs
end
-- Observed only (managementPolicy: Observe): said in every message.
local observed = ""
if obj.spec ~= nil and obj.spec.managementPolicy == "Observe" then
  observed = "Observe only: "
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to read the connection from Leen"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end

local cond = {}
for _, c in ipairs(obj.status.conditions) do
  cond[c.type] = c
end
local ready = cond["Ready"]
if ready == nil then
  hs.status = "Progressing"
  hs.message = "No Ready condition yet"
  return hs
end

-- kstatus: Stalled (a person must act) is Degraded, Reconciling is Progressing (also an
-- OAuth connection AwaitingAuthorization: its message says where to consent).
if cond["Stalled"] ~= nil and cond["Stalled"].status == "True" then
  hs.status = "Degraded"
  hs.message = "Stalled: " .. (cond["Stalled"].reason or "") .. ": " .. (cond["Stalled"].message or "")
  return hs
end
if cond["Reconciling"] ~= nil and cond["Reconciling"].status == "True" then
  hs.status = "Progressing"
  hs.message = (cond["Reconciling"].reason or "") .. ": " .. (cond["Reconciling"].message or "")
  return hs
end

if obj.metadata.deletionTimestamp ~= nil then
  if ready.reason == "ReconcilePaused" then
    hs.status = "Suspended"
  elseif transient[ready.reason] or releases[ready.reason] or ready.status == "True" then
    hs.status = "Progressing"
  else
    hs.status = "Degraded"
  end
  hs.message = observed .. "Deleting: " .. (ready.reason or "") .. ": " .. (ready.message or "")
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.reason == "Paused" or ready.reason == "ReconcilePaused" then
  hs.status = "Suspended"
elseif transient[ready.reason] or progressing[ready.reason] then
  hs.status = "Progressing"
else
  hs.status = "Degraded"
end
hs.message = observed .. (ready.reason or "") .. ": " .. (ready.message or "")
return hs
