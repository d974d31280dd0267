//! The organization resources' reconciler: whether the key reads the organization
//! (Ready, with its name), which LeenConnections use it (from the controller's metadata
//! cache, through `leen.dev/organization-ref`), and the in-use finalizer that makes a
//! deletion wait for them. One reconciler serves both kinds.

use std::{collections::HashMap, fmt::Debug, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Resource, ResourceExt,
    api::Patch,
    runtime::{controller::Action, reflector::ObjectRef},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tracing::{info, warn};
use uuid::Uuid;

use super::{Context, Error, context::display_ref, freshness::Freshness};
use crate::{
    cache::CachedConnection,
    decision::{OrganizationCheck, decide_organization},
    leen::ApiKey,
    organization::{
        ClusterLeenOrganization, LeenOrganization, ORGANIZATION_FINALIZER, OrganizationKind,
        OrganizationRef, OrganizationStatus, OrganizationTarget,
    },
    resource::{FINALIZER, LeenConnection},
};

/// What the reconciler needs of either kind of organization resource.
pub trait OrganizationResource:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    /// The kind, as a LeenConnection's organizationRef names it.
    const KIND: OrganizationKind;
    /// Its status.
    fn org_status(&self) -> Option<&OrganizationStatus>;
    /// Its organization id, region and key Secret.
    fn org_target(&self, ctx: &Context) -> OrganizationTarget;
    /// The API of objects of this kind in `ns` (ignored for the cluster-scoped kind).
    fn org_api(ctx: &Context, ns: Option<&str>) -> Api<Self>;
    /// The cluster-scoped one, whose users are only those of the namespaces it selects.
    fn as_cluster(&self) -> Option<&ClusterLeenOrganization> {
        None
    }
}

impl OrganizationResource for LeenOrganization {
    const KIND: OrganizationKind = OrganizationKind::LeenOrganization;
    fn org_status(&self) -> Option<&OrganizationStatus> {
        self.status.as_ref()
    }
    fn org_target(&self, _: &Context) -> OrganizationTarget {
        self.target()
    }
    fn org_api(ctx: &Context, ns: Option<&str>) -> Api<Self> {
        Api::namespaced(ctx.client.clone(), ns.unwrap_or_default())
    }
}

impl OrganizationResource for ClusterLeenOrganization {
    const KIND: OrganizationKind = OrganizationKind::ClusterLeenOrganization;
    fn org_status(&self) -> Option<&OrganizationStatus> {
        self.status.as_ref()
    }
    fn org_target(&self, ctx: &Context) -> OrganizationTarget {
        self.target(&ctx.operator_namespace)
    }
    fn org_api(ctx: &Context, _: Option<&str>) -> Api<Self> {
        Api::all(ctx.client.clone())
    }
    fn as_cluster(&self) -> Option<&ClusterLeenOrganization> {
        Some(self)
    }
}

/// The users (`namespace/name`) of a ClusterLeenOrganization whose namespace it selects:
/// one in a namespace it does not select cannot use its key, so it does not keep it.
async fn selected_users(
    org: &ClusterLeenOrganization,
    users: Vec<String>,
    ctx: &Context,
) -> Result<Vec<String>, Error> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let mut verdicts: HashMap<String, bool> = HashMap::new();
    let mut selected = Vec::with_capacity(users.len());
    for user in users {
        let ns = user.split_once('/').map_or("", |(ns, _)| ns).to_string();
        let admitted = match verdicts.get(&ns) {
            Some(v) => *v,
            None => {
                let labels = if org.spec.namespaces.contains(&ns) {
                    Default::default()
                } else {
                    namespaces
                        .get_opt(&ns)
                        .await?
                        .and_then(|n| n.metadata.labels)
                        .unwrap_or_default()
                };
                let v = org.selects(&ns, &labels).unwrap_or(false);
                verdicts.insert(ns, v);
                v
            }
        };
        if admitted {
            selected.push(user);
        }
    }
    Ok(selected)
}

