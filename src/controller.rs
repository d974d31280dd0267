//! Controller wiring: read inputs, call Leen, ask `decision` what to do, then write.
//!
//! Two reconcilers share one [`Context`]: LeenConnections (the deletion table) and the
//! protection of key Secrets (`leen.dev/secret-in-use`). Both answer "who binds this
//! connection?" and "who needs this Secret?" from the controller's metadata cache of
//! LeenConnections, through labels and an annotation the controller sets on them; only
//! objects the controller has not labelled yet are read from the API server.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{GetParams, PartialObjectMeta, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::Reporter,
        finalizer::{self, Event as FinalizerEvent, finalizer},
        predicates,
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{
    budget::{DeletionBudget, Verdict},
    config::{NamespaceSet, Settings},
    credentials::Credentials,
    decision::{
        Binding, Decision, DecisionInputs, DeletionStep, EventSpec, FinalizerAction, Observation,
        Reason, RetryPolicy, bind_status, create_identifier, decide_deletion, decide_sync,
        deletion_shortcut, held_binding, plan_update, validate_binding,
    },
    events::EventPublisher,
    leen::{ApiKey, Connection, CreateRequest, LeenClient, LeenOutcome, Operation},
    resource::{
        CONFIRM_DELETION_ANNOTATION, CONNECTION_LABEL, CreationRecord, CredentialsStatus,
        CredentialsTest, DeletionPolicy, FINALIZER, KEY_SECRET_ANNOTATION, LeenConnection,
        LeenConnectionStatus, ORGANIZATION_LABEL, REGION_LABEL, Region, SECRET_FINALIZER,
    },
    secret_index::SecretIndex,
    telemetry::{Metrics, Readiness, ResourceSummary, Summaries},
};

/// Field manager of the controller's writes.
pub const FIELD_MANAGER: &str = "leen-operator";

/// Everything that can fail a reconciliation: one flat enum, the finalizer helper's
/// errors folded in (Stackable's `extract_finalizer_err`), so that the error policy and
/// the metrics match on our own variants.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// The patch adding or removing the finalizer failed.
    #[error("finalizer patch failed: {0}")]
    FinalizerPatch(#[source] kube::Error),
    /// The finalizer helper refused the object (it has no name, say).
    #[error("finalizer: {0}")]
    Finalizer(String),
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

impl From<finalizer::Error<Error>> for Error {
    fn from(e: finalizer::Error<Error>) -> Self {
        match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                Error::FinalizerPatch(e)
            }
            other => Error::Finalizer(other.to_string()),
        }
    }
}

