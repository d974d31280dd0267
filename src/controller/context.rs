//! What the reconcilers share: [`Context`], their configuration and clients (fixed once
//! built), and [`RuntimeState`], what they learn while running (failure counts, held
//! deletions, the gauges' summaries, wake-up channels).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kube::{
    Client, Resource,
    runtime::{
        events::Reporter,
        reflector::{self, ObjectRef, Store, store::Writer},
    },
};
use tokio::sync::mpsc;

use super::freshness::Watches;

use crate::{
    budget::DeletionBudget,
    cache::{CachedConnection, CachedSecret},
    config::{NamespaceSet, Settings},
    decision::{DecisionInputs, RetryPolicy},
    events::EventPublisher,
    leen::{ApiKey, LeenApi},
    organization::{ClusterLeenOrganization, LeenOrganization, OrganizationKind, OrganizationRef},
    resource::{FINALIZER, LeenConnectionStatus},
    secret_index::SecretIndex,
    telemetry::{Metrics, ResourceSummary, Summaries},
};

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

/// The senders that wake organization resources.
pub(crate) struct OrganizationWakers {
    namespaced: mpsc::UnboundedSender<ObjectRef<LeenOrganization>>,
    cluster: mpsc::UnboundedSender<ObjectRef<ClusterLeenOrganization>>,
}

impl OrganizationWakers {
    /// Wakes the organization a resource of namespace `ns` names.
    pub(crate) fn wake(&self, r: &OrganizationRef, ns: Option<&str>) {
        match (r.kind, ns) {
            (OrganizationKind::LeenOrganization, Some(ns)) => {
                let _ = self.namespaced.send(ObjectRef::new(&r.name).within(ns));
            }
            (OrganizationKind::LeenOrganization, None) => {}
            (OrganizationKind::ClusterLeenOrganization, _) => {
                let _ = self.cluster.send(ObjectRef::new(&r.name));
            }
        }
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    /// Kubernetes client for calls (bounded by a timeout; watches use their own).
    pub client: Client,
    /// Leen client.
    pub leen: Arc<dyn LeenApi>,
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
    /// How long a create whose outcome is unknown must be proven absent before another
    /// POST or a `NotCreated`.
    pub create_settle: Duration,
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
    /// Whether the caches can be relied on (the watch client's layer and the watchers
    /// keep it up to date).
    pub watches: Arc<Watches>,
    /// The operator's own namespace (POD_NAMESPACE, else the kube config's): where
    /// ClusterLeenOrganizations' key Secrets live.
    pub operator_namespace: String,
    /// The namespaces watched (empty: all). A namespaced operator serves no
    /// ClusterLeenOrganization: reading cluster-scoped objects takes a ClusterRole.
    pub watch_namespaces: Vec<String>,
    /// What the reconcilers learn while running.
    pub(crate) state: RuntimeState,
}

impl Context {
    /// Asks the organization a resource of namespace `ns` names to count its users again.
    pub(crate) fn wake_organization(&self, r: &OrganizationRef, ns: Option<&str>) {
        self.organization_wakers().wake(r, ns);
    }

