//! The driver: one reconcile of a LeenConnection as its pipeline. Both lifecycle paths
//! read like their steps: read what the plan asks for (`inputs`), plan (`decision::plan`,
//! pure), act (`external`, one Leen call per step), decide (`decision::decide_*`, pure),
//! write (`write`: status, Event, and for a finished deletion the finalizer, in that
//! order).

use std::{sync::Arc, time::Duration};

use kube::{
    Api, Resource, ResourceExt,
    api::GetParams,
    runtime::{controller::Action, reflector::ObjectRef},
};
use tracing::{debug, info, warn};

use super::{Context, Error, external, inputs, secrets, write};
use crate::{
    budget::Verdict,
    cache::CachedConnection,
    decision::{
        DeletionInputs, DeletionPlan, DeletionStep, FinalizerAction, Need, Observation, Reason,
        RetryPolicy, SyncInputs, SyncPlan, decide_deletion, decide_sync, held_binding,
        plan_deletion, plan_sync,
    },
    leen::ApiKey,
    organization::OrganizationTarget,
    resource::{FINALIZER, LeenConnection},
};

/// Most steps one reconcile takes: a plan always ends in a few (read key, read
/// credentials, look up, create, update, test); more means a defect, not a slow Leen.
const MAX_STEPS: usize = 16;