impl Error {
    /// A short label for metrics.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApi",
            Error::FinalizerPatch(_) => "FinalizerPatch",
            Error::Finalizer(_) => "Finalizer",
            Error::DeletionPending { reason, .. } => reason.as_str(),
            Error::NoNamespace => "NoNamespace",
        }
    }

    /// When a deletion still pending asks to be tried again.
    pub fn pending_retry(&self) -> Option<Duration> {
        match self {
            Error::DeletionPending { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

pub use crate::cache::CachedConnection;

/// The controller's view of Secrets: metadata only, never their data.
pub type CachedSecret = PartialObjectMeta<Secret>;

/// Where the reconcilers take the time and their jitter from: the real clock and a random
/// number by default; fixed in tests, so that requeue times are exact.
#[derive(Clone, Copy)]
pub struct Clock {
    /// The current time.
    pub now: fn() -> chrono::DateTime<chrono::Utc>,
    /// A number in [0, 1] that spreads retries.
    pub jitter: fn() -> f64,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            now: chrono::Utc::now,
            jitter: rand::random::<f64>,
        }
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    /// Kubernetes client for calls (bounded by a timeout; watches use their own).
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
    /// The metadata cache of LeenConnections (labels and annotations of ours included).
    pub connections: Store<CachedConnection>,
    /// The deletion budget; `None`: no budget.
    pub budget: Option<DeletionBudget>,
    /// Which resources read which Secrets.
    pub secrets: SecretIndex,
    /// Time and jitter of the decisions.
    pub clock: Clock,
    held: Mutex<HashSet<String>>,
    summaries: Mutex<Summaries>,
    writer: Mutex<Option<Writer<CachedConnection>>>,
    synced: AtomicBool,
    failures: Mutex<HashMap<String, u32>>,
    wake_connections: mpsc::UnboundedSender<ObjectRef<CachedConnection>>,
    wake_connections_rx: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<CachedConnection>>>>,
    wake_secrets: mpsc::UnboundedSender<ObjectRef<CachedSecret>>,
    wake_secrets_rx: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<CachedSecret>>>>,
}

impl Context {
    /// The context for the reconcilers, from the checked settings. Starts the Event
    /// worker: call it on a Tokio runtime.
    pub fn new(
        client: Client,
        leen: LeenClient,
        settings: &Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: "leen-operator".into(),
            instance: settings.pod_name.clone(),
        };
        let budget = (settings.budget.max_deletions > 0)
            .then(|| DeletionBudget::new(client.clone(), settings.budget.clone()));
        let (connections, writer) = reflector::store();
        let (wake_connections, wake_connections_rx) = mpsc::unbounded_channel();
        let (wake_secrets, wake_secrets_rx) = mpsc::unbounded_channel();
        Self {
            events: EventPublisher::start(client.clone(), reporter, metrics.clone()),
            client,
            leen,
            default_key: settings.default_api_key.clone(),
            default_key_namespaces: settings.default_key_namespaces.clone(),
            metrics,
            sync_interval: settings.sync_interval,
            policy: RetryPolicy::default(),
            connections,
            budget,
            secrets: SecretIndex::default(),
            clock: Clock::default(),
            held: Mutex::default(),
            summaries: Mutex::default(),
            writer: Mutex::new(Some(writer)),
            synced: AtomicBool::new(false),
            failures: Mutex::default(),
            wake_connections,
            wake_connections_rx: Mutex::new(Some(wake_connections_rx)),
            wake_secrets,
            wake_secrets_rx: Mutex::new(Some(wake_secrets_rx)),
        }
    }

    /// Whether the LeenConnection cache has synced once.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn set_synced(&self) {
        self.synced.store(true, Ordering::Release);
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

    /// Drops everything kept in memory about a resource that is gone, however it went.
    fn forget(&self, key: &ObjectRef<CachedConnection>, uid: Option<&str>) {
        self.secrets.forget(key);
        if let Some(uid) = uid {
            self.set_failures(uid, false);
            self.set_held(uid, false);
            if let Ok(mut summaries) = self.summaries.lock() {
                summaries.forget(uid);
            }
        }
    }

    /// Records what the gauges by state, health and reason count for a resource.
    fn summarize(&self, uid: &str, status: &crate::resource::LeenConnectionStatus) {
        // At most 64 characters of a value (Leen's words are not ours to bound).
        fn label(s: Option<&str>) -> &str {
            match s {
                Some(s) => s.char_indices().nth(64).map_or(s, |(end, _)| &s[..end]),
                None => "unknown",
            }
        }
        let ready = status.ready();
        let summary = ResourceSummary {
            state: label(status.state.as_deref()),
            health: label(status.health.as_ref().and_then(|h| h.name.as_deref())),
            ready: ready.is_some_and(|c| c.status == "True"),
            reason: label(ready.map(|c| c.reason.as_str())),
        };
        if let Ok(mut summaries) = self.summaries.lock() {
            summaries.record(uid, summary);
        }
    }

    /// The gauges computed from state: counts by state, health and reason, and, from the
    /// cache in one pass, the pending deletions and the age of the oldest (nothing to leak
    /// when a resource goes).
    fn publish_gauges(&self) {
        if let Ok(summaries) = self.summaries.lock() {
            self.metrics.set_resources(summaries.iter());
        }
        let pending = self
            .connections
            .state_filter(|o| o.deleting() && o.holds(FINALIZER));
        self.metrics.set_deletions_pending(pending.len());
        let oldest = pending
            .iter()
            .filter_map(|o| o.meta().deletion_timestamp.as_ref().map(|t| t.0))
            .min();
        let now = chrono::Utc::now().timestamp();
        let age = oldest.map_or(0, |t| now.saturating_sub(t.as_second()));
        self.metrics.set_oldest_pending_deletion(age);
    }

    fn set_held(&self, uid: &str, held: bool) {
        if let Ok(mut set) = self.held.lock() {
            if held {
                set.insert(uid.to_string());
            } else {
                set.remove(uid);
            }
            self.metrics.set_deletions_held(set.len());
        }
    }

    fn inputs(&self, uid: &str, also_bound_by: Vec<String>) -> DecisionInputs<'_> {
        DecisionInputs {
            now: (self.clock.now)(),
            jitter: (self.clock.jitter)(),
            sync_interval: self.sync_interval,
            sync_failures: self.failures(uid),
            policy: &self.policy,
            also_bound_by,
            credentials_test_error: None,
        }
    }

    /// Other live resources (not being deleted) in the cache whose labels bind `binding`.
    /// Runs on every reconcile over the whole cache: the filter allocates nothing.
    fn labelled_binders(&self, me: &LeenConnection, binding: &Binding) -> Vec<String> {
        let mine = me.meta().uid.as_deref();
        let mut found: Vec<String> = self
            .connections
            .state_filter(|o| {
                o.labelled.as_ref() == Some(binding) && !o.deleting() && o.uid_str() != mine
            })
            .iter()
            .map(|o| display_ref(o.as_ref()))
            .collect();
        found.sort();
        found
    }

    /// Another live resource that binds `binding`, for a deletion: the cache first, then a
    /// read of each live resource the controller has not labelled yet (just created, say by
    /// a GitOps rename that creates the new object and prunes the old one at once).
    async fn other_binder(
        &self,
        me: &LeenConnection,
        binding: &Binding,
    ) -> Result<Option<String>, Error> {
        if let Some(first) = self.labelled_binders(me, binding).into_iter().next() {
            return Ok(Some(first));
        }
        let mine = me.meta().uid.as_deref();
        let unlabelled = self
            .connections
            .state_filter(|o| o.labelled.is_none() && !o.deleting() && o.uid_str() != mine);
        for meta in unlabelled {
            let Some(ns) = meta.namespace() else { continue };
            let api: Api<LeenConnection> = Api::namespaced(self.client.clone(), &ns);
            let Some(other) = api.get_opt(&meta.name_any()).await? else {
                continue;
            };
            if other.meta().deletion_timestamp.is_none()
                && held_binding(&other).as_ref() == Some(binding)
            {
                return Ok(Some(display_ref(&other)));
            }
        }
        Ok(None)
    }

    fn wake(&self, refs: &[String]) {
        for r in refs {
            if let Some((ns, name)) = r.split_once('/') {
                let _ = self.wake_connections.send(ObjectRef::new(name).within(ns));
            }
        }
    }
}

fn display_ref<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.as_deref().unwrap_or(""),
        o.meta().name.as_deref().unwrap_or("")
    )
}