    /// The context for the reconcilers, from the checked settings. Starts the Event
    /// worker: call it on a Tokio runtime.
    pub fn new(
        client: Client,
        leen: Arc<dyn LeenApi>,
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
        let (wake_organizations, wake_organizations_rx) = mpsc::unbounded_channel();
        let (wake_cluster_organizations, wake_cluster_organizations_rx) = mpsc::unbounded_channel();
        let operator_namespace = settings
            .pod_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        Self {
            events: EventPublisher::start(client.clone(), reporter, metrics.clone()),
            client,
            leen,
            default_key: settings.default_api_key.clone(),
            default_key_namespaces: settings.default_key_namespaces.clone(),
            metrics,
            sync_interval: settings.sync_interval,
            create_settle: settings.create_settle,
            policy: RetryPolicy::default(),
            connections,
            budget,
            secrets: SecretIndex::default(),
            clock: Clock::default(),
            watches: Watches::new(settings.watch_timeout),
            operator_namespace,
            watch_namespaces: settings.watch_namespaces.clone(),
            state: RuntimeState {
                held: Mutex::default(),
                summaries: Mutex::default(),
                writer: Mutex::new(Some(writer)),
                synced: AtomicBool::new(false),
                failures: Mutex::default(),
                binds_nothing: Mutex::default(),
                unavailable: Mutex::default(),
                sent: Mutex::default(),
                wake_connections,
                wake_connections_rx: Mutex::new(Some(wake_connections_rx)),
                wake_secrets,
                wake_secrets_rx: Mutex::new(Some(wake_secrets_rx)),
                wake_organizations,
                wake_organizations_rx: Mutex::new(Some(wake_organizations_rx)),
                wake_cluster_organizations,
                wake_cluster_organizations_rx: Mutex::new(Some(wake_cluster_organizations_rx)),
            },
        }
    }

    /// What wakes organizations, to move into a task.
    pub(crate) fn organization_wakers(&self) -> OrganizationWakers {
        OrganizationWakers {
            namespaced: self.state.wake_organizations.clone(),
            cluster: self.state.wake_cluster_organizations.clone(),
        }
    }

    /// Whether the LeenConnection cache has synced once.
    pub fn synced(&self) -> bool {
        self.state.synced.load(Ordering::Acquire)
    }

    pub(crate) fn set_synced(&self) {
        self.state.synced.store(true, Ordering::Release);
    }

