//! Metrics, logging, and the HTTP endpoints `/metrics`, `/healthz` and `/readyz`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    health: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    ready: &'static str,
    reason: String,
}

/// What the gauges by state, health and Ready reason count for one resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceSummary<'a> {
    /// Leen's state (PENDING, ACTIVE, PAUSED, DELETED), or "unknown".
    pub state: &'a str,
    /// Leen's health name (HEALTHY, UNAUTHORIZED, ...), or "unknown".
    pub health: &'a str,
    /// Whether Ready is True.
    pub ready: bool,
    /// The Ready reason.
    pub reason: &'a str,
}

/// Most distinct label values [`Summaries`] keeps; further ones are kept as "other".
pub const MAX_INTERNED_VALUES: usize = 1024;

/// One resource's summary, each value an index into [`Summaries`]' values.
#[derive(Clone, Copy, Debug)]
struct Row {
    state: u16,
    health: u16,
    reason: u16,
    ready: bool,
}

/// The summaries of all resources, by uid, behind the gauges by state, health and reason.
/// Values repeat across resources (a few states, health names and reasons), so each is
/// kept once and a resource costs a few bytes rather than three strings: at 10 000
/// resources this is a tenth of a map of strings.
#[derive(Debug, Default)]
pub struct Summaries {
    values: Vec<Box<str>>,
    index: std::collections::HashMap<Box<str>, u16>,
    rows: std::collections::HashMap<u128, Row>,
}

impl Summaries {
    /// Records (or replaces) the summary of the resource with this uid.
    pub fn record(&mut self, uid: &str, summary: ResourceSummary<'_>) {
        let row = Row {
            state: self.intern(summary.state),
            health: self.intern(summary.health),
            reason: self.intern(summary.reason),
            ready: summary.ready,
        };
        self.rows.insert(uid_key(uid), row);
    }

    /// Forgets the resource with this uid.
    pub fn forget(&mut self, uid: &str) {
        self.rows.remove(&uid_key(uid));
    }

    /// How many resources are summarized.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every resource's summary.
    pub fn iter(&self) -> impl Iterator<Item = ResourceSummary<'_>> {
        let value = |i: u16| self.values.get(usize::from(i)).map_or("other", |v| v);
        self.rows.values().map(move |r| ResourceSummary {
            state: value(r.state),
            health: value(r.health),
            ready: r.ready,
            reason: value(r.reason),
        })
    }

    fn intern(&mut self, value: &str) -> u16 {
        if let Some(&i) = self.index.get(value) {
            return i;
        }
        let value = if self.values.len() < MAX_INTERNED_VALUES - 1 {
            value
        } else {
            "other"
        };
        if let Some(&i) = self.index.get(value) {
            return i;
        }
        let i = u16::try_from(self.values.len()).unwrap_or(u16::MAX);
        self.values.push(value.into());
        self.index.insert(value.into(), i);
        i
    }
}

/// A uid as a map key: 16 bytes for a UUID (what Kubernetes assigns), a hash otherwise.
fn uid_key(uid: &str) -> u128 {
    use std::hash::{Hash, Hasher};
    uuid::Uuid::parse_str(uid).map_or_else(
        |_| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            uid.hash(&mut h);
            u128::from(h.finish()) | (1 << 127)
        },
        |u| u.as_u128(),
    )
}

