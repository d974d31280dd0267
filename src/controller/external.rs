//! The act step: carries out one step of a plan, exactly one Leen call, and records what
//! it came to: in the plan's inputs, and (for a create or a connection found again) in
//! status before anything else is done with the connection.

use tracing::{debug, info};

use super::{Context, Error, write};
use crate::{
    decision::{
        DeletionInputs, FindLostCreate, Lookup, SyncInputs, SyncPlan, describe_failure,
        record::{self, found_binding},
    },
    leen::{ApiKey, Binding, LeenOutcome},
    resource::{CredentialsTest, LeenConnection},
};

/// Carries out a Leen step of a live resource's plan (not `Read` or `Done`, which the
/// driver handles).
pub(crate) async fn sync_step(
    step: SyncPlan,
    obj: &mut LeenConnection,
    key: &ApiKey,
    inputs: &mut SyncInputs,
    ctx: &Context,
) -> Result<(), Error> {
    let now = (ctx.clock.now)();
    match step {
        SyncPlan::Observe(binding) => {
            inputs.observed = Some(ctx.leen.observe(binding, key).await);
        }
        SyncPlan::FindLostCreate(find) => {
            inputs.lookup = Some(lookup(&find, key, ctx).await);
        }
        SyncPlan::Bind {
            binding,
            connection,
            identifier,
        } => {
            bind(obj, binding, ctx).await?;
            info!(connection = %binding.connection, "create recovered by identifier");
            let event = record::recovered_event(&binding, &identifier);
            write::event(ctx, obj, &event);
            // What Leen listed is the connection as observed.
            inputs.observed = Some(LeenOutcome::Success(connection));
        }
        SyncPlan::Create {
            region,
            organization,
            request,
        } => {
            // The intent first: if the answer is lost, the next attempt looks before it
            // creates.
            let intent = record::create_intent(obj, region, organization, &request.identifier, now);
            write::status(obj, intent, ctx).await?;
            match ctx.leen.create(region, organization, &request, key).await {
                Ok(created) => {
                    let binding = found_binding(region, organization, &created);
                    let bound = record::bound(obj, &binding, request.credentials.as_ref(), now);
                    write::status(obj, bound, ctx).await?;
                    info!(connection = %binding.connection, "connection created");
                    let event =
                        record::created_event(&binding, &request.vendor, &request.identifier);
                    write::event(ctx, obj, &event);
                    inputs.observed = Some(LeenOutcome::Success(Box::new(created)));
                }
                Err(outcome) => {
                    if let Some(refused) = record::create_refused(obj, &outcome) {
                        // Nothing was created: the next attempt need not wait for proof.
                        write::status(obj, refused, ctx).await?;
                    }
                    inputs.observed = Some(outcome);
                }
            }
        }
        SyncPlan::Update { binding, request } => {
            let outcome = ctx.leen.update(binding, &request, key).await;
            if let (LeenOutcome::Success(_), Some(LeenOutcome::Success(before))) =
                (&outcome, &inputs.observed)
            {
                let (status, events) = record::updated(obj, &binding, before, &request, now);
                if let Some(status) = status {
                    write::status(obj, status, ctx).await?;
                }
                for event in &events {
                    write::event(ctx, obj, event);
                }
            }
            inputs.updated = true;
            inputs.observed = Some(outcome);
        }
        SyncPlan::Test {
            binding,
            applied_hash,
        } => {
            let result = match ctx.leen.test(binding, key).await {
                Ok(check) => Ok(CredentialsTest {
                    valid: check.valid,
                    message: check.message,
                    time: Some(crate::decision::rfc3339(now)),
                    applied_hash: Some(applied_hash),
                }),
                Err(outcome) => Err(describe_failure(&outcome)),
            };
            inputs.test = Some(result);
        }
        SyncPlan::Read(_) | SyncPlan::Done(_) => {
            return Err(Error::Plan("the driver carries out reads and decisions"));
        }
    }
    Ok(())
}

/// Looks a create up by identifier.
async fn lookup(find: &FindLostCreate, key: &ApiKey, ctx: &Context) -> Lookup {
    let found = ctx
        .leen
        .find(find.region, find.organization, &find.identifier, key)
        .await;
    match found {
        Ok(Some(found)) => Lookup::Found(Box::new(found)),
        Ok(None) => Lookup::Absent,
        Err(outcome) => Lookup::Failed(outcome),
    }
}

/// Binds the resource to a connection in status, before anything else is done with it.
pub(crate) async fn bind(
    obj: &mut LeenConnection,
    binding: Binding,
    ctx: &Context,
) -> Result<(), Error> {
    let bound = record::bound(obj, &binding, None, (ctx.clock.now)());
    write::status(obj, bound, ctx).await
}

/// The look-up of a deletion's lost create.
pub(crate) async fn deletion_lookup(
    find: &FindLostCreate,
    key: &ApiKey,
    inputs: &mut DeletionInputs,
    ctx: &Context,
) {
    inputs.lookup = Some(lookup(find, key, ctx).await);
}

/// The DELETE of a bound connection.
pub(crate) async fn delete(binding: Binding, key: &ApiKey, ctx: &Context) -> LeenOutcome {
    let outcome = ctx.leen.delete(binding, key).await;
    debug!(status = ?outcome.http_status(), "Leen answered the DELETE");
    outcome
}