    pub(crate) fn failures(&self, uid: &str) -> u32 {
        self.state
            .failures
            .lock()
            .map(|m| m.get(uid).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    pub(crate) fn set_failures(&self, uid: &str, failed: bool) -> u32 {
        let Ok(mut map) = self.state.failures.lock() else {
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
    pub(crate) fn forget(&self, key: &ObjectRef<CachedConnection>, uid: Option<&str>) {
        self.secrets.forget(key);
        self.state.set_unavailable(key.clone(), false);
        if let Some(uid) = uid {
            self.state.forget(uid);
            self.set_failures(uid, false);
            self.set_held(uid, false);
            if let Ok(mut summaries) = self.state.summaries.lock() {
                summaries.forget(uid);
            }
        }
    }

    /// Records what the gauges by state, health and reason count for a resource.
    pub(crate) fn summarize(&self, uid: &str, status: &LeenConnectionStatus) {
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
        if let Ok(mut summaries) = self.state.summaries.lock() {
            summaries.record(uid, summary);
        }
    }

    /// The gauges computed from state: counts by state, health and reason, and, from the
    /// cache in one pass, the pending deletions and the age of the oldest (nothing to leak
    /// when a resource goes).
    pub(crate) fn publish_gauges(&self) {
        if let Ok(summaries) = self.state.summaries.lock() {
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
        let now = (self.clock.now)().timestamp();
        let age = oldest.map_or(0, |t| now.saturating_sub(t.as_second()));
        self.metrics.set_oldest_pending_deletion(age);
        // Before the first sync the cache is not stale but empty (readiness says so).
        let stale = matches!(
            self.watches.connections(),
            super::freshness::Freshness::Stale(_)
        );
        self.metrics.set_cache_stale(self.synced() && stale);
    }

    pub(crate) fn set_held(&self, uid: &str, held: bool) {
        if let Ok(mut set) = self.state.held.lock() {
            if held {
                set.insert(uid.to_string());
            } else {
                set.remove(uid);
            }
            self.metrics.set_deletions_held(set.len());
        }
    }

    pub(crate) fn decision_inputs(
        &self,
        uid: &str,
        also_bound_by: Vec<String>,
    ) -> DecisionInputs<'_> {
        DecisionInputs {
            now: (self.clock.now)(),
            jitter: (self.clock.jitter)(),
            sync_interval: self.sync_interval,
            sync_failures: self.failures(uid),
            policy: &self.policy,
            also_bound_by,
            credentials_test_error: None,
            delete_sent: false,
        }
    }

    pub(crate) fn wake(&self, binders: &[super::inputs::Binder]) {
        for b in binders {
            let _ = self.state.wake_connections.send(b.key.clone());
        }
    }
}

pub(crate) fn display_ref<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.as_deref().unwrap_or(""),
        o.meta().name.as_deref().unwrap_or("")
    )
}

/// What the reconcilers learn while running, kept in memory only.
pub(crate) struct RuntimeState {
    held: Mutex<HashSet<String>>,
    summaries: Mutex<Summaries>,
    pub(crate) writer: Mutex<Option<Writer<CachedConnection>>>,
    synced: AtomicBool,
    failures: Mutex<HashMap<String, u32>>,
    /// Resources (uid) read at a resourceVersion at which they bind no connection.
    binds_nothing: Mutex<HashMap<String, String>>,
    /// Resources whose last reconcile found Leen unavailable: woken when it answers again.
    unavailable: Mutex<HashSet<ObjectRef<CachedConnection>>>,
    /// Resources (uid) whose DELETE went out from this process: remembered even when the
    /// status write that records it (`deleteSent`) failed.
    sent: Mutex<HashSet<String>>,
    pub(crate) wake_connections: mpsc::UnboundedSender<ObjectRef<CachedConnection>>,
    pub(crate) wake_connections_rx:
        Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<CachedConnection>>>>,
    pub(crate) wake_secrets: mpsc::UnboundedSender<ObjectRef<CachedSecret>>,
    pub(crate) wake_secrets_rx: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<CachedSecret>>>>,
    /// Organization resources to look at again (their users changed).
    pub(crate) wake_organizations: mpsc::UnboundedSender<ObjectRef<LeenOrganization>>,
    pub(crate) wake_organizations_rx:
        Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<LeenOrganization>>>>,
    /// The same, for ClusterLeenOrganizations.
    pub(crate) wake_cluster_organizations:
        mpsc::UnboundedSender<ObjectRef<ClusterLeenOrganization>>,
    pub(crate) wake_cluster_organizations_rx:
        Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<ClusterLeenOrganization>>>>,
}

impl RuntimeState {
    /// Whether the resource `uid` was read at `version` and bound no connection then.
    pub(crate) fn binds_nothing(&self, uid: &str, version: &str) -> bool {
        self.binds_nothing
            .lock()
            .is_ok_and(|m| m.get(uid).is_some_and(|v| v == version))
    }

    /// Records that the resource `uid` binds no connection at `version`.
    pub(crate) fn record_binds_nothing(&self, uid: String, version: String) {
        if let Ok(mut m) = self.binds_nothing.lock() {
            m.insert(uid, version);
        }
    }

    fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.binds_nothing.lock() {
            m.remove(uid);
        }
        if let Ok(mut s) = self.sent.lock() {
            s.remove(uid);
        }
    }

    /// Records that the resource's DELETE went out.
    pub(crate) fn mark_sent(&self, uid: &str) {
        if let Ok(mut s) = self.sent.lock() {
            s.insert(uid.to_string());
        }
    }

    /// Whether the resource's DELETE went out from this process.
    pub(crate) fn was_sent(&self, uid: &str) -> bool {
        self.sent.lock().is_ok_and(|s| s.contains(uid))
    }

    /// Records whether the resource's last reconcile found Leen unavailable.
    pub(crate) fn set_unavailable(&self, key: ObjectRef<CachedConnection>, unavailable: bool) {
        if let Ok(mut set) = self.unavailable.lock() {
            if unavailable {
                set.insert(key);
            } else {
                set.remove(&key);
            }
        }
    }

    /// Wakes every resource that found Leen unavailable (it answers again).
    pub(crate) fn wake_unavailable(&self) -> usize {
        let Ok(mut set) = self.unavailable.lock() else {
            return 0;
        };
        let n = set.len();
        for key in set.drain() {
            let _ = self.wake_connections.send(key);
        }
        n
    }
}