/// Most distinct label values one gauge family holds; further ones count as "other", so
/// that a Leen that invents values cannot blow up the series count.
pub const MAX_LABEL_VALUES: usize = 32;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    write: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// The operator's Prometheus metrics. No label ever holds a key, a name or an id.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    reconcile_errors: Family<ReasonLabels, Counter>,
    leen_requests: Family<RequestLabels, Counter>,
    leen_requests_held: Family<OperationLabels, Counter>,
    leen_request_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    kube_writes: Family<WriteLabels, Counter>,
    deletions: Family<ReasonLabels, Counter>,
    deletions_pending: Gauge,
    deletions_held: Gauge,
    oldest_pending_deletion: Gauge,
    connections_by_state: Family<StateLabels, Gauge>,
    connections_by_health: Family<HealthLabels, Gauge>,
    connections_by_ready: Family<ReadyLabels, Gauge>,
    leader: Gauge,
    cache_stale: Gauge,
    events_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("leen_operator");
        let reconciles = Counter::default();
        registry.register(
            "reconciles",
            "Reconciliations of LeenConnections",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciliations that ended in an error, by reason",
            reconcile_errors.clone(),
        );
        let leen_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "leen_requests",
            "Requests to Leen by operation and HTTP status code (\"none\": no answer)",
            leen_requests.clone(),
        );
        let leen_requests_held = Family::<OperationLabels, Counter>::default();
        registry.register(
            "leen_requests_held",
            "Calls to Leen not sent because their rate limit was paused by a 429, by operation",
            leen_requests_held.clone(),
        );
        let leen_request_duration =
            Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "leen_request_duration_seconds",
            "Duration of requests to Leen by operation",
            leen_request_duration.clone(),
        );
        let kube_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "kube_writes",
            "Writes to the Kubernetes API by kind: status, finalizer_add, finalizer_remove, event",
            kube_writes.clone(),
        );
        let deletions = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "deletions",
            "Finished deletions by outcome: Deleted, AlreadyDeleted, Orphaned",
            deletions.clone(),
        );
        let deletions_pending = Gauge::default();
        registry.register(
            "deletions_pending",
            "LeenConnections being deleted whose finalizer is still held",
            deletions_pending.clone(),
        );
        let deletions_held = Gauge::default();
        registry.register(
            "deletions_held",
            "Deletions held by the deletion budget (DeletionHeld), waiting for confirmation or Orphan",
            deletions_held.clone(),
        );
        let oldest_pending_deletion = Gauge::default();
        registry.register(
            "oldest_pending_deletion_seconds",
            "Age of the oldest deletion still holding its finalizer (0: none pending)",
            oldest_pending_deletion.clone(),
        );
        let connections_by_state = Family::<StateLabels, Gauge>::default();
        registry.register(
            "connections_by_state",
            "LeenConnections by the state Leen last returned (at most 32 values, then \"other\")",
            connections_by_state.clone(),
        );
        let connections_by_health = Family::<HealthLabels, Gauge>::default();
        registry.register(
            "connections_by_health",
            "LeenConnections by the health name Leen last returned (at most 32 values, then \"other\")",
            connections_by_health.clone(),
        );
        let connections_by_ready = Family::<ReadyLabels, Gauge>::default();
        registry.register(
            "connections_by_ready_reason",
            "LeenConnections by Ready status and reason",
            connections_by_ready.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica reconciles (leads, or runs without leader election), else 0",
            leader.clone(),
        );
        let cache_stale = Gauge::default();
        registry.register(
            "cache_stale",
            "1 while the LeenConnection cache may be behind the API server (relisting, its watch failing or silent): deletions wait (CacheStale)",
            cache_stale.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Kubernetes Events dropped because the publish queue was full",
            events_dropped.clone(),
        );
        Self {
            cache_stale,
            events_dropped,
            registry,
            reconciles,
            reconcile_errors,
            leen_requests,
            leen_requests_held,
            leen_request_duration,
            kube_writes,
            deletions,
            deletions_pending,
            deletions_held,
            oldest_pending_deletion,
            connections_by_state,
            connections_by_health,
            connections_by_ready,
            leader,
        }
    }
}

impl Metrics {
    /// Counts one reconciliation.
    pub fn reconcile(&self) {
        self.reconciles.inc();
    }

    /// Reconciliations started so far.
    pub fn reconciles(&self) -> u64 {
        self.reconciles.get()
    }

