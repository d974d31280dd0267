//! Controller wiring: read inputs, call Leen, ask `decision` what to do, then write.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{GetParams, PartialObjectMeta, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::Reporter,
        finalizer::{self, Event as FinalizerEvent, finalizer},
        reflector::{self, ObjectRef},
        watcher,
    },
};
use tracing::{debug, info, warn};

use crate::{
    config::NamespaceSet,
    decision::{
        Decision, DecisionInputs, DeletionStep, FinalizerAction, Observation, Reason, RetryPolicy,
        decide_deletion, decide_sync, deletion_shortcut, validate_ids,
    },
    events::EventPublisher,
    leen::{ApiKey, LeenClient, Operation},
    resource::{FINALIZER, LeenConnection},
    telemetry::{Metrics, Readiness},
};

/// Field manager of the controller's status writes.
pub const FIELD_MANAGER: &str = "leen-operator";

/// Everything that can fail a reconciliation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer failed, or Apply/Cleanup failed inside it.
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    /// The deletion is not finished; the finalizer stays and the controller tries again.
    #[error("deletion not finished ({}), retrying in {retry_after:?}", reason.as_str())]
    DeletionPending {
        /// Why.
        reason: Reason,
        /// When to try again.
        retry_after: Duration,
    },
    /// The object lacks a namespace.
    #[error("LeenConnection has no namespace")]
    NoNamespace,
}