fn binding_labels(b: &Binding) -> [(&'static str, String); 3] {
    [
        (REGION_LABEL, b.region.as_str().to_string()),
        (ORGANIZATION_LABEL, b.organization.to_string()),
        (CONNECTION_LABEL, b.connection.to_string()),
    ]
}

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

/// Reconciles one LeenConnection: its labels, annotation and finalizer first, then the
/// finalizer helper routes it to [`apply`] or [`cleanup`].
pub async fn reconcile_object(
    obj: Arc<LeenConnection>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconcile();
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<LeenConnection> = Api::namespaced(ctx.client.clone(), &ns);
    let had_finalizer = obj.finalizers().iter().any(|f| f == FINALIZER);
    let obj = ensure_metadata(obj, &api, &ctx).await?;
    if !had_finalizer && obj.meta().deletion_timestamp.is_none() {
        // The finalizer just added changes what the watch sees, and that change brings
        // the object back at once: read Leen then, once, not now and again.
        return Ok(Action::await_change());
    }
    let deleting = obj.meta().deletion_timestamp.is_some();
    let has_finalizer = obj.finalizers().iter().any(|f| f == FINALIZER);
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => apply(obj, &ctx).await,
            FinalizerEvent::Cleanup(obj) => cleanup(obj, &ctx).await,
        }
    })
    .await
    .map_err(Error::from);
    if result.is_ok() && deleting && has_finalizer {
        ctx.metrics.kube_write("finalizer_remove");
    }
    result
}

/// What the controller keeps on a live resource's metadata: the binding labels, the key
/// Secret annotation, and the finalizer, all in one patch when anything is missing. The
/// patch carries the resourceVersion read, so that it cannot drop another's finalizer.
async fn ensure_metadata(
    obj: Arc<LeenConnection>,
    api: &Api<LeenConnection>,
    ctx: &Context,
) -> Result<Arc<LeenConnection>, Error> {
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(obj);
    }
    let mut labels = serde_json::Map::new();
    let binding = held_binding(&obj);
    let wanted = binding.as_ref().map(binding_labels);
    for key in [REGION_LABEL, ORGANIZATION_LABEL, CONNECTION_LABEL] {
        let want = wanted
            .as_ref()
            .and_then(|w| w.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()));
        if obj.labels().get(key) != want.as_ref() {
            labels.insert(key.to_string(), want.map_or(Value::Null, Value::String));
        }
    }
    let key_secret = key_secret_needed(&obj);
    let current_secret = obj.annotations().get(KEY_SECRET_ANNOTATION).cloned();
    let mut annotations = serde_json::Map::new();
    if current_secret != key_secret {
        annotations.insert(
            KEY_SECRET_ANNOTATION.to_string(),
            key_secret.clone().map_or(Value::Null, Value::String),
        );
    }
    let has_finalizer = obj.finalizers().iter().any(|f| f == FINALIZER);
    if labels.is_empty() && annotations.is_empty() && has_finalizer {
        return Ok(obj);
    }
    let mut metadata = serde_json::Map::new();
    if let Some(rv) = obj.resource_version() {
        metadata.insert("resourceVersion".into(), json!(rv));
    }
    if !labels.is_empty() {
        metadata.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    if !has_finalizer {
        let mut finalizers = obj.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        metadata.insert("finalizers".into(), json!(finalizers));
    }
    let patch = json!({ "metadata": metadata });
    let updated = api
        .patch(&obj.name_any(), &field_manager(), &Patch::Merge(&patch))
        .await?;
    ctx.metrics.kube_write(if has_finalizer {
        "metadata"
    } else {
        "finalizer_add"
    });
    if let (Some(old), Some(ns)) = (current_secret, obj.namespace())
        && key_secret.as_ref() != Some(&old)
    {
        // That Secret may not be needed any more.
        let _ = ctx.wake_secrets.send(ObjectRef::new(&old).within(&ns));
    }
    Ok(Arc::new(updated))
}

/// The Secret whose key this resource's deletion will need: its apiKeySecretRef, for a
/// `Delete` resource.
fn key_secret_needed(obj: &LeenConnection) -> Option<String> {
    (obj.spec.deletion_policy == DeletionPolicy::Delete)
        .then(|| obj.spec.api_key_secret_ref.as_ref().map(|r| r.name.clone()))
        .flatten()
}

fn field_manager() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

/// Requeue policy after a failed reconciliation.
pub fn error_policy(obj: Arc<CachedConnection>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(error.metric_reason());
    if error.pending_retry().is_some() {
        debug!(name = %obj.name_any(), %error, "deletion pending");
    }
    let attempt = match error.pending_retry() {
        Some(_) => 0,
        None => ctx.set_failures(&obj.uid().unwrap_or_default(), true),
    };
    let delay = requeue_after(error, attempt, (ctx.clock.jitter)(), &ctx.policy);
    if error.pending_retry().is_none() {
        warn!(name = %obj.name_any(), namespace = ?obj.namespace(), %error, retry_in = ?delay, "reconcile failed");
    }
    Action::requeue(delay)
}

/// When to try again after a failed reconciliation: a pending deletion when its decision
/// said (Leen's Retry-After, the deletion table's backoff); anything else after the
/// transient backoff for the `attempt`-th consecutive failure, with `jitter` in [0, 1].
pub fn requeue_after(error: &Error, attempt: u32, jitter: f64, policy: &RetryPolicy) -> Duration {
    error.pending_retry().unwrap_or_else(|| {
        RetryPolicy::backoff(policy.transient_base, policy.transient_cap, attempt, jitter)
    })
}

