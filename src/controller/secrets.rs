//! Key Secrets outlive their users: `leen.dev/secret-in-use` is put on a `Delete`
//! resource's key Secret when the key is read, and a reconciler of its own takes it off
//! once no LeenConnection still holding its finalizer names the Secret.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{debug, info, warn};

use super::{Context, Error, context::display_ref, freshness::Freshness, write::field_manager};
use crate::{
    cache::CachedSecret,
    organization::{ClusterLeenOrganization, LeenOrganization, ORGANIZATION_FINALIZER},
    resource::{FINALIZER, LeenConnection, SECRET_FINALIZER},
};

/// Puts `leen.dev/secret-in-use` on a key Secret that lacks it. A Secret already being
/// deleted cannot get a new finalizer; it stays readable only as long as others hold it.
/// `strict`: a failed patch fails the reconciliation (a live resource, retried); a
/// deletion goes on without it.
pub(crate) async fn protect(secret: &Secret, ctx: &Context, strict: bool) -> Result<(), Error> {
    let (Some(ns), Some(name)) = (&secret.metadata.namespace, &secret.metadata.name) else {
        return Ok(());
    };
    // Through the metadata API: the answers carry no Secret data.
    let api: Api<CachedSecret> = Api::namespaced(ctx.client.clone(), ns);
    let mut finalizers = secret.metadata.finalizers.clone().unwrap_or_default();
    let mut deleting = secret.metadata.deletion_timestamp.is_some();
    let mut version = secret.metadata.resource_version.clone();
    // Several users of one Secret may add it at once: on a conflict, look again.
    for _ in 0..3 {
        if deleting || finalizers.iter().any(|f| f == SECRET_FINALIZER) {
            return Ok(());
        }
        let mut wanted = finalizers.clone();
        wanted.push(SECRET_FINALIZER.to_string());
        let patch = json!({"metadata": {"resourceVersion": version, "finalizers": wanted}});
        match api
            .patch(name, &field_manager(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                ctx.metrics.kube_write("secret_finalizer_add");
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let Some(now) = api.get_opt(name).await? else {
                    return Ok(());
                };
                finalizers = now.finalizers().to_vec();
                deleting = now.meta().deletion_timestamp.is_some();
                version = now.resource_version();
            }
            // Without the right to patch Secrets (an RBAC older than this operator) the
            // key still works; only the protection is missing: say so, do not fail.
            Err(kube::Error::Api(s)) if s.code == 403 => {
                warn!(secret = %name, namespace = %ns, "may not patch the key Secret: it is not protected by leen.dev/secret-in-use (grant patch on secrets)");
                return Ok(());
            }
            Err(e) if !strict => {
                warn!(secret = %name, namespace = %ns, error = %e, "could not protect the key Secret");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Keeps `leen.dev/secret-in-use` on a Secret exactly while a `Delete` LeenConnection still
/// holding its finalizer names it.
#[tracing::instrument(
    name = "protect_secret",
    skip_all,
    fields(secret = %secret.name_any(), namespace = %secret.namespace().unwrap_or_default())
)]
pub async fn reconcile_secret(
    secret: Arc<CachedSecret>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let Some(index) = secret
        .finalizers()
        .iter()
        .position(|f| f == SECRET_FINALIZER)
    else {
        return Ok(Action::await_change());
    };
    if !ctx.synced() {
        // An empty cache would say that nobody needs the Secret.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if let Freshness::Stale(why) = ctx.watches.connections() {
        // Nor can a cache that may have missed a new user say it.
        debug!(%why, "key Secret kept while the cache may be behind");
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let ns = secret.namespace().ok_or(Error::NoNamespace)?;
    let name = secret.name_any();
    let user = match secret_user(&ctx, &ns, &name).await? {
        Some(user) => Some(user),
        None => organization_user(&ctx, &ns, &name).await?,
    };
    if let Some(user) = user {
        debug!(user = %user, "key Secret still needed");
        // Woken when a user goes; the requeue is only a safety net.
        return Ok(Action::requeue(
            ctx.sync_interval.min(Duration::from_secs(300)),
        ));
    }
    // The resourceVersion makes the patch fail, rather than drop another's finalizer, if
    // the list moved meanwhile.
    let mut rest = secret.finalizers().to_vec();
    rest.remove(index);
    let patch = json!({"metadata": {
        "resourceVersion": secret.resource_version(),
        "finalizers": rest,
    }});
    let api: Api<CachedSecret> = Api::namespaced(ctx.client.clone(), &ns);
    match api
        .patch(&name, &field_manager(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            ctx.metrics.kube_write("secret_finalizer_remove");
            info!("no LeenConnection needs the key Secret any more; released it");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// A LeenConnection (`namespace/name`) whose deletion still needs Secret `ns/name`.
async fn secret_user(ctx: &Context, ns: &str, name: &str) -> Result<Option<String>, Error> {
    let in_ns = ctx
        .connections
        .state_filter(|o| o.metadata.namespace.as_deref() == Some(ns));
    let mut unknown = Vec::new();
    for o in in_ns {
        let deleting = o.deleting();
        let holds = o.holds(FINALIZER);
        if deleting && !holds {
            continue;
        }
        if o.key_secret.as_deref() == Some(name) && (holds || !deleting) {
            return Ok(Some(display_ref(o.as_ref())));
        }
        // Not labelled yet, or deleting before its first read: its spec decides.
        if o.labelled.is_none() || !holds {
            unknown.push(o);
        }
    }
    let api: Api<LeenConnection> = Api::namespaced(ctx.client.clone(), ns);
    for o in unknown {
        if let Some(full) = api.get_opt(&o.name_any()).await?
            && key_secret_needed(&full).as_deref() == Some(name)
            && (full.meta().deletion_timestamp.is_none()
                || full.finalizers().iter().any(|f| f == FINALIZER))
        {
            return Ok(Some(display_ref(&full)));
        }
    }
    Ok(None)
}

/// An organization resource (`Kind name`) that holds its in-use finalizer and reads its
/// key from Secret `ns/name`: its users' deletions need the key.
async fn organization_user(ctx: &Context, ns: &str, name: &str) -> Result<Option<String>, Error> {
    let in_use = |finalizers: &[String], secret: &str| {
        secret == name && finalizers.iter().any(|f| f == ORGANIZATION_FINALIZER)
    };
    let absent = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
    let orgs: Api<LeenOrganization> = Api::namespaced(ctx.client.clone(), ns);
    match orgs.list(&ListParams::default()).await {
        Ok(list) => {
            if let Some(o) = list
                .items
                .iter()
                .find(|o| in_use(o.finalizers(), &o.spec.api_key_secret_ref.name))
            {
                return Ok(Some(format!("LeenOrganization {}", o.name_any())));
            }
        }
        // No such CRD installed: no organization uses anything.
        Err(e) if absent(&e) => {}
        Err(e) => return Err(e.into()),
    }
    if ns != ctx.operator_namespace || !ctx.watch_namespaces.is_empty() {
        return Ok(None);
    }
    let clusters: Api<ClusterLeenOrganization> = Api::all(ctx.client.clone());
    match clusters.list(&ListParams::default()).await {
        Ok(list) => Ok(list
            .items
            .iter()
            .find(|o| in_use(o.finalizers(), &o.spec.api_key_secret_ref.name))
            .map(|o| format!("ClusterLeenOrganization {}", o.name_any()))),
        Err(e) if absent(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Requeue policy of the Secret protection.
pub fn secret_error_policy(obj: Arc<CachedSecret>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error("SecretProtection");
    warn!(secret = %obj.name_any(), namespace = ?obj.namespace(), %error, "key Secret protection failed");
    Action::requeue(Duration::from_secs(5))
}

/// The Secret whose key this resource's deletion will need: its apiKeySecretRef, for a
/// `Delete` resource under full management.
pub(crate) fn key_secret_needed(obj: &LeenConnection) -> Option<String> {
    obj.deletes_in_leen()
        .then(|| obj.spec.api_key_secret_ref.as_ref().map(|r| r.name.clone()))
        .flatten()
}