impl Error {
    /// A short label for metrics.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApi",
            Error::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.metric_reason()
                }
                finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => {
                    "FinalizerPatch"
                }
                _ => "Finalizer",
            },
            Error::DeletionPending { reason, .. } => reason.as_str(),
            Error::NoNamespace => "NoNamespace",
        }
    }

    fn pending_retry(&self) -> Option<Duration> {
        match self {
            Error::DeletionPending { retry_after, .. } => Some(*retry_after),
            Error::Finalizer(e) => match e.as_ref() {
                finalizer::Error::CleanupFailed(inner) => inner.pending_retry(),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Leen client.
    pub leen: LeenClient,
    /// The operator's default API key.
    pub default_key: Option<ApiKey>,
    /// Namespaces whose resources may use the default key.
    pub default_key_namespaces: NamespaceSet,
    /// Publishes Events in the background.
    pub events: EventPublisher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How often live resources are read again.
    pub sync_interval: Duration,
    /// Retry delays.
    pub policy: RetryPolicy,
    failures: Mutex<HashMap<String, u32>>,
    pending_deletions: Mutex<HashSet<String>>,
    secret_refs: Mutex<HashMap<ObjectRef<CachedConnection>, String>>,
}

impl Context {
    /// A context for the reconcilers. Starts the Event worker: call it on a Tokio runtime.
    pub fn new(
        client: Client,
        leen: LeenClient,
        default_key: Option<ApiKey>,
        metrics: Arc<Metrics>,
        sync_interval: Duration,
    ) -> Self {
        let reporter = Reporter {
            controller: "leen-operator".into(),
            instance: std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()),
        };
        Self {
            events: EventPublisher::start(client.clone(), reporter, metrics.clone()),
            client,
            leen,
            default_key,
            default_key_namespaces: NamespaceSet::All,
            metrics,
            sync_interval,
            policy: RetryPolicy::default(),
            failures: Mutex::default(),
            pending_deletions: Mutex::default(),
            secret_refs: Mutex::default(),
        }
    }

    fn failures(&self, uid: &str) -> u32 {
        self.failures
            .lock()
            .map(|m| m.get(uid).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn set_failures(&self, uid: &str, failed: bool) -> u32 {
        let Ok(mut map) = self.failures.lock() else {
            return 0;
        };
        if failed {
            let n = map.entry(uid.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        } else {
            map.remove(uid);
            0
        }
    }

    fn set_pending(&self, uid: &str, pending: bool) {
        if let Ok(mut set) = self.pending_deletions.lock() {
            if pending {
                set.insert(uid.to_string());
            } else {
                set.remove(uid);
            }
            self.metrics.set_deletions_pending(set.len());
        }
    }

    /// Records which Secret a resource reads its key from, so that a change of that
    /// Secret reconciles it at once.
    fn remember_secret(&self, key: ObjectRef<CachedConnection>, obj: &LeenConnection) {
        if let Ok(mut map) = self.secret_refs.lock() {
            match &obj.spec.api_key_secret_ref {
                Some(r) => {
                    map.insert(key, r.name.clone());
                }
                None => {
                    map.remove(&key);
                }
            }
        }
    }

    fn forget(&self, key: &ObjectRef<CachedConnection>) {
        if let Ok(mut map) = self.secret_refs.lock() {
            map.remove(key);
        }
    }

    /// The resources that read their key from this Secret.
    pub fn users_of_secret(
        &self,
        secret: &PartialObjectMeta<Secret>,
    ) -> Vec<ObjectRef<CachedConnection>> {
        let ns = secret.namespace();
        let name = secret.name_any();
        self.secret_refs
            .lock()
            .map(|map| {
                map.iter()
                    .filter(|(k, s)| k.namespace == ns && **s == name)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn inputs(&self, uid: &str) -> DecisionInputs<'_> {
        DecisionInputs {
            now: chrono::Utc::now(),
            jitter: rand::random::<f64>(),
            sync_interval: self.sync_interval,
            sync_failures: self.failures(uid),
            policy: &self.policy,
        }
    }
}

/// The controller caches only the metadata of LeenConnections (see [`run`]).
pub type CachedConnection = PartialObjectMeta<LeenConnection>;

/// Reconciles one LeenConnection from its cached metadata: reads the whole object (the
/// cache holds only metadata, to stay small at scale), then [`reconcile_object`].
pub async fn reconcile(meta: Arc<CachedConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = meta.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<LeenConnection> = Api::namespaced(ctx.client.clone(), &ns);
    let key = ObjectRef::from_obj(meta.as_ref());
    // At least as new as the metadata that triggered this: served from the API server's
    // watch cache instead of a quorum read from etcd.
    let params = GetParams {
        resource_version: meta.resource_version(),
    };
    let obj = match api.get_with(&meta.name_any(), &params).await {
        Ok(obj) => obj,
        Err(kube::Error::Api(status)) if status.code == 404 => {
            ctx.forget(&key);
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    ctx.remember_secret(key, &obj);
    reconcile_object(Arc::new(obj), ctx).await
}

/// Reconciles one LeenConnection: the finalizer helper routes it to [`apply`] or
/// [`cleanup`].
pub async fn reconcile_object(
    obj: Arc<LeenConnection>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconcile();
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<LeenConnection> = Api::namespaced(ctx.client.clone(), &ns);
    let deleting = obj.meta().deletion_timestamp.is_some();
    let has_finalizer = obj.finalizers().iter().any(|f| f == FINALIZER);
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => apply(obj, &ctx).await,
            FinalizerEvent::Cleanup(obj) => cleanup(obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() && has_finalizer == deleting {
        // Deleting with the finalizer: the helper removed it. Neither: it added it.
        ctx.metrics.kube_write(if deleting {
            "finalizer_remove"
        } else {
            "finalizer_add"
        });
    }
    result
}

/// Requeue policy after a failed reconciliation.
pub fn error_policy(obj: Arc<CachedConnection>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(error.metric_reason());
    if let Some(after) = error.pending_retry() {
        debug!(name = %obj.name_any(), %error, "deletion pending");
        return Action::requeue(after);
    }
    let uid = obj.uid().unwrap_or_default();
    let attempt = ctx.set_failures(&uid, true);
    let delay = RetryPolicy::backoff(
        ctx.policy.transient_base,
        ctx.policy.transient_cap,
        attempt,
        rand::random::<f64>(),
    );
    warn!(name = %obj.name_any(), namespace = ?obj.namespace(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// A live resource: read the connection from Leen and mirror it.
async fn apply(obj: Arc<LeenConnection>, ctx: &Context) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    let obs = observe(&obj, ctx, Operation::Get).await?;
    let decision = decide_sync(&obj, &obs, &ctx.inputs(&uid));
    // Every read that does not end Ready counts towards the backoff (a NotFound too, so
    // that a missing connection is not polled every few seconds).
    let ready = decision.status.ready().is_some_and(|c| c.status == "True");
    ctx.set_failures(&uid, !ready);
    write(&obj, &decision, ctx).await?;
    Ok(decision
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// A resource being deleted: the deletion table.
async fn cleanup(obj: Arc<LeenConnection>, ctx: &Context) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    let step = match deletion_shortcut(&obj) {
        Some(step) => step,
        None => DeletionStep::Observed(observe(&obj, ctx, Operation::Delete).await?),
    };
    let decision = decide_deletion(&obj, &step, &ctx.inputs(&uid));
    let reason = decision
        .event
        .as_ref()
        .map(|e| e.reason)
        .unwrap_or(Reason::Deleted);
    match decision.finalizer {
        FinalizerAction::Remove => {
            // The finalizer goes only once the status is accepted: retry briefly here
            // rather than lose what Leen returned.
            let mut tries = 0;
            loop {
                match write(&obj, &decision, ctx).await {
                    Ok(()) => break,
                    Err(e) if tries < 3 => {
                        tries += 1;
                        warn!(name = %obj.name_any(), error = %e, "status write before finalizer removal failed, retrying");
                        tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            ctx.set_pending(&uid, false);
            ctx.set_failures(&uid, false);
            if let Some(ns) = obj.namespace() {
                ctx.forget(&ObjectRef::new(&obj.name_any()).within(&ns));
            }
            ctx.metrics.deletion_finished(reason.as_str());
            info!(name = %obj.name_any(), namespace = ?obj.namespace(), reason = reason.as_str(), "deletion finished, removing finalizer");
            Ok(Action::await_change())
        }
        FinalizerAction::Keep => {
            ctx.set_pending(&uid, true);
            write(&obj, &decision, ctx).await?;
            Err(Error::DeletionPending {
                reason,
                retry_after: decision.requeue_after.unwrap_or(ctx.policy.transient_cap),
            })
        }
    }
}

/// Reads the inputs (ids, API key) and calls Leen. Kubernetes API failures other than a
/// missing or unreadable Secret are errors; everything else is an observation.
async fn observe(obj: &LeenConnection, ctx: &Context, op: Operation) -> Result<Observation, Error> {
    let (organization, connection) = match validate_ids(obj) {
        Ok(ids) => ids,
        Err(obs) => return Ok(obs),
    };
    let key = match resolve_key(obj, ctx).await? {
        Ok(key) => key,
        Err(message) => return Ok(Observation::CredentialsMissing(message)),
    };
    let region = obj.spec.region;
    let outcome = match op {
        Operation::Get => {
            ctx.leen
                .get_connection(region, organization, connection, &key)
                .await
        }
        Operation::Delete => {
            ctx.leen
                .delete_connection(region, organization, connection, &key)
                .await
        }
    };
    debug!(name = %obj.name_any(), op = op.as_str(), status = ?outcome.http_status(), "Leen answered");
    Ok(Observation::Leen(outcome))
}

/// The API key for a resource: its Secret's key, or the default key. The inner error is
/// the `CredentialsMissing` message.
async fn resolve_key(obj: &LeenConnection, ctx: &Context) -> Result<Result<ApiKey, String>, Error> {
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let Some(secret_ref) = &obj.spec.api_key_secret_ref else {
        if !ctx.default_key_namespaces.contains(&ns) {
            return Ok(Err(format!(
                "no spec.apiKeySecretRef, and namespace {ns} may not use the operator's default API key (LEEN_DEFAULT_KEY_NAMESPACES)"
            )));
        }
        return Ok(ctx.default_key.clone().ok_or_else(|| {
            "no spec.apiKeySecretRef and the operator has no default API key (LEEN_API_KEY)"
                .to_string()
        }));
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let where_ = format!("Secret {ns}/{}", secret_ref.name);
    let secret = match secrets.get_opt(&secret_ref.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Ok(Err(format!("{where_} not found"))),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Ok(Err(format!(
                "the operator may not read {where_}: {}",
                status.message
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let key = &secret_ref.key;
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) else {
        return Ok(Err(format!("{where_} has no key {key:?}")));
    };
    let Ok(text) = std::str::from_utf8(&bytes.0) else {
        return Ok(Err(format!("key {key:?} of {where_} is not UTF-8 text")));
    };
    Ok(ApiKey::new(text).ok_or_else(|| format!("key {key:?} of {where_} is empty")))
}

/// Applies a decision's writes: the status (only when it changed), then the Event.
async fn write(obj: &LeenConnection, decision: &Decision, ctx: &Context) -> Result<(), Error> {
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let name = obj.name_any();
    if obj.status.as_ref() != Some(&decision.status) {
        let api: Api<LeenConnection> = Api::namespaced(ctx.client.clone(), &ns);
        let old = serde_json::to_value(&obj.status).unwrap_or_default();
        let new = serde_json::to_value(&decision.status).unwrap_or_default();
        let patch = serde_json::json!({ "status": merge_patch(&old, &new) });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        api.patch_status(&name, &params, &Patch::Merge(patch))
            .await?;
        ctx.metrics.kube_write("status");
    }
    if let Some(event) = &decision.event {
        ctx.events.publish(
            event,
            obj.object_ref(&()),
            decision.finalizer == FinalizerAction::Remove,
        );
    }
    Ok(())
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: changed and new keys with
/// their values, removed keys as null, objects recursively, arrays whole. Writing only the
/// difference keeps the write small, and the null entries remove what no longer applies.
pub fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, v) in n {
                match o.get(k) {
                    Some(ov) if ov == v => {}
                    Some(ov) => {
                        patch.insert(k.clone(), merge_patch(ov, v));
                    }
                    None => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// What changes of a LeenConnection are worth a reconciliation: spec (generation),
/// finalizers and the start of deletion. Status writes (our own) are not.
fn trigger_fingerprint(obj: &CachedConnection) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.meta().generation.hash(&mut h);
    obj.finalizers().hash(&mut h);
    obj.meta().deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// Drops what the controller never reads from its cache, to keep memory small.
fn strip(obj: &mut CachedConnection) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().clear();
    obj.labels_mut().clear();
    obj.owner_references_mut().clear();
}

/// Runs the controller until `shutdown` resolves. `ready` is set once the cache synced.
pub async fn run(
    ctx: Arc<Context>,
    watch_namespace: Option<String>,
    concurrency: u16,
    ready: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    // Metadata only, for LeenConnections as for Secrets: the controller reads the whole
    // object when it reconciles it, so the cache stays small with many resources, and no
    // Secret's data ever sits in the operator's memory.
    let (connections, secrets): (Api<CachedConnection>, Api<PartialObjectMeta<Secret>>) =
        match &watch_namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
    let (reader, writer) = reflector::store();
    let main_stream = watcher(connections, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(strip)
        .reflect(writer)
        .touched_objects()
        .predicate_filter(trigger_fingerprint, Default::default());
    let secret_index = ctx.clone();
    let secret_stream = watcher(secrets, watcher::Config::default().any_semantic())
        .default_backoff()
        .touched_objects();

    let ready_reader = reader.clone();
    tokio::spawn(async move {
        // The store's readiness signal wakes only its most recent waiter (the controller's
        // runner also waits on it), so look again at short intervals rather than once.
        loop {
            match tokio::time::timeout(Duration::from_millis(100), ready_reader.wait_until_ready())
                .await
            {
                Ok(Ok(())) => {
                    info!("LeenConnection cache synced; ready");
                    ready.set(true);
                    return;
                }
                Ok(Err(_)) => return,
                Err(_) => {}
            }
        }
    });

    Controller::for_stream(main_stream, reader)
        .with_config(controller::Config::default().concurrency(concurrency))
        .watches_stream(secret_stream, move |secret| {
            secret_index.users_of_secret(&secret)
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "controller stream error");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_changes_and_nulls_removals() {
        let old = json!({"state": "ACTIVE", "health": {"name": "HEALTHY", "details": [1]}, "vendor": "x", "conditions": [{"a": 1}]});
        let new = json!({"state": "DELETED", "health": {"name": "HEALTHY"}, "conditions": [{"a": 2}], "deletion": {"attempts": 1}});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"state": "DELETED", "health": {"details": null}, "vendor": null, "conditions": [{"a": 2}], "deletion": {"attempts": 1}})
        );
        assert_eq!(merge_patch(&json!(null), &new), new);
    }
}