/// A live resource: observe the connection (creating it first when the spec asks and
/// nothing is bound), bring it to the spec (state, credentials), then mirror it.
async fn apply(obj: Arc<LeenConnection>, ctx: &Context) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    // `base` is the resource as last written (the create writes on the way); `view` adds
    // what was learnt but not written yet (a credentials test), for the decision.
    let mut base = (*obj).clone();
    let mut test = None;
    let obs = observe_live(&mut base, ctx, &mut test).await?;
    let also_bound_by = held_binding(&base)
        .map(|b| ctx.labelled_binders(&base, &b))
        .unwrap_or_default();
    let mut inputs = ctx.inputs(&uid, also_bound_by.clone());
    let mut view = base.clone();
    match test {
        Some(Ok(result)) => {
            if let Some(c) = view.status.as_mut().and_then(|s| s.credentials.as_mut()) {
                c.last_test = Some(result);
            }
        }
        Some(Err(error)) => inputs.credentials_test_error = Some(error),
        None => {}
    }
    let decision = decide_sync(&view, &obs, &inputs);
    // Every read that does not end Ready counts towards the backoff (a NotFound too, so
    // that a missing connection is not polled every few seconds).
    let ready = decision.status.ready().is_some_and(|c| c.status == "True");
    ctx.set_failures(&uid, !ready);
    ctx.summarize(&uid, &decision.status);
    let was_shared = base
        .status
        .as_ref()
        .and_then(|s| s.ready())
        .is_some_and(|c| c.message.contains("also bound by"));
    let newly_bound = held_binding(&obj).is_none() && held_binding(&base).is_some();
    write(&base, &decision, ctx).await?;
    if newly_bound {
        // A created connection: its binding labels now, not at the next sync.
        let api: Api<LeenConnection> = Api::namespaced(
            ctx.client.clone(),
            &base.namespace().ok_or(Error::NoNamespace)?,
        );
        if let Some(fresh) = api.get_opt(&base.name_any()).await? {
            ensure_metadata(Arc::new(fresh), &api, ctx).await?;
        }
    }
    if !also_bound_by.is_empty() && !was_shared {
        // The others should show it too.
        ctx.wake(&also_bound_by);
    }
    Ok(decision
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// Observes a live resource's connection, creating it when nothing is bound yet and
/// updating it (state, credentials) to the spec. `obj` is the controller's working copy:
/// the status writes made on the way (create intent, new binding) are applied to it.
async fn observe_live(
    obj: &mut LeenConnection,
    ctx: &Context,
    test: &mut Option<Result<CredentialsTest, String>>,
) -> Result<Observation, Error> {
    let binding = match validate_binding(obj) {
        Ok(b) => b,
        Err(obs) => return Ok(obs),
    };
    let key = match resolve_key(obj, ctx).await? {
        Ok(key) => key,
        Err(message) => return Ok(Observation::CredentialsMissing(message)),
    };
    let credentials = match read_credentials(obj, ctx).await? {
        Ok(c) => c,
        Err(obs) => return Ok(obs),
    };
    let (binding, outcome) = match binding {
        Some(binding) => {
            let outcome = ctx
                .leen
                .get_connection(
                    binding.region,
                    binding.organization,
                    binding.connection,
                    &key,
                )
                .await;
            (binding, outcome)
        }
        None => match create(obj, ctx, &key, credentials.as_ref()).await? {
            Ok(created) => created,
            Err(obs) => return Ok(obs),
        },
    };
    let LeenOutcome::Success(conn) = outcome else {
        return Ok(Observation::Leen(outcome));
    };
    let outcome = update(obj, ctx, &binding, &key, credentials.as_ref(), conn).await?;
    if matches!(outcome, LeenOutcome::Success(_)) {
        *test = test_credentials(obj, ctx, &binding, &key).await;
    }
    Ok(Observation::Leen(outcome))
}

/// Creates the connection (Crossplane's external-create-pending pattern): the intent is
/// written to status before the POST; a create that may have gone out before (the intent
/// is there) is first looked for by identifier, never repeated blindly. On success the
/// binding is written before anything else is done with the new connection.
async fn create(
    obj: &mut LeenConnection,
    ctx: &Context,
    key: &ApiKey,
    credentials: Option<&Credentials>,
) -> Result<Result<(Binding, LeenOutcome), Observation>, Error> {
    let (Ok(organization), Some(vendor)) = (
        uuid::Uuid::parse_str(&obj.spec.organization_id),
        obj.spec.vendor.clone(),
    ) else {
        // validate_binding admits neither case.
        return Ok(Err(Observation::InvalidSpec {
            reason: Reason::InvalidSpec,
            message: "spec.vendor is required when spec.connectionId is unset".to_string(),
        }));
    };
    let region = obj.spec.region;
    let identifier = create_identifier(obj);
    let mut status = obj.status.clone().unwrap_or_default();
    let pending = status.creation.clone();
    // A create may have gone out before (the intent is there), or the spec names its own
    // identifier (an idempotency key: a connection already carrying it is this one, e.g.
    // after the resource was orphaned and re-created): look before creating.
    if pending.is_some() || obj.spec.identifier.is_some() {
        match ctx
            .leen
            .find_connection(region, organization, &identifier, key)
            .await
        {
            Ok(Some(found)) => {
                let binding = found_binding(region, organization, &found);
                bind_status(&mut status, &binding);
                write_status(obj, status, ctx).await?;
                let why = if pending.is_some() {
                    "a create whose answer was lost"
                } else {
                    "spec.identifier names it"
                };
                let note = format!(
                    "found connection {} by identifier {identifier:?} ({why}); bound to it instead of creating another",
                    binding.connection
                );
                info!(connection = %binding.connection, "create recovered by identifier");
                publish(ctx, obj, Reason::CreateRecovered, false, note);
                return Ok(Ok((binding, LeenOutcome::Success(Box::new(found)))));
            }
            Ok(None) => {}
            Err(outcome) => return Ok(Err(Observation::Leen(outcome))),
        }
    }
    // The intent first: if the answer is lost, the next attempt looks before it creates.
    let attempts = pending.as_ref().map_or(0, |p| p.attempts).saturating_add(1);
    status.creation = Some(CreationRecord {
        identifier: identifier.clone(),
        started_at: pending
            .and_then(|p| p.started_at)
            .or_else(|| Some(crate::decision::rfc3339(chrono::Utc::now()))),
        attempts,
    });
    write_status(obj, status.clone(), ctx).await?;
    let request = CreateRequest {
        vendor,
        credentials: credentials.cloned(),
        identifier: identifier.clone(),
        options: obj.spec.options.clone(),
    };
    let created = match ctx
        .leen
        .create_connection(region, organization, &request, key)
        .await
    {
        Ok(created) => created,
        Err(outcome) => return Ok(Err(Observation::Leen(outcome))),
    };
    let binding = found_binding(region, organization, &created);
    bind_status(&mut status, &binding);
    if let Some(c) = credentials {
        status.credentials = Some(applied(c, obj));
    }
    write_status(obj, status, ctx).await?;
    info!(connection = %binding.connection, "connection created");
    publish(
        ctx,
        obj,
        Reason::Created,
        false,
        format!(
            "created {} connection {} (identifier {identifier:?})",
            request.vendor, binding.connection
        ),
    );
    Ok(Ok((binding, LeenOutcome::Success(Box::new(created)))))
}

/// The binding of a connection Leen returned from a create or the list (its id was checked
/// to be a UUID there).
fn found_binding(region: Region, organization: uuid::Uuid, conn: &Connection) -> Binding {
    Binding {
        region,
        organization,
        connection: conn
            .id
            .as_deref()
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
            .unwrap_or_default(),
    }
}

/// What status records of credentials just sent.
fn applied(credentials: &Credentials, obj: &LeenConnection) -> CredentialsStatus {
    CredentialsStatus {
        applied_hash: Some(credentials.salted_hash(&obj.uid().unwrap_or_default())),
        applied_time: Some(crate::decision::rfc3339(chrono::Utc::now())),
        last_test: None,
    }
}

/// Brings a connection Leen returned to the spec with one PATCH: `spec.state` (only
/// between ACTIVE and PAUSED) and credentials that changed since last sent. The answer
/// to the PATCH is the new observation.
async fn update(
    obj: &mut LeenConnection,
    ctx: &Context,
    binding: &Binding,
    key: &ApiKey,
    credentials: Option<&Credentials>,
    conn: Box<Connection>,
) -> Result<LeenOutcome, Error> {
    let plan = plan_update(obj, &conn, credentials);
    if plan.state.is_none() && plan.credentials.is_none() {
        return Ok(LeenOutcome::Success(conn));
    }
    let outcome = ctx
        .leen
        .update_connection(
            binding.region,
            binding.organization,
            binding.connection,
            &plan,
            key,
        )
        .await;
    if !matches!(outcome, LeenOutcome::Success(_)) {
        return Ok(outcome);
    }
    if let Some(state) = plan.state {
        let was = conn.state.as_deref().unwrap_or("unknown");
        publish(
            ctx,
            obj,
            Reason::StateCorrected,
            false,
            format!(
                "Leen reported connection {} {was}, spec.state asks {state}: set it to {state}",
                binding.connection
            ),
        );
    }
    if let Some(c) = &plan.credentials {
        let mut status = obj.status.clone().unwrap_or_default();
        status.credentials = Some(applied(c, obj));
        write_status(obj, status, ctx).await?;
        publish(
            ctx,
            obj,
            Reason::CredentialsApplied,
            false,
            format!(
                "sent the changed credentials of Secret {} to connection {}; testing them",
                obj.spec
                    .credentials_secret_ref
                    .as_ref()
                    .map(|r| r.name.as_str())
                    .unwrap_or_default(),
                binding.connection
            ),
        );
    }
    Ok(outcome)
}

/// Asks Leen to test credentials sent but not tested yet. `None`: nothing to test;
/// `Err`: why the test could not be had.
async fn test_credentials(
    obj: &LeenConnection,
    ctx: &Context,
    binding: &Binding,
    key: &ApiKey,
) -> Option<Result<CredentialsTest, String>> {
    obj.spec.credentials_secret_ref.as_ref()?;
    let credentials = obj.status.as_ref()?.credentials.as_ref()?;
    let hash = credentials.applied_hash.clone()?;
    if credentials
        .last_test
        .as_ref()
        .is_some_and(|t| t.applied_hash.as_deref() == Some(hash.as_str()))
    {
        return None;
    }
    Some(
        match ctx
            .leen
            .test_connection(
                binding.region,
                binding.organization,
                binding.connection,
                key,
            )
            .await
        {
            Ok(check) => Ok(CredentialsTest {
                valid: check.valid,
                message: check.message,
                time: Some(crate::decision::rfc3339(chrono::Utc::now())),
                applied_hash: Some(hash),
            }),
            Err(outcome) => Err(crate::decision::describe_failure(&outcome)),
        },
    )
}

/// Reads the vendor credentials Secret, when the spec names one. The inner error is the
/// observation (missing or malformed) that stops any call.
async fn read_credentials(
    obj: &LeenConnection,
    ctx: &Context,
) -> Result<Result<Option<Credentials>, Observation>, Error> {
    let Some(secret_ref) = &obj.spec.credentials_secret_ref else {
        return Ok(Ok(None));
    };
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let where_ = format!("vendor credentials Secret {ns}/{}", secret_ref.name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = match secrets.get_opt(&secret_ref.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Ok(Err(Observation::CredentialsMissing(format!(
                "{where_} not found; nothing was sent to Leen"
            ))));
        }
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Ok(Err(Observation::CredentialsMissing(format!(
                "the operator may not read {where_}: {}",
                status.message
            ))));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(
        Credentials::from_secret_data(&secret.data.unwrap_or_default())
            .map(Some)
            .map_err(|e| Observation::InvalidSpec {
                reason: Reason::CredentialsMalformed,
                message: format!("{where_} {e}; nothing was sent to Leen"),
            }),
    )
}

/// Writes `status` as the resource's status now (a merge patch against what `obj` holds)
/// and keeps it in the working copy.
async fn write_status(
    obj: &mut LeenConnection,
    status: LeenConnectionStatus,
    ctx: &Context,
) -> Result<(), Error> {
    if obj.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<LeenConnection> = Api::namespaced(ctx.client.clone(), &ns);
    let old = serde_json::to_value(&obj.status).unwrap_or_default();
    let new = serde_json::to_value(&status).unwrap_or_default();
    let patch = json!({ "status": merge_patch(&old, &new) });
    api.patch_status(&obj.name_any(), &field_manager(), &Patch::Merge(patch))
        .await?;
    ctx.metrics.kube_write("status");
    obj.status = Some(status);
    Ok(())
}

/// Publishes a Normal or Warning Event on the resource, outside a decision.
fn publish(ctx: &Context, obj: &LeenConnection, reason: Reason, warning: bool, note: String) {
    let event = EventSpec {
        warning,
        reason,
        action: "SyncConnection",
        note,
    };
    ctx.events.publish(&event, obj.object_ref(&()));
}

/// A resource being deleted: the deletion table.
async fn cleanup(obj: Arc<LeenConnection>, ctx: &Context) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    let mut working = (*obj).clone();
    let step = match deletion_shortcut(&obj) {
        Some(step) => step,
        None => deletion_step(&mut working, ctx).await?,
    };
    let obj = Arc::new(working);
    let binding = held_binding(&obj);
    let decision = decide_deletion(&obj, &step, &ctx.inputs(&uid, Vec::new()));
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
                        warn!(error = %e, "status write before finalizer removal failed, retrying");
                        tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(ns) = obj.namespace() {
                ctx.forget(&ObjectRef::new(&obj.name_any()).within(&ns), Some(&uid));
                if let Some(secret) = obj.spec.api_key_secret_ref.as_ref() {
                    // Once the finalizer is gone, the Secret may be free to go.
                    let _ = ctx
                        .wake_secrets
                        .send(ObjectRef::new(&secret.name).within(&ns));
                }
            }
            if let Some(b) = &binding {
                // Those still binding the connection no longer share it with this one.
                ctx.wake(&ctx.labelled_binders(&obj, b));
            }
            ctx.metrics.deletion_finished(reason.as_str());
            info!(
                reason = reason.as_str(),
                "deletion finished, removing finalizer"
            );
            Ok(Action::await_change())
        }
        FinalizerAction::Keep => {
            ctx.set_failures(&uid, true);
            ctx.summarize(&uid, &decision.status);
            write(&obj, &decision, ctx).await?;
            Err(Error::DeletionPending {
                reason,
                retry_after: decision.requeue_after.unwrap_or(ctx.policy.transient_cap),
            })
        }
    }
}