/// Reconciles one LeenConnection from its cached metadata: reads the whole object (the
/// cache holds only metadata, to stay small at scale), then [`reconcile_object`]. Every
/// log line inside carries the object's name and namespace through this span.
#[tracing::instrument(
    name = "reconcile",
    skip_all,
    fields(name = %meta.name_any(), namespace = %meta.namespace().unwrap_or_default())
)]
pub async fn reconcile(meta: Arc<CachedConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = meta.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<LeenConnection> = Api::namespaced(ctx.client.clone(), &ns);
    let key = ObjectRef::from_obj(meta.as_ref());
    // At least as new as the metadata that triggered this: served from the API server's
    // watch cache instead of a quorum read from etcd.
    let params = GetParams {
        resource_version: meta.resource_version.as_deref().map(str::to_string),
    };
    let obj = match api.get_with(&meta.name_any(), &params).await {
        Ok(obj) => obj,
        Err(kube::Error::Api(status)) if status.code == 404 => {
            // Gone, however it went (also a finalizer removed by hand): forget it.
            ctx.forget(&key, meta.uid().as_deref());
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    ctx.secrets.record(key, &obj);
    reconcile_object(Arc::new(obj), ctx).await
}

/// Reconciles one LeenConnection: a live one gets its labels, annotation and finalizer
/// first, then [`apply`]; one being deleted that still holds the finalizer goes to
/// [`cleanup`].
pub async fn reconcile_object(
    obj: Arc<LeenConnection>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconcile();
    let has_finalizer = obj.finalizers().iter().any(|f| f == FINALIZER);
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<LeenConnection> = Api::namespaced(ctx.client.clone(), &ns);
    if obj.meta().deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        let obj = write::key_secret_while_deleting(obj, &api, &ctx).await?;
        return cleanup((*obj).clone(), &ctx).await;
    }
    let obj = write::metadata(obj, &api, &ctx).await?;
    if !has_finalizer {
        // The finalizer just added changes what the watch sees, and that change brings
        // the object back at once: read Leen then, once, not now and again.
        return Ok(Action::await_change());
    }
    apply((*obj).clone(), &ctx).await
}

/// A live resource: observe the connection (creating it first when the spec asks and
/// nothing is bound), bring it to the spec (state, credentials), then mirror it.
async fn apply(mut obj: LeenConnection, ctx: &Context) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    let bound_before = held_binding(&obj).is_some();
    // 1-3. Read, plan, act, until the plan is done. `obj` is the working copy: the
    // writes made on the way (create intent, new binding) are applied to it.
    let mut inputs = SyncInputs {
        now: (ctx.clock.now)(),
        create_settle: ctx.create_settle,
        ..Default::default()
    };
    let mut steps = 0;
    let mut organization = None;
    let observation = loop {
        steps += 1;
        if steps > MAX_STEPS {
            return Err(Error::Plan("the sync plan did not finish"));
        }
        match plan_sync(&obj, &inputs) {
            SyncPlan::Done(observation) => break observation,
            SyncPlan::Read(Need::Organization) => {
                inputs.organization_ref = Some(resolve(&mut obj, &mut organization, ctx).await?);
            }
            SyncPlan::Read(Need::ApiKey) => {
                inputs.key = Some(read_key(&obj, organization.as_ref(), ctx).await?);
            }
            SyncPlan::Read(Need::Credentials) => {
                inputs.credentials = Some(inputs::credentials(&obj, ctx).await?);
            }
            SyncPlan::Read(need) => return Err(Error::Plan(need_outside_path(need))),
            step => {
                let key = planned_key(&inputs.key)?;
                external::sync_step(step, &mut obj, &key, &mut inputs, ctx).await?;
            }
        }
    };
    if observation == Observation::Paused {
        // Nothing was looked at: no binders to wake, no failure to count, no gauge to move.
        let decision = decide_sync(&obj, &observation, &ctx.decision_inputs(&uid, Vec::new()));
        write::decision(&mut obj, &decision, ctx).await?;
        return Ok(Action::await_change());
    }
    // 4. Decide, on a view that adds what was learnt but not written yet (a test).
    let binders = held_binding(&obj)
        .map(|b| ctx.labelled_binders(&obj, &b))
        .unwrap_or_default();
    let mut shown: Vec<String> = binders.iter().map(|b| b.shown.clone()).collect();
    shown.dedup();
    let mut decision_inputs = ctx.decision_inputs(&uid, shown);
    let mut view = obj.clone();
    match inputs.test {
        Some(Ok(result)) => {
            if let Some(c) = view.status.as_mut().and_then(|s| s.credentials.as_mut()) {
                c.last_test = Some(result);
            }
        }
        Some(Err(error)) => decision_inputs.credentials_test_error = Some(error),
        None => {}
    }
    let decision = decide_sync(&view, &observation, &decision_inputs);
    ctx.state.set_unavailable(
        cache_key(&obj),
        decision
            .status
            .ready()
            .is_some_and(|c| c.reason == Reason::LeenUnavailable.as_str()),
    );
    // Every read that does not end Ready counts towards the backoff (a NotFound too, so
    // that a missing connection is not polled every few seconds).
    let ready = decision.status.ready().is_some_and(|c| c.status == "True");
    ctx.set_failures(&uid, !ready);
    ctx.summarize(&uid, &decision.status);
    let was_shared = obj
        .status
        .as_ref()
        .and_then(|s| s.ready())
        .is_some_and(|c| c.message.contains("also bound by"));
    // 5. Write.
    write::decision(&mut obj, &decision, ctx).await?;
    if !bound_before && held_binding(&obj).is_some() {
        // A created connection: its binding labels now, not at the next sync.
        let api: Api<LeenConnection> = Api::namespaced(
            ctx.client.clone(),
            &obj.namespace().ok_or(Error::NoNamespace)?,
        );
        if let Some(fresh) = api.get_opt(&obj.name_any()).await? {
            write::metadata(Arc::new(fresh), &api, ctx).await?;
        }
    }
    if !binders.is_empty() && !was_shared {
        // The others should show it too.
        ctx.wake(&binders);
    }
    Ok(decision
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// A resource being deleted: the deletion table. The finalizer goes here, explicitly,
/// once the status is written; a deletion not finished asks to be requeued.
async fn cleanup(mut obj: LeenConnection, ctx: &Context) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    let budget = ctx.budget.as_ref().map(|b| b.config());
    // 1-3. Read, plan, act.
    let mut inputs = DeletionInputs {
        now: (ctx.clock.now)(),
        create_settle: ctx.create_settle,
        sent_before: ctx.state.was_sent(&uid),
        ..Default::default()
    };
    let mut steps = 0;
    let mut organization = None;
    let step = loop {
        steps += 1;
        if steps > MAX_STEPS {
            return Err(Error::Plan("the deletion plan did not finish"));
        }
        match plan_deletion(&obj, &inputs, budget) {
            DeletionPlan::Done(step) => break step,
            DeletionPlan::Read(Need::Organization) => {
                inputs.organization_ref = Some(resolve(&mut obj, &mut organization, ctx).await?);
            }
            DeletionPlan::Read(Need::ApiKey) => {
                inputs.key = Some(read_key(&obj, organization.as_ref(), ctx).await?);
            }
            DeletionPlan::Read(Need::Binders) => {
                let binding = held_binding(&obj).ok_or(Error::Plan("binders of nothing bound"))?;
                inputs.binder = Some(ctx.other_binder(&obj, &binding).await?);
            }
            DeletionPlan::Read(Need::CacheFreshness) => {
                inputs.cache = Some(ctx.watches.connections());
            }
            DeletionPlan::Read(Need::BudgetVerdict) => {
                inputs.verdict = Some(match &ctx.budget {
                    // A start the budget cannot record is not made: held, and it says so.
                    Some(budget) => budget.admit(&uid).await.unwrap_or_else(|e| {
                        Verdict::Unreadable(format!("its Lease could not be updated: {e}"))
                    }),
                    None => Verdict::Go,
                });
            }
            DeletionPlan::Read(need) => return Err(Error::Plan(need_outside_path(need))),
            DeletionPlan::FindLostCreate(find) => {
                let key = planned_key(&inputs.key)?;
                external::deletion_lookup(&find, &key, &mut inputs, ctx).await;
            }
            DeletionPlan::Bind(binding) => external::bind(&mut obj, binding, ctx).await?,
            DeletionPlan::Delete(binding) => {
                let key = planned_key(&inputs.key)?;
                ctx.state.mark_sent(&uid);
                inputs.deleted = Some(external::delete(binding, &key, ctx).await);
            }
            DeletionPlan::ProveOrganization {
                region,
                organization,
            } => {
                let key = planned_key(&inputs.key)?;
                let proof = ctx
                    .leen
                    .prove_organization(region, organization, &key)
                    .await;
                inputs.organization = Some(proof);
            }
        }
    };
    // 4. Decide.
    let mut decided = ctx.decision_inputs(&uid, Vec::new());
    decided.delete_sent = inputs.deleted.is_some() || inputs.sent_before;
    let decision = decide_deletion(&obj, &step, &decided);
    ctx.set_held(
        &uid,
        matches!(
            step,
            DeletionStep::Observed(Observation::DeletionHeld { .. })
        ),
    );
    let reason = decision
        .event
        .as_ref()
        .map(|e| e.reason)
        .or_else(|| {
            obj.status
                .as_ref()
                .and_then(|s| s.ready())
                .and_then(|c| Reason::parse(&c.reason))
        })
        .unwrap_or(Reason::LeenUnavailable);
    // 5. Write: status and Event, then the finalizer when the deletion is done.
    match decision.finalizer {
        FinalizerAction::Remove => {
            write::release(&mut obj, &decision, ctx).await?;
            released(&obj, &uid, ctx);
            ctx.metrics.deletion_finished(reason.as_str());
            info!(
                reason = reason.as_str(),
                "deletion finished, finalizer removed"
            );
            Ok(Action::await_change())
        }
        FinalizerAction::Keep => {
            ctx.state
                .set_unavailable(cache_key(&obj), reason == Reason::LeenUnavailable);
            // A pause is no failure: it does not lengthen the backoff after the resume.
            ctx.set_failures(&uid, reason != Reason::ReconcilePaused);
            ctx.summarize(&uid, &decision.status);
            write::decision(&mut obj, &decision, ctx).await?;
            let Some(retry_in) = decision.requeue_after else {
                // Paused: the annotation's removal brings it back.
                debug!(reason = reason.as_str(), "deletion waits for a change");
                return Ok(Action::await_change());
            };
            ctx.metrics.reconcile_error(reason.as_str());
            debug!(reason = reason.as_str(), ?retry_in, "deletion pending");
            Ok(Action::requeue(retry_in))
        }
    }
}

/// After the finalizer went: forget the resource, and wake what may depend on it (its key
/// Secret, the resources still binding its connection).
fn released(obj: &LeenConnection, uid: &str, ctx: &Context) {
    if let Some(r) = &obj.spec.organization_ref {
        ctx.wake_organization(r, obj.namespace().as_deref());
    }
    if let Some(ns) = obj.namespace() {
        ctx.forget(&ObjectRef::new(&obj.name_any()).within(&ns), Some(uid));
        if let Some(secret) = obj.spec.api_key_secret_ref.as_ref() {
            // Once the finalizer is gone, the Secret may be free to go.
            let _ = ctx
                .state
                .wake_secrets
                .send(ObjectRef::new(&secret.name).within(&ns));
        }
    }
    if let Some(b) = held_binding(obj) {
        // Those still binding the connection no longer share it with this one.
        ctx.wake(&ctx.labelled_binders(obj, &b));
    }
}

/// The controller's key of a resource.
fn cache_key(obj: &LeenConnection) -> ObjectRef<CachedConnection> {
    ObjectRef::new(&obj.name_any()).within(&obj.namespace().unwrap_or_default())
}

/// Reads the API key; a `Delete` resource's key Secret gets `leen.dev/secret-in-use` at
/// once, so that it outlives the resource's deletion (strictly for a live resource: a
/// failed patch fails the reconcile; a deletion goes on without it).
async fn read_key(
    obj: &LeenConnection,
    organization: Option<&OrganizationTarget>,
    ctx: &Context,
) -> Result<Result<ApiKey, String>, Error> {
    let (key, secret) = inputs::api_key(obj, organization, ctx).await?;
    if let Some(secret) = secret
        && obj.deletes_in_leen()
    {
        secrets::protect(&secret, ctx, obj.meta().deletion_timestamp.is_none()).await?;
    }
    Ok(key)
}

/// Resolves spec.organizationRef: the working copy takes the organization's id and region
/// (what the plan binds and checks the binding against), `organization` its key Secret.
async fn resolve(
    obj: &mut LeenConnection,
    organization: &mut Option<OrganizationTarget>,
    ctx: &Context,
) -> Result<Result<(), Observation>, Error> {
    Ok(inputs::organization(obj, ctx).await?.map(|target| {
        obj.spec.organization_id = target.organization_id.clone();
        obj.spec.region = Some(target.region);
        *organization = Some(target);
    }))
}

/// The key of a planned Leen call: the plan asks for a call only once it has one.
fn planned_key(key: &Option<Result<ApiKey, String>>) -> Result<ApiKey, Error> {
    match key {
        Some(Ok(key)) => Ok(key.clone()),
        _ => Err(Error::Plan("a Leen call was planned without an API key")),
    }
}

fn need_outside_path(need: Need) -> &'static str {
    match need {
        Need::Organization => "the organization is read on both paths",
        Need::Credentials => "a deletion never reads credentials",
        Need::Binders | Need::BudgetVerdict | Need::CacheFreshness => {
            "a live resource never asks the budget or binders"
        }
        Need::ApiKey => "the API key is read on both paths",
    }
}

/// Requeue policy after a failed reconciliation: the transient backoff for the resource's
/// consecutive failures.
pub fn error_policy(obj: Arc<CachedConnection>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(error.metric_reason());
    let attempt = ctx.set_failures(&obj.uid().unwrap_or_default(), true);
    let delay = requeue_after(attempt, (ctx.clock.jitter)(), &ctx.policy);
    warn!(name = %obj.name_any(), namespace = ?obj.namespace(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// When to try again after the `attempt`-th consecutive failed reconciliation, with
/// `jitter` in [0, 1].
pub fn requeue_after(attempt: u32, jitter: f64, policy: &RetryPolicy) -> Duration {
    RetryPolicy::backoff(policy.transient_base, policy.transient_cap, attempt, jitter)
}