    /// Counts one failed reconciliation.
    pub fn reconcile_error(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Records one request to Leen.
    pub fn observe_leen_request(&self, op: &'static str, status: Option<u16>, took: Duration) {
        let code = status.map_or_else(|| "none".to_string(), |s| s.to_string());
        self.leen_requests
            .get_or_create(&RequestLabels {
                operation: op,
                code,
            })
            .inc();
        self.leen_request_duration
            .get_or_create(&OperationLabels { operation: op })
            .observe(took.as_secs_f64());
    }

    /// Starts the held-requests counter of each operation at 0, so that a query over it (the
    /// dashboard's) has series before the first 429.
    pub fn declare_operations(&self, ops: impl IntoIterator<Item = &'static str>) {
        for op in ops {
            let _ = self
                .leen_requests_held
                .get_or_create(&OperationLabels { operation: op });
        }
    }

    /// Counts one call held back by the rate gate.
    pub fn leen_request_held(&self, op: &'static str) {
        self.leen_requests_held
            .get_or_create(&OperationLabels { operation: op })
            .inc();
    }

    /// Counts one write to the Kubernetes API.
    pub fn kube_write(&self, write: &'static str) {
        self.kube_writes.get_or_create(&WriteLabels { write }).inc();
    }

    /// Counts one finished deletion.
    pub fn deletion_finished(&self, reason: &str) {
        self.deletions
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one Event dropped on a full queue.
    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// Sets the number of deletions waiting on Leen.
    pub fn set_deletions_pending(&self, n: usize) {
        self.deletions_pending
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the age in seconds of the oldest pending deletion.
    pub fn set_oldest_pending_deletion(&self, seconds: i64) {
        self.oldest_pending_deletion.set(seconds.max(0));
    }

    /// Sets whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Whether the LeenConnection cache may be behind the API server.
    pub fn set_cache_stale(&self, stale: bool) {
        self.cache_stale.set(i64::from(stale));
    }

    /// Recounts the gauges by state, health and Ready reason.
    pub fn set_resources<'a>(&self, resources: impl Iterator<Item = ResourceSummary<'a>>) {
        use std::collections::HashMap;
        let mut states: HashMap<String, i64> = HashMap::new();
        let mut healths: HashMap<String, i64> = HashMap::new();
        let mut readies: HashMap<(&'static str, String), i64> = HashMap::new();
        let bounded = |map: &HashMap<String, i64>, v: &str| {
            if map.contains_key(v) || map.len() < MAX_LABEL_VALUES - 1 {
                v.to_string()
            } else {
                "other".to_string()
            }
        };
        for r in resources {
            let state = bounded(&states, r.state);
            *states.entry(state).or_default() += 1;
            let health = bounded(&healths, r.health);
            *healths.entry(health).or_default() += 1;
            let ready = if r.ready { "True" } else { "False" };
            *readies.entry((ready, r.reason.to_string())).or_default() += 1;
        }
        self.connections_by_state.clear();
        for (state, n) in states {
            self.connections_by_state
                .get_or_create(&StateLabels { state })
                .set(n);
        }
        self.connections_by_health.clear();
        for (health, n) in healths {
            self.connections_by_health
                .get_or_create(&HealthLabels { health })
                .set(n);
        }
        self.connections_by_ready.clear();
        for ((ready, reason), n) in readies {
            self.connections_by_ready
                .get_or_create(&ReadyLabels { ready, reason })
                .set(n);
        }
    }

    /// Sets the number of deletions held by the budget.
    pub fn set_deletions_held(&self, n: usize) {
        self.deletions_held
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber. `filter` uses `RUST_LOG` syntax.
pub fn init_logging(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("invalid log level/filter {filter:?}: {e}"))?;
    // Colour codes only for a person at a terminal: in a pod's log, a file or a pipe they
    // are noise that log collectors store as text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("installing the logger failed: {e}"))
}

/// Whether the operator is ready: its watch has synced (leader), or it stands by as a
/// healthy replica while another one leads.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicU8>);

const STARTING: u8 = 0;
const STANDBY: u8 = 1;
const READY: u8 = 2;

impl Readiness {
    /// Marks the cache synced (or not).
    pub fn set(&self, ready: bool) {
        self.0
            .store(if ready { READY } else { STARTING }, Ordering::SeqCst);
    }

    /// Marks this replica as a standby waiting for the lease.
    pub fn set_standby(&self) {
        self.0.store(STANDBY, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst) != STARTING
    }

    fn describe(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            READY => "ready",
            STANDBY => "standby: another replica leads",
            _ => "not ready: cache not synced",
        }
    }
}

#[derive(Clone)]
struct ServerState {
    metrics: Arc<Metrics>,
    ready: Readiness,
}

/// Binds the telemetry address. Done before anything else so that a taken port stops
/// start-up with a clear message.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready_handler))
        .with_state(ServerState { metrics, ready });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_handler(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn ready_handler(State(state): State<ServerState>) -> impl IntoResponse {
    let code = if state.ready.get() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, state.ready.describe())
}