/// What a deletion that no shortcut settles comes to: another live resource still binds
/// the connection, nothing was ever created, or the DELETE call. A create that may have
/// gone out without its answer is looked for by identifier first, and deleted if found.
async fn deletion_step(obj: &mut LeenConnection, ctx: &Context) -> Result<DeletionStep, Error> {
    if let Ok(None) = validate_binding(obj) {
        let identifier = create_identifier(obj);
        let Some(creation) = obj.status.as_ref().and_then(|s| s.creation.clone()) else {
            // The intent is written before any create goes out: none, nothing was created.
            return Ok(DeletionStep::NotCreated { identifier });
        };
        let key = match resolve_key(obj, ctx).await? {
            Ok(key) => key,
            Err(message) => {
                return Ok(DeletionStep::Observed(Observation::CredentialsMissing(
                    message,
                )));
            }
        };
        let Ok(organization) = uuid::Uuid::parse_str(&obj.spec.organization_id) else {
            return Ok(DeletionStep::NotCreated { identifier });
        };
        let region = obj.spec.region;
        match ctx
            .leen
            .find_connection(region, organization, &creation.identifier, &key)
            .await
        {
            Ok(None) => return Ok(DeletionStep::NotCreated { identifier }),
            Err(outcome) => return Ok(DeletionStep::Observed(Observation::Leen(outcome))),
            Ok(Some(found)) => {
                let binding = found_binding(region, organization, &found);
                let mut status = obj.status.clone().unwrap_or_default();
                bind_status(&mut status, &binding);
                write_status(obj, status, ctx).await?;
            }
        }
    }
    if let Some(b) = held_binding(obj)
        && let Some(by) = ctx.other_binder(obj, &b).await?
    {
        return Ok(DeletionStep::StillReferenced { by });
    }
    Ok(DeletionStep::Observed(
        observe(obj, ctx, Operation::Delete).await?,
    ))
}