impl Context {
    /// The LeenConnections that name this organization resource (`namespace/name`,
    /// sorted): live ones, and deleting ones that still hold their finalizer (their
    /// deletion needs the key). One the controller has not reconciled yet is read.
    pub(crate) async fn organization_users(
        &self,
        r: &OrganizationRef,
        ns: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        let in_scope = |o: &CachedConnection| {
            r.kind == OrganizationKind::ClusterLeenOrganization
                || o.metadata.namespace.as_deref() == ns
        };
        let active = |o: &CachedConnection| !o.deleting() || o.holds(FINALIZER);
        let mut users: Vec<String> = self
            .connections
            .state_filter(|o| in_scope(o) && active(o) && o.organization.as_ref() == Some(r))
            .iter()
            .map(|o| display_ref(o.as_ref()))
            .collect();
        // Created a moment ago, not annotated yet: its spec decides.
        let fresh = self.connections.state_filter(|o| {
            in_scope(o) && !o.deleting() && !o.holds(FINALIZER) && o.organization.is_none()
        });
        for o in fresh {
            let Some(ns) = o.metadata.namespace.as_deref() else {
                continue;
            };
            let api: Api<LeenConnection> = Api::namespaced(self.client.clone(), ns);
            if let Some(full) = api.get_opt(&o.name_any()).await?
                && full.spec.organization_ref.as_ref() == Some(r)
            {
                users.push(display_ref(&full));
            }
        }
        users.sort();
        users.dedup();
        Ok(users)
    }
}