/// Reads the inputs (binding, API key) and calls Leen. Kubernetes API failures other than
/// a missing or unreadable Secret are errors; everything else is an observation.
async fn observe(obj: &LeenConnection, ctx: &Context, op: Operation) -> Result<Observation, Error> {
    let binding = match validate_binding(obj) {
        Ok(Some(b)) => b,
        Ok(None) => {
            return Ok(Observation::InvalidSpec {
                reason: Reason::InvalidSpec,
                message: "no connection is bound to this resource".to_string(),
            });
        }
        Err(obs) => return Ok(obs),
    };
    let key = match resolve_key(obj, ctx).await? {
        Ok(key) => key,
        Err(message) => return Ok(Observation::CredentialsMissing(message)),
    };
    if op == Operation::Delete
        && let Some(held) = budget_hold(obj, ctx).await?
    {
        return Ok(held);
    }
    let Binding {
        region,
        organization,
        connection,
    } = binding;
    let outcome = if op == Operation::Delete {
        ctx.leen
            .delete_connection(region, organization, connection, &key)
            .await
    } else {
        ctx.leen
            .get_connection(region, organization, connection, &key)
            .await
    };
    debug!(op = op.as_str(), status = ?outcome.http_status(), "Leen answered");
    Ok(Observation::Leen(outcome))
}

/// Asks the deletion budget whether this DELETE may start. `Some`: it may not. A confirmed
/// resource, and a resource whose DELETE already went out once, are not counted.
async fn budget_hold(obj: &LeenConnection, ctx: &Context) -> Result<Option<Observation>, Error> {
    let Some(budget) = &ctx.budget else {
        return Ok(None);
    };
    let confirmed = obj
        .annotations()
        .get(CONFIRM_DELETION_ANNOTATION)
        .is_some_and(|v| v.trim() == "true");
    if confirmed || delete_already_sent(obj) {
        return Ok(None);
    }
    let record = obj.status.as_ref().and_then(|s| s.deletion.as_ref());
    if !budget.config().resume_held
        && let Some(record) = record.filter(|r| r.outcome.as_deref() == Some("DeletionHeld"))
    {
        // Held once, held until a person decides: a mistaken prune does not become right
        // because the window moved on.
        return Ok(Some(Observation::DeletionHeld {
            message: record
                .last_error
                .clone()
                .unwrap_or_else(|| "deletion held by the deletion budget".to_string()),
            resume_at: None,
        }));
    }
    let uid = obj.uid().unwrap_or_default();
    let Verdict::Held { started, frees_at } = budget.admit(&uid).await? else {
        return Ok(None);
    };
    let config = budget.config();
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let window = humantime::format_duration(config.window);
    let then = if config.resume_held {
        format!(
            "it proceeds on its own when the budget frees at {}",
            crate::decision::rfc3339(frees_at)
        )
    } else {
        "it waits for a person".to_string()
    };
    let message = format!(
        "deletion budget spent: {started} DELETE calls to Leen started in the last {window} (LEEN_MAX_DELETIONS={}, LEEN_DELETION_WINDOW={window}), so connection {} was not deleted; {then}. If this deletion is meant: kubectl annotate leenconn {name} -n {ns} leen.dev/confirm-deletion=true. If it came from a mistaken prune: kubectl patch leenconn {name} -n {ns} --type merge -p '{{\"spec\":{{\"deletionPolicy\":\"Orphan\"}}}}' releases it without a call, and re-creating it adopts the same connection",
        config.max_deletions,
        crate::decision::connection_name(obj)
    );
    Ok(Some(Observation::DeletionHeld {
        message,
        resume_at: config.resume_held.then_some(frees_at),
    }))
}

/// Whether a previous attempt of this deletion already went out to Leen (and was counted).
fn delete_already_sent(obj: &LeenConnection) -> bool {
    let Some(record) = obj.status.as_ref().and_then(|s| s.deletion.as_ref()) else {
        return false;
    };
    record.last_http_status.is_some()
        || record
            .outcome
            .as_deref()
            .and_then(Reason::parse)
            .is_some_and(|r| {
                matches!(
                    r,
                    Reason::LeenUnavailable | Reason::RateLimited | Reason::InvalidResponse
                )
            })
}