/// Reconciles one organization resource of either kind.
#[tracing::instrument(
    name = "reconcile_organization",
    skip_all,
    fields(kind = K::KIND.as_str(), name = %org.name_any(), namespace = %org.namespace().unwrap_or_default())
)]
pub async fn reconcile_organization<K: OrganizationResource>(
    org: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let ns = org.namespace();
    let api = K::org_api(&ctx, ns.as_deref());
    let r = OrganizationRef {
        kind: K::KIND,
        name: org.name_any(),
    };
    let deleting = org.meta().deletion_timestamp.is_some();
    let holds = org.finalizers().iter().any(|f| f == ORGANIZATION_FINALIZER);
    if deleting && !holds {
        return Ok(Action::await_change());
    }
    if !ctx.synced() {
        // An empty cache would say that nobody uses it.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if let Freshness::Stale(_) = ctx.watches.connections() {
        // Nor can a cache that may have missed a new user say it.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let mut users = ctx.organization_users(&r, ns.as_deref()).await?;
    if let Some(cluster) = org.as_cluster() {
        users = selected_users(cluster, users, &ctx).await?;
    }
    let target = org.org_target(&ctx);
    // Read while deleting too (Leen is not asked then): the key stays protected for the
    // users' deletions.
    let key = super::inputs::read_key_from(
        &ctx,
        &target.key_namespace,
        &target.key_secret,
        "API key Secret",
    )
    .await?;
    let key_secret = key.as_ref().ok().map(|(_, secret)| secret.clone());
    let check = if deleting {
        OrganizationCheck::Deleting
    } else {
        check(&target, key, &ctx).await
    };
    let previous = org.org_status();
    let decision = decide_organization(
        &check,
        &users,
        previous.and_then(|s| s.ready()),
        org.meta().generation,
        (ctx.clock.now)(),
        ctx.sync_interval,
    );
    if decision.keep_finalizer && !holds && !deleting {
        set_finalizer(&api, org.as_ref(), true).await?;
        ctx.metrics.kube_write("organization_finalizer_add");
    }
    if decision.keep_finalizer
        && let Some(secret) = &key_secret
    {
        // The users' deletions need this key: a prune or namespace deletion that takes the
        // Secret along must not strand them (as for a connection's own key Secret).
        super::secrets::protect(secret, &ctx, false).await?;
    }
    if !decision.keep_finalizer && holds {
        // Before the status write, whose new resourceVersion would fail this patch.
        set_finalizer(&api, org.as_ref(), false).await?;
        ctx.metrics.kube_write("organization_finalizer_remove");
        let _ = ctx
            .state
            .wake_secrets
            .send(ObjectRef::new(&target.key_secret.name).within(&target.key_namespace));
        if deleting {
            info!("no LeenConnection uses the organization any more; released it");
            return Ok(Action::await_change());
        }
    }
    let namespaces = if K::KIND == OrganizationKind::ClusterLeenOrganization {
        let mut seen: Vec<String> = users
            .iter()
            .filter_map(|u| u.split_once('/').map(|(ns, _)| ns.to_string()))
            .collect();
        seen.dedup();
        seen
    } else {
        Vec::new()
    };
    let status = OrganizationStatus {
        observed_generation: org.meta().generation,
        // What the key read now; while deleting (not asked), what it read last.
        organization_name: match check {
            OrganizationCheck::Deleting => previous.and_then(|s| s.organization_name.clone()),
            _ => decision.name.clone(),
        },
        connections: u32::try_from(users.len()).unwrap_or(u32::MAX),
        namespaces,
        conditions: vec![decision.ready.clone()],
    };
    if previous != Some(&status) {
        let mut value = serde_json::to_value(&status).unwrap_or_default();
        // A merge patch removes only what it names as null.
        if status.namespaces.is_empty() {
            value["namespaces"] = serde_json::Value::Null;
        }
        if status.organization_name.is_none() {
            value["organizationName"] = serde_json::Value::Null;
        }
        api.patch_status(
            &org.name_any(),
            &super::write::field_manager(),
            &Patch::Merge(json!({ "status": value })),
        )
        .await?;
        ctx.metrics.kube_write("organization_status");
    }
    let changed = previous.and_then(|s| s.observed_generation) != org.meta().generation;
    if changed
        || previous.and_then(|s| s.ready()).map(|c| &c.status) != Some(&decision.ready.status)
    {
        // Connections that waited for it (or lost it) look again.
        ctx.wake(&users_of(&ctx, &r, ns.as_deref()));
    }
    Ok(decision
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// The cached references of the resources that name `r` (to wake them).
fn users_of(ctx: &Context, r: &OrganizationRef, ns: Option<&str>) -> Vec<super::inputs::Binder> {
    ctx.connections
        .state_filter(|o| {
            o.organization.as_ref() == Some(r)
                && (r.kind == OrganizationKind::ClusterLeenOrganization
                    || o.metadata.namespace.as_deref() == ns)
        })
        .iter()
        .map(|o| super::inputs::Binder {
            key: ObjectRef::from_obj(o.as_ref()),
            shown: String::new(),
        })
        .collect()
}

/// Asks Leen for the organization with the key read.
async fn check(
    target: &OrganizationTarget,
    key: Result<(ApiKey, Secret), String>,
    ctx: &Context,
) -> OrganizationCheck {
    let Ok(id) = Uuid::parse_str(&target.organization_id) else {
        return OrganizationCheck::Invalid(format!(
            "spec.organizationId {:?} is not a UUID",
            target.organization_id
        ));
    };
    let key = match key {
        Ok((key, _)) => key,
        Err(message) => return OrganizationCheck::KeyMissing(message),
    };
    match ctx.leen.organization(target.region, id, &key).await {
        Ok(org) => OrganizationCheck::Read(org),
        Err(outcome) => OrganizationCheck::Failed(outcome),
    }
}

/// Adds or removes the in-use finalizer; the resourceVersion makes the patch fail, rather
/// than drop another's finalizer, if the list moved meanwhile.
async fn set_finalizer<K: OrganizationResource>(
    api: &Api<K>,
    org: &K,
    on: bool,
) -> Result<(), Error> {
    let mut finalizers: Vec<String> = org
        .finalizers()
        .iter()
        .filter(|f| *f != ORGANIZATION_FINALIZER)
        .cloned()
        .collect();
    if on {
        finalizers.push(ORGANIZATION_FINALIZER.to_string());
    }
    let patch = json!({"metadata": {
        "resourceVersion": org.resource_version(),
        "finalizers": finalizers,
    }});
    match api
        .patch(
            &org.name_any(),
            &super::write::field_manager(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 && !on => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Requeue policy of the organization reconciler.
pub fn organization_error_policy<K: OrganizationResource>(
    org: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.reconcile_error("Organization");
    warn!(kind = K::KIND.as_str(), name = %org.name_any(), namespace = ?org.namespace(), %error, "organization reconcile failed");
    Action::requeue(Duration::from_secs(5))
}