/// The API key for a resource: its Secret's key, or the default key. The inner error is
/// the `CredentialsMissing` message. A `Delete` resource's Secret gets the
/// `leen.dev/secret-in-use` finalizer here, so that it outlives the resource's deletion.
async fn resolve_key(obj: &LeenConnection, ctx: &Context) -> Result<Result<ApiKey, String>, Error> {
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let Some(secret_ref) = &obj.spec.api_key_secret_ref else {
        if !ctx.default_key_namespaces.contains(&ns) {
            return Ok(Err(format!(
                "no spec.apiKeySecretRef, and namespace {ns} may not use the operator's default API key: name a Secret in spec.apiKeySecretRef, or add {ns} to the operator's LEEN_DEFAULT_KEY_NAMESPACES (chart value defaultKeyNamespaces)"
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
    if obj.spec.deletion_policy == DeletionPolicy::Delete {
        protect_secret(&secret, ctx, obj.meta().deletion_timestamp.is_none()).await?;
    }
    let key = &secret_ref.key;
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) else {
        return Ok(Err(format!("{where_} has no key {key:?}")));
    };
    let Ok(text) = std::str::from_utf8(&bytes.0) else {
        return Ok(Err(format!("key {key:?} of {where_} is not UTF-8 text")));
    };
    Ok(ApiKey::new(text).map_err(|e| format!("key {key:?} of {where_} {e}")))
}

/// Puts `leen.dev/secret-in-use` on a key Secret that lacks it. A Secret already being
/// deleted cannot get a new finalizer; it stays readable only as long as others hold it.
/// `strict`: a failed patch fails the reconciliation (a live resource, retried); a
/// deletion goes on without it.
async fn protect_secret(secret: &Secret, ctx: &Context, strict: bool) -> Result<(), Error> {
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
    let ns = secret.namespace().ok_or(Error::NoNamespace)?;
    let name = secret.name_any();
    if let Some(user) = secret_user(&ctx, &ns, &name).await? {
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

/// Requeue policy of the Secret protection.
pub fn secret_error_policy(obj: Arc<CachedSecret>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error("SecretProtection");
    warn!(secret = %obj.name_any(), namespace = ?obj.namespace(), %error, "key Secret protection failed");
    Action::requeue(Duration::from_secs(5))
}

/// Applies a decision's writes: the status (only when it changed), then the Event.
async fn write(obj: &LeenConnection, decision: &Decision, ctx: &Context) -> Result<(), Error> {
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let name = obj.name_any();
    if obj.status.as_ref() != Some(&decision.status) {
        let api: Api<LeenConnection> = Api::namespaced(ctx.client.clone(), &ns);
        let old = serde_json::to_value(&obj.status).unwrap_or_default();
        let new = serde_json::to_value(&decision.status).unwrap_or_default();
        let patch = json!({ "status": merge_patch(&old, &new) });
        api.patch_status(&name, &field_manager(), &Patch::Merge(patch))
            .await?;
        ctx.metrics.kube_write("status");
    }
    if let Some(event) = &decision.event {
        ctx.events.publish(event, obj.object_ref(&()));
    }
    Ok(())
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: changed and new keys with
/// their values, removed keys as null, objects recursively, arrays whole. Writing only the
/// difference keeps the write small, and the null entries remove what no longer applies.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
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

/// What changes of a LeenConnection are worth a reconciliation: kube's `generation` and
/// `finalizers` predicates, and two that kube has no predicate for: the start of deletion
/// (so that a deletion is acted on even if no generation bump came with it) and the
/// `leen.dev/confirm-deletion` annotation (a person's go-ahead for a held deletion; the
/// whole-annotations predicate would also fire on our own annotation writes). Status
/// writes (our own) and our own labels are not worth one.
fn trigger_fingerprint(obj: &CachedConnection) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    predicates::generation(obj).hash(&mut h);
    predicates::finalizers(obj).hash(&mut h);
    obj.deleting().hash(&mut h);
    obj.confirm_deletion.hash(&mut h);
    Some(h.finish())
}

fn strip_secret(obj: &mut CachedSecret) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().clear();
    obj.labels_mut().clear();
    obj.owner_references_mut().clear();
}

/// Hands memory freed after a burst of work (start-up with thousands of resources, a mass
/// deletion) back to the system. glibc keeps freed memory inside its arenas and returns
/// only the top of the main one by itself, so without this the RSS after a burst stays
/// at the burst's high-water mark. Cheap (a walk of the free lists), and called only when
/// the controller goes idle after being busy.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs the controllers until `shutdown` resolves. `ready` is set once the cache synced.
pub async fn run(
    ctx: Arc<Context>,
    watch_client: Client,
    watch_namespace: Option<String>,
    concurrency: u16,
    ready: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = watch_client;
    // Metadata only, for LeenConnections as for Secrets: the controller reads the whole
    // object when it reconciles it, so the cache stays small with many resources, and no
    // Secret's data ever reaches the operator unless it reads a key.
    let (connections, secrets): (Api<PartialObjectMeta<LeenConnection>>, Api<CachedSecret>) =
        match &watch_namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
    let Some(writer) = ctx.writer.lock().ok().and_then(|mut w| w.take()) else {
        warn!("controller already running on this context");
        return;
    };
    let reader = ctx.connections.clone();
    let gone_ctx = ctx.clone();
    let main_stream = watcher(connections, watcher::Config::default().any_semantic())
        .default_backoff()
        .map_ok(crate::cache::cached_event)
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                // The store holds the whole initial list now (the reflector applied it
                // before this event passes): an empty cache no longer means "nobody".
                if !gone_ctx.synced() {
                    info!("LeenConnection cache synced; ready");
                }
                gone_ctx.set_synced();
                ready.set(true);
                return;
            }
            let Ok(watcher::Event::Delete(obj)) = event else {
                return;
            };
            // Gone, however it went (a finalizer removed by hand too): forget it.
            gone_ctx.forget(&ObjectRef::from_obj(obj), obj.uid().as_deref());
            // It may have been the last one to need its key Secret: look at that Secret
            // now that the cache no longer holds it.
            if let (Some(ns), Some(secret)) = (obj.namespace(), obj.key_secret.as_deref()) {
                let _ = gone_ctx
                    .wake_secrets
                    .send(ObjectRef::new(secret).within(&ns));
            }
        })
        .touched_objects()
        .predicate_filter(trigger_fingerprint, Default::default());
    let secret_index = ctx.clone();
    let seen_secrets = Mutex::new(HashMap::<ObjectRef<CachedSecret>, Vec<String>>::new());
    let secret_stream = watcher(secrets.clone(), watcher::Config::default().any_semantic())
        .default_backoff()
        .touched_objects()
        .try_filter(move |secret| {
            // Wake users on a new Secret or a changed one, but not on a change of its
            // finalizers alone (our own secret-in-use patch): that is no news to them.
            let key = ObjectRef::from_obj(secret);
            let finalizers = secret.finalizers().to_vec();
            let news = seen_secrets
                .lock()
                .map(|mut seen| match seen.insert(key, finalizers.clone()) {
                    Some(before) => before == finalizers,
                    None => true,
                })
                .unwrap_or(true);
            futures::future::ready(news)
        });
    let wake_connections = ctx
        .wake_connections_rx
        .lock()
        .ok()
        .and_then(|mut rx| rx.take());
    let wake_secrets = ctx.wake_secrets_rx.lock().ok().and_then(|mut rx| rx.take());

    let gauges_ctx = ctx.clone();
    tokio::spawn(async move {
        let mut seen = gauges_ctx.metrics.reconciles();
        let mut busy = false;
        loop {
            gauges_ctx.publish_gauges();
            // A second without a new reconciliation after busy ones: the burst is over.
            let now = gauges_ctx.metrics.reconciles();
            if now != seen {
                seen = now;
                busy = true;
            } else if busy {
                busy = false;
                release_freed_memory();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let (shutdown_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut secrets_shutdown = shutdown_tx.subscribe();
    let mut connections_shutdown = shutdown_tx.subscribe();
    tokio::spawn(async move {
        shutdown.await;
        let _ = shutdown_tx.send(());
    });

    let mut main = Controller::for_stream(main_stream, reader)
        .with_config(controller::Config::default().concurrency(concurrency))
        .watches_stream(secret_stream, move |secret| {
            secret_index.secrets.readers(&secret)
        })
        .graceful_shutdown_on(async move {
            let _ = connections_shutdown.recv().await;
        });
    if let Some(rx) = wake_connections {
        main = main.reconcile_on(receiver_stream(rx));
    }
    let secret_watch = watcher(secrets, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(strip_secret);
    let (secret_reader, secret_writer) = reflector::store();
    let secret_stream = secret_watch
        .reflect(secret_writer)
        .touched_objects()
        .predicate_filter(secret_fingerprint, Default::default());
    let mut protection = Controller::for_stream(secret_stream, secret_reader)
        .with_config(controller::Config::default().concurrency(4))
        .graceful_shutdown_on(async move {
            let _ = secrets_shutdown.recv().await;
        });
    if let Some(rx) = wake_secrets {
        protection = protection.reconcile_on(receiver_stream(rx));
    }
    let main = main
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "controller stream error");
            }
        });
    let protection = protection
        .run(reconcile_secret, secret_error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "secret protection stream error");
            }
        });
    futures::join!(main, protection);
}

fn secret_fingerprint(obj: &CachedSecret) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    predicates::finalizers(obj).hash(&mut h);
    obj.meta().deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

fn receiver_stream<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
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
