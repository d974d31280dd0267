//! A fake Leen provisioning API on 127.0.0.1 for tests, the demo and benchmarks: in-memory
//! connections, the JSON of `../shared/leen-api` (get, delete, create, update, test, list),
//! scripted faults per connection and a log of every request. Driven in-process through
//! [`FakeLeen`] or over HTTP under `/_fake/`.
//!
//! Vendor rules of the fake: vendors outside [`KNOWN_VENDORS`] are refused (422); OAuth
//! vendors (`MS_DEFENDER_*`) take no credentials, start PENDING with an
//! `oauth2_authorize_url` and turn ACTIVE when authorized (`/_fake/authorize/{id}`); the
//! others need credentials, start PENDING and turn ACTIVE at the next read. A test of
//! credentials fails when any value starts with `invalid`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

pub mod tls;

/// What a scripted fault answers instead of the normal behaviour.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum FaultBody {
    /// `{"detail": "..."}` fitting the status.
    Default,
    /// This JSON.
    Json(Value),
    /// These bytes as text (e.g. malformed JSON).
    Raw(String),
    /// A body of this many bytes.
    Oversized(usize),
    /// A body that never ends.
    Endless,
    /// The normal answer (e.g. to add only a delay).
    Normal,
}

/// One scripted fault for one connection, used for the next `times` requests to it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Fault {
    /// Connection it applies to; for create and list (calls on the collection), the
    /// organization's id.
    pub connection_id: Uuid,
    /// Carry the request out first, then answer with the fault: an answer lost after
    /// Leen acted (a create that happened, though the caller saw a 500 or a time-out).
    #[serde(default)]
    pub after_effect: bool,
    /// Only requests with this method (GET, DELETE); `None`: any.
    #[serde(default)]
    pub method: Option<String>,
    /// Status code to answer.
    #[serde(default = "default_status")]
    pub status: u16,
    /// `Retry-After` header value.
    #[serde(default)]
    pub retry_after: Option<String>,
    /// Delay before answering, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Body to answer.
    #[serde(default = "default_body")]
    pub body: FaultBody,
    /// How many requests it applies to.
    #[serde(default = "default_times")]
    pub times: u32,
}

fn default_status() -> u16 {
    500
}
fn default_body() -> FaultBody {
    FaultBody::Default
}
fn default_times() -> u32 {
    1
}

impl Fault {
    /// A fault answering `status` once to any method.
    pub fn status(connection_id: Uuid, status: u16) -> Self {
        Self {
            connection_id,
            after_effect: false,
            method: None,
            status,
            retry_after: None,
            delay_ms: 0,
            body: FaultBody::Default,
            times: 1,
        }
    }

    /// Applies to this many requests.
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    /// Only for this method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_string());
        self
    }

    /// With this body.
    pub fn body(mut self, body: FaultBody) -> Self {
        self.body = body;
        self
    }

    /// With this `Retry-After`.
    pub fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.to_string());
        self
    }

    /// Carry the request out, then answer with the fault.
    pub fn after_effect(mut self) -> Self {
        self.after_effect = true;
        self
    }

    /// After this delay.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self
    }
}

/// A request the fake received.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RecordedRequest {
    /// GET, DELETE, POST or PATCH.
    pub method: String,
    /// get, delete, create, update, test, list, organization, or unmatched (a path Leen
    /// does not serve).
    #[serde(default)]
    pub operation: String,
    /// The organization id in the path.
    pub organization_id: String,
    /// The connection id in the path (empty for create and list).
    pub connection_id: String,
    /// The JSON body sent (create and update).
    #[serde(default)]
    pub body: Option<Value>,
    /// The `X-API-KEY` header (the fake is the one place that may know it).
    pub api_key: Option<String>,
    /// The status code answered.
    pub status: u16,
}

/// A connection to seed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedConnection {
    /// Organization UUID.
    pub organization_id: Uuid,
    /// Connection UUID.
    pub id: Uuid,
    /// Vendor name.
    #[serde(default = "default_vendor")]
    pub vendor: String,
    /// Initial state.
    #[serde(default = "default_state")]
    pub state: String,
}

fn default_vendor() -> String {
    "CrowdStrike".into()
}
fn default_state() -> String {
    "ACTIVE".into()
}

/// Vendors the fake knows; others are refused with 422, as Leen refuses an unknown enum.
pub const KNOWN_VENDORS: &[&str] = &[
    "AWS",
    "CROWDSTRIKE",
    "CROWDSTRIKE_SPOTLIGHT",
    "INSIGHTVM",
    "JIRA",
    "MS_DEFENDER_EDR",
    "MS_DEFENDER_VMS",
    "OKTA_IDP",
    "QUALYS",
    "SENTINELONE",
    "SENTINELONE_VMS",
    "SNYK",
    "TENABLE",
    "WIZ_CODE",
    "WIZ_VMS",
];

fn is_oauth_vendor(vendor: &str) -> bool {
    vendor.starts_with("MS_DEFENDER")
}

/// How the fake answers cursor pagination of its list (`enableCursor=true`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cursors {
    /// Pages by `cursor`, answering `next_cursor` and `previous_cursor` (`null` at the
    /// ends), as Leen documents.
    #[default]
    Supported,
    /// Refuses `enableCursor` with a 422 (an API version before cursors): offsets only.
    Refused,
    /// Ignores `enableCursor` and answers offset pages (`items`, `total`).
    Ignored,
}

#[derive(Default)]
struct FakeState {
    cursors: Cursors,
    credentials: HashMap<(Uuid, Uuid), Value>,
    /// Connections that turn ACTIVE at their next read.
    activate_on_read: HashSet<(Uuid, Uuid)>,
    failure_rate: f64,
    rng: Option<rand::rngs::StdRng>,
    connections: HashMap<(Uuid, Uuid), Value>,
    /// Organizations that exist: every one a connection was seeded or created in, and
    /// those added on their own. Never forgotten.
    organizations: HashSet<Uuid>,
    api_keys: HashSet<String>,
    faults: HashMap<Uuid, VecDeque<Fault>>,
    latency: Duration,
    /// How long a create takes before it commits (Leen checking the vendor's credentials).
    create_delay: Duration,
    soft_delete: bool,
    rate_limited: Option<String>,
    requests: Vec<RecordedRequest>,
}

type Shared = Arc<Mutex<FakeState>>;

fn lock(state: &Shared) -> MutexGuard<'_, FakeState> {
    // A panicking handler must not wedge every later request of a test.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running fake Leen. Stops when dropped.
pub struct FakeLeen {
    addr: SocketAddr,
    state: Shared,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(state);
    tokio::spawn(async move {
        match tls {
            Some(config) => tls::serve(listener, app, config, rx).await,
            None => {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            }
        }
    });
    tx
}

impl FakeLeen {
    /// Starts a fake on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// Starts a fake on the given address.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(addr, None).await
    }

    /// Starts a fake serving https with `cert` (see [`tls::TestCa`]) on the given address.
    pub async fn start_tls_on(addr: SocketAddr, cert: &tls::ServerCert) -> std::io::Result<Self> {
        Self::start_with(addr, Some(tls::server_config(cert)?)).await
    }

    async fn start_with(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state: Shared = Arc::default();
        let tx = serve(listener, state.clone(), tls.clone());
        Ok(Self {
            addr,
            state,
            shutdown: Mutex::new(Some(tx)),
            tls,
        })
    }

    /// Stops listening: connections are refused until [`FakeLeen::come_back`]. The
    /// connections and faults are kept.
    pub async fn go_down(&self) {
        let tx = self
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
        // Until the port refuses, the outage has not started.
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Listens again on the same address.
    pub async fn come_back(&self) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        let tx = serve(listener, self.state.clone(), self.tls.clone());
        *self.shutdown.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        Ok(())
    }

    /// Answers this share of requests (0.0 to 1.0) with 503, drawn from a generator with
    /// this seed, so that a run can be repeated.
    pub fn set_failure_rate(&self, rate: f64, seed: u64) {
        use rand::SeedableRng;
        let mut s = lock(&self.state);
        s.failure_rate = rate.clamp(0.0, 1.0);
        s.rng = Some(rand::rngs::StdRng::seed_from_u64(seed));
    }

    /// The connections that are still there and not DELETED.
    pub fn live_connections(&self) -> Vec<(Uuid, Uuid)> {
        lock(&self.state)
            .connections
            .iter()
            .filter(|(_, c)| c["state"] != "DELETED")
            .map(|(k, _)| *k)
            .collect()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to use as `LEEN_ENDPOINT`, ending in `/v1` (`https://` when it serves
    /// TLS).
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/v1", self.addr)
    }

    /// How the list answers cursor pagination from now on.
    pub fn set_cursors(&self, cursors: Cursors) {
        lock(&self.state).cursors = cursors;
    }

    /// Sets the identifier of a connection (the caller's own reference); empty: none
    /// (`null`, as for a connection made in the console).
    pub fn set_identifier(&self, organization_id: Uuid, id: Uuid, identifier: &str) {
        if let Some(c) = lock(&self.state)
            .connections
            .get_mut(&(organization_id, id))
        {
            c["identifier"] = if identifier.is_empty() {
                Value::Null
            } else {
                json!(identifier)
            };
        }
    }

    /// Accepts this API key.
    pub fn add_api_key(&self, key: &str) {
        lock(&self.state).api_keys.insert(key.to_string());
    }

    /// Makes every create take this long before it commits (and answers).
    pub fn set_create_delay(&self, delay: Duration) {
        lock(&self.state).create_delay = delay;
    }

    /// Adds an organization with no connection (yet).
    pub fn add_organization(&self, organization_id: Uuid) {
        lock(&self.state).organizations.insert(organization_id);
    }

    /// Stops accepting this API key.
    pub fn remove_api_key(&self, key: &str) {
        lock(&self.state).api_keys.remove(key);
    }

    /// Adds an ACTIVE, HEALTHY connection.
    pub fn add_connection(&self, organization_id: Uuid, id: Uuid, vendor: &str) {
        seed(
            &self.state,
            SeedConnection {
                organization_id,
                id,
                vendor: vendor.to_string(),
                state: default_state(),
            },
        );
    }

    /// Sets the health of a connection.
    pub fn set_health(
        &self,
        organization_id: Uuid,
        id: Uuid,
        name: &str,
        description: &str,
        resolution_owner: &str,
    ) {
        if let Some(c) = lock(&self.state)
            .connections
            .get_mut(&(organization_id, id))
        {
            c["health"] = json!({
                "name": name,
                "status": if name == "HEALTHY" { "HEALTHY" } else { "UNHEALTHY" },
                "description": description,
                "resolution_owner": resolution_owner,
                "details": []
            });
        }
    }

    /// Whether the connection still exists (and is not DELETED).
    pub fn has_connection(&self, organization_id: Uuid, id: Uuid) -> bool {
        lock(&self.state)
            .connections
            .get(&(organization_id, id))
            .is_some_and(|c| c["state"] != "DELETED")
    }

    /// Forgets every connection (their organizations stay known): each DELETE from now on
    /// gets Leen's JSON 404, as after a deletion done in the Leen console.
    pub fn forget_connections(&self) {
        lock(&self.state).connections.clear();
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.state).faults.clear();
    }

    /// Queues a fault.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.state)
            .faults
            .entry(fault.connection_id)
            .or_default()
            .push_back(fault);
    }

    /// Delay added to every answer.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }

    /// Keep deleted connections as DELETED (a repeated DELETE then answers 200) instead of
    /// removing them (a repeated DELETE answers 404).
    pub fn set_soft_delete(&self, soft: bool) {
        lock(&self.state).soft_delete = soft;
    }

    /// Answers every request with 429 and this `Retry-After` (`Some("")`: without the
    /// header) until called with `None`.
    pub fn set_rate_limited(&self, retry_after: Option<&str>) {
        lock(&self.state).rate_limited = retry_after.map(str::to_string);
    }

    /// Sets a connection's state, as a person in the Leen console would.
    pub fn set_state(&self, organization_id: Uuid, id: Uuid, state: &str) {
        if let Some(c) = lock(&self.state)
            .connections
            .get_mut(&(organization_id, id))
        {
            c["state"] = json!(state);
            c["is_active"] = json!(state == "ACTIVE");
        }
    }

    /// The state of a connection, when it exists.
    pub fn state_of(&self, organization_id: Uuid, id: Uuid) -> Option<String> {
        lock(&self.state)
            .connections
            .get(&(organization_id, id))
            .and_then(|c| c["state"].as_str().map(str::to_string))
    }

    /// The vendor's consent for an OAuth connection: it turns ACTIVE.
    pub fn authorize(&self, organization_id: Uuid, id: Uuid) {
        authorize(&self.state, organization_id, id);
    }

    /// The credentials last sent for a connection (create or update).
    pub fn credentials_of(&self, organization_id: Uuid, id: Uuid) -> Option<Value> {
        lock(&self.state)
            .credentials
            .get(&(organization_id, id))
            .cloned()
    }

    /// Every connection of an organization with this identifier, DELETED ones included,
    /// with its state: how many a create made, whatever became of them.
    pub fn ever_with_identifier(
        &self,
        organization_id: Uuid,
        identifier: &str,
    ) -> Vec<(Uuid, String)> {
        lock(&self.state)
            .connections
            .iter()
            .filter(|((org, _), c)| *org == organization_id && c["identifier"] == identifier)
            .map(|((_, id), c)| (*id, c["state"].as_str().unwrap_or_default().to_string()))
            .collect()
    }

    /// The live (not DELETED) connections of an organization with this identifier.
    pub fn with_identifier(&self, organization_id: Uuid, identifier: &str) -> Vec<Uuid> {
        lock(&self.state)
            .connections
            .iter()
            .filter(|((org, _), c)| {
                *org == organization_id && c["identifier"] == identifier && c["state"] != "DELETED"
            })
            .map(|((_, id), _)| *id)
            .collect()
    }

    /// Every live (not DELETED) connection's identifier, with its organization and id.
    pub fn identifiers(&self) -> Vec<(Uuid, Uuid, Option<String>)> {
        lock(&self.state)
            .connections
            .iter()
            .filter(|(_, c)| c["state"] != "DELETED")
            .map(|((org, id), c)| (*org, *id, c["identifier"].as_str().map(str::to_string)))
            .collect()
    }

    /// Requests with this method (GET, DELETE, POST, PATCH).
    pub fn count_method(&self, method: &str) -> usize {
        lock(&self.state)
            .requests
            .iter()
            .filter(|r| r.method == method)
            .count()
    }

    /// Requests of this operation (get, delete, create, update, test, list).
    pub fn count_operation(&self, operation: &str) -> usize {
        lock(&self.state)
            .requests
            .iter()
            .filter(|r| r.operation == operation)
            .count()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// Requests with this method for this connection.
    pub fn count(&self, method: &str, id: Uuid) -> usize {
        let id = id.to_string();
        lock(&self.state)
            .requests
            .iter()
            .filter(|r| r.method == method && r.connection_id == id)
            .count()
    }
}

fn authorize(state: &Shared, organization_id: Uuid, id: Uuid) {
    if let Some(c) = lock(state).connections.get_mut(&(organization_id, id)) {
        c["state"] = json!("ACTIVE");
        c["is_active"] = json!(true);
        c["oauth2_authorize_url"] = Value::Null;
    }
}

fn seed(state: &Shared, c: SeedConnection) {
    let now = chrono::Utc::now().to_rfc3339();
    let conn = json!({
        "id": c.id,
        "vendor": c.vendor,
        "is_active": c.state == "ACTIVE",
        "refresh_interval_secs": 3600,
        "timeout_secs": 600,
        "organization_id": c.organization_id,
        "oauth2_authorize_url": null,
        "identifier": format!("{}-{}", c.vendor.to_lowercase(), &c.id.to_string()[..8]),
        "state": c.state,
        "created_at": now,
        "updated_at": now,
        "health": {
            "name": "HEALTHY",
            "status": "HEALTHY",
            "description": "Connection is healthy",
            "resolution_owner": "LEEN",
            "details": [{"data_export_type": "devices", "endpoint": "/v1/devices"}]
        }
    });
    let mut s = lock(state);
    s.organizations.insert(c.organization_id);
    s.connections.insert((c.organization_id, c.id), conn);
}

/// The fake's HTTP routes: the Leen API under `/v1` and the control API under `/_fake`.
fn router(state: Shared) -> Router {
    Router::new()
        .route(
            "/v1/provisioning/organizations/{org}/connections/{id}",
            get(connection).delete(connection).patch(connection),
        )
        .route(
            "/v1/provisioning/organizations/{org}/connections/{id}/test",
            get(test_connection),
        )
        .route(
            "/v1/provisioning/organizations/{org}/connections",
            get(collection).post(collection),
        )
        .route("/v1/provisioning/organizations/{org}", get(organization))
        .route("/_fake/authorize/{org}/{id}", post(admin_authorize))
        .route("/_fake/connections", post(admin_seed))
        .route("/_fake/keys", post(admin_key))
        .route("/_fake/faults", post(admin_fault))
        .route("/_fake/requests", get(admin_requests))
        .fallback(unmatched)
        .with_state(state)
}

/// What a request asks, for [`answer`].
struct Call<'a> {
    method: &'a Method,
    operation: &'static str,
    org: &'a str,
    /// The connection id in the path; empty for create and list.
    id: &'a str,
    api_key: Option<&'a str>,
    body: Option<&'a Value>,
    query: &'a HashMap<String, String>,
}

/// One request as the routes hand it over.
struct Incoming {
    method: Method,
    operation: &'static str,
    org: String,
    /// Empty for create and list.
    id: String,
    body: Option<Value>,
    query: HashMap<String, String>,
}

impl Incoming {
    fn new(
        method: Method,
        operation: &'static str,
        org: String,
        id: String,
        body: Option<Value>,
        query: HashMap<String, String>,
    ) -> Self {
        Self {
            method,
            operation,
            org,
            id,
            body,
            query,
        }
    }
}

async fn handle(state: Shared, headers: HeaderMap, r: Incoming) -> Response {
    // Carried out on a task of its own: like Leen, the fake finishes what it started even
    // when the caller gave up (timed out, went away) before the answer.
    let work = tokio::spawn(carry_out(state, headers, r));
    match work.await {
        Ok((response, delay)) => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            response
        }
        Err(_) => detail(StatusCode::INTERNAL_SERVER_ERROR, "the fake failed"),
    }
}

async fn carry_out(state: Shared, headers: HeaderMap, r: Incoming) -> (Response, Duration) {
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if r.operation == "create" {
        // Leen commits a create only once its check of the vendor is done: a caller that
        // gave up before sees nothing in the list until then.
        let commit_after = lock(&state).create_delay;
        if !commit_after.is_zero() {
            tokio::time::sleep(commit_after).await;
        }
    }
    let call = Call {
        method: &r.method,
        operation: r.operation,
        org: &r.org,
        id: &r.id,
        api_key: api_key.as_deref(),
        body: r.body.as_ref(),
        query: &r.query,
    };
    let (response, status, delay) = answer(&state, &call);
    lock(&state).requests.push(RecordedRequest {
        method: r.method.to_string(),
        operation: r.operation.to_string(),
        organization_id: r.org,
        connection_id: r.id,
        body: r.body,
        api_key,
        status,
    });
    (response, delay)
}

fn json_body(body: &axum::body::Bytes) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    Some(serde_json::from_slice(body).unwrap_or(Value::Null))
}

async fn connection(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((org, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let operation = match method {
        Method::DELETE => "delete",
        Method::PATCH => "update",
        _ => "get",
    };
    let body = json_body(&body);
    let query = HashMap::new();
    let r = Incoming::new(method, operation, org, id, body, query);
    handle(state, headers, r).await
}

async fn test_connection(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((org, id)): Path<(String, String)>,
) -> Response {
    let (operation, body, query) = ("test", None, HashMap::new());
    let r = Incoming::new(method, operation, org, id, body, query);
    handle(state, headers, r).await
}

async fn collection(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(org): Path<String>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    let operation = if method == Method::POST {
        "create"
    } else {
        "list"
    };
    let (id, body) = (String::new(), json_body(&body));
    let r = Incoming::new(method, operation, org, id, body, query);
    handle(state, headers, r).await
}

async fn organization(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(org): Path<String>,
) -> Response {
    let r = Incoming::new(
        method,
        "organization",
        org,
        String::new(),
        None,
        HashMap::new(),
    );
    handle(state, headers, r).await
}

/// Any path Leen does not serve: FastAPI's answer, a JSON 404 that says nothing about any
/// connection (what a proxy rewriting paths wrongly, or a moved API, gets for every call).
async fn unmatched(State(state): State<Shared>, method: Method, headers: HeaderMap) -> Response {
    lock(&state).requests.push(RecordedRequest {
        method: method.to_string(),
        operation: "unmatched".to_string(),
        organization_id: String::new(),
        connection_id: String::new(),
        body: None,
        api_key: headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        status: 404,
    });
    detail(StatusCode::NOT_FOUND, "Not Found")
}

fn detail(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "detail": text }))).into_response()
}

fn validation(loc: &[&str], msg: &str) -> Response {
    let body = json!({"detail": [{"loc": loc, "msg": msg, "type": "value_error"}]});
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

fn ok(value: Value) -> Response {
    (StatusCode::OK, Json(value)).into_response()
}

fn answer(state: &Shared, call: &Call) -> (Response, u16, Duration) {
    let mut s = lock(state);
    let mut delay = s.latency;
    let collection = call.id.is_empty();
    let org = Uuid::parse_str(call.org);
    let id = if collection {
        Ok(Uuid::nil())
    } else {
        Uuid::parse_str(call.id)
    };
    let (Ok(org), Ok(id)) = (org, id) else {
        let bad = if Uuid::parse_str(call.org).is_err() {
            "organization_id"
        } else {
            "connection_id"
        };
        return (
            validation(&["path", bad], "value is not a valid uuid"),
            422,
            delay,
        );
    };
    let fault_key = if collection { org } else { id };
    let mut after: Option<Fault> = None;
    if let Some(queue) = s.faults.get_mut(&fault_key) {
        let applies = queue.front().is_some_and(|f| {
            f.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(call.method.as_str()))
        });
        if applies && let Some(front) = queue.front_mut() {
            let fault = front.clone();
            front.times = front.times.saturating_sub(1);
            if front.times == 0 {
                queue.pop_front();
            }
            delay += Duration::from_millis(fault.delay_ms);
            if fault.after_effect {
                after = Some(fault);
            } else if fault.body != FaultBody::Normal {
                return (fault_response(&fault), fault.status, delay);
            }
        }
    }
    if let Some(retry_after) = s.rate_limited.clone() {
        let mut response = detail(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        if let Ok(v) = retry_after.parse()
            && !retry_after.is_empty()
        {
            response.headers_mut().insert("retry-after", v);
        }
        return (response, 429, delay);
    }
    let rate = s.failure_rate;
    if rate > 0.0
        && let Some(rng) = s.rng.as_mut()
        && rand::Rng::random::<f64>(rng) < rate
    {
        return (
            detail(StatusCode::SERVICE_UNAVAILABLE, "injected random failure"),
            503,
            delay,
        );
    }
    if !call.api_key.is_some_and(|k| s.api_keys.contains(k)) {
        return (
            detail(StatusCode::UNAUTHORIZED, "Invalid API Key"),
            401,
            delay,
        );
    }
    let (response, status) = match call.operation {
        "create" => create(&mut s, org, call.body),
        "list" => list(&s, org, call.query),
        "organization" if s.organizations.contains(&org) => (
            ok(
                json!({"id": org, "name": format!("Organization {}", &call.org[..8]), "identifier": null}),
            ),
            200,
        ),
        "organization" => (detail(StatusCode::NOT_FOUND, "Organization Not Found"), 404),
        _ => one(&mut s, call, org, id),
    };
    match after {
        Some(fault) => (fault_response(&fault), fault.status, delay),
        None => (response, status, delay),
    }
}

fn create(s: &mut FakeState, org: Uuid, body: Option<&Value>) -> (Response, u16) {
    let Some(body) = body.filter(|b| b.is_object()) else {
        return (validation(&["body"], "field required"), 422);
    };
    let vendor = body["vendor"].as_str().unwrap_or_default().to_string();
    if !KNOWN_VENDORS.contains(&vendor.as_str()) {
        return (
            validation(
                &["body", "vendor"],
                &format!("value is not a valid enumeration member: {vendor:?}"),
            ),
            422,
        );
    }
    let credentials = body.get("credentials").filter(|c| !c.is_null());
    let oauth = is_oauth_vendor(&vendor);
    if !oauth && credentials.is_none_or(|c| c.as_object().is_none_or(|m| m.is_empty())) {
        return (
            validation(
                &["body", "credentials"],
                "credentials are required for this vendor",
            ),
            422,
        );
    }
    let id = Uuid::new_v4();
    let now = chrono::Utc::now().to_rfc3339();
    let conn = json!({
        "id": id,
        "vendor": vendor,
        "is_active": false,
        "refresh_interval_secs": 3600,
        "timeout_secs": 600,
        "organization_id": org,
        "oauth2_authorize_url": if oauth { json!(format!("https://login.example.invalid/oauth2/authorize?connection={id}")) } else { Value::Null },
        "identifier": body.get("identifier").cloned().unwrap_or(Value::Null),
        "state": "PENDING",
        "created_at": now,
        "updated_at": now,
        "health": {
            "name": "INITIALIZING",
            "status": "INITIALIZING",
            "description": "Connection is being set up",
            "resolution_owner": "LEEN",
            "details": []
        }
    });
    if let Some(c) = credentials {
        s.credentials.insert((org, id), c.clone());
    }
    if !oauth {
        s.activate_on_read.insert((org, id));
    }
    s.organizations.insert(org);
    s.connections.insert((org, id), conn.clone());
    (ok(conn), 200)
}

fn list(s: &FakeState, org: Uuid, query: &HashMap<String, String>) -> (Response, u16) {
    let number = |k: &str, default: usize| {
        query
            .get(k)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let (limit, offset) = (number("limit", 100), number("offset", 0));
    let mut all: Vec<&Value> = s
        .connections
        .iter()
        .filter(|((o, _), c)| *o == org && (s.soft_delete || c["state"] != "DELETED"))
        .map(|(_, c)| c)
        .collect();
    all.sort_by_key(|c| c["id"].as_str().unwrap_or_default().to_string());
    if query.get("enableCursor").is_some_and(|v| v == "true") {
        match s.cursors {
            Cursors::Refused => {
                return (
                    validation(&["query", "enableCursor"], "extra fields not permitted"),
                    422,
                );
            }
            Cursors::Supported => {
                let start = match query.get("cursor") {
                    None => 0,
                    Some(c) => match c.strip_prefix("after-").and_then(|n| n.parse().ok()) {
                        Some(n) => n,
                        None => {
                            return (validation(&["query", "cursor"], "invalid cursor"), 422);
                        }
                    },
                };
                let items: Vec<Value> = all
                    .iter()
                    .skip(start)
                    .take(limit)
                    .map(|c| (*c).clone())
                    .collect();
                let end = start + items.len();
                let next = (end < all.len()).then(|| format!("after-{end}"));
                let previous =
                    (start > 0).then(|| format!("after-{}", start.saturating_sub(limit)));
                return (
                    ok(json!({"items": items, "next_cursor": next, "previous_cursor": previous})),
                    200,
                );
            }
            Cursors::Ignored => {}
        }
    }
    let items: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|c| (*c).clone())
        .collect();
    (ok(json!({"items": items, "total": all.len()})), 200)
}

fn one(s: &mut FakeState, call: &Call, org: Uuid, id: Uuid) -> (Response, u16) {
    let not_found = || (detail(StatusCode::NOT_FOUND, "Connection Not Found"), 404);
    let soft = s.soft_delete;
    if call.operation == "get"
        && s.activate_on_read.remove(&(org, id))
        && let Some(c) = s.connections.get_mut(&(org, id))
        && c["state"] == "PENDING"
    {
        c["state"] = json!("ACTIVE");
        c["is_active"] = json!(true);
        c["health"] = json!({
            "name": "HEALTHY",
            "status": "HEALTHY",
            "description": "Connection is healthy",
            "resolution_owner": "LEEN",
            "details": [{"data_export_type": "devices", "endpoint": "/v1/devices"}]
        });
    }
    let valid = s
        .credentials
        .get(&(org, id))
        .map(|c| !has_invalid_value(c) && c.as_object().is_some_and(|m| !m.is_empty()));
    let Some(conn) = s.connections.get_mut(&(org, id)) else {
        return not_found();
    };
    let deleted = conn["state"] == "DELETED";
    match call.operation {
        "delete" => {
            if deleted && !soft {
                return not_found();
            }
            conn["state"] = json!("DELETED");
            conn["is_active"] = json!(false);
            conn["updated_at"] = json!(chrono::Utc::now().to_rfc3339());
            conn["health"] = json!({
                "name": "HEALTHY",
                "status": "HEALTHY",
                "description": "Connection deleted",
                "resolution_owner": "LEEN",
                "details": null
            });
            // Kept as DELETED: without soft delete it then reads as gone (404).
            (ok(conn.clone()), 200)
        }
        _ if deleted && !soft => not_found(),
        "update" => {
            let Some(body) = call.body.and_then(Value::as_object) else {
                return (validation(&["body"], "field required"), 422);
            };
            if let Some(state) = body.get("state").filter(|v| !v.is_null()) {
                let Some(state) = state
                    .as_str()
                    .filter(|v| ["PENDING", "ACTIVE", "PAUSED", "DELETED"].contains(v))
                else {
                    return (
                        validation(
                            &["body", "state"],
                            "value is not a valid enumeration member",
                        ),
                        422,
                    );
                };
                conn["state"] = json!(state);
                conn["is_active"] = json!(state == "ACTIVE");
            }
            if let Some(identifier) = body.get("identifier").filter(|v| !v.is_null()) {
                conn["identifier"] = identifier.clone();
            }
            conn["updated_at"] = json!(chrono::Utc::now().to_rfc3339());
            let answer = conn.clone();
            if let Some(c) = body.get("credentials").filter(|v| !v.is_null()) {
                s.credentials.insert((org, id), c.clone());
            }
            (ok(answer), 200)
        }
        "test" => {
            let oauth = conn["oauth2_authorize_url"].is_string() || valid.is_none();
            let (is_valid, message) = match valid {
                Some(true) => (true, "Credentials are valid"),
                Some(false) => (false, "The vendor refused the credentials"),
                None if oauth && conn["state"] == "ACTIVE" => (true, "Authorized"),
                None => (false, "No credentials"),
            };
            (ok(json!({"is_valid": is_valid, "message": message})), 200)
        }
        _ => (ok(conn.clone()), 200),
    }
}

fn has_invalid_value(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with("invalid"),
        Value::Array(items) => items.iter().any(has_invalid_value),
        Value::Object(map) => map.values().any(has_invalid_value),
        _ => false,
    }
}

fn fault_response(fault: &Fault) -> Response {
    let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match &fault.body {
        FaultBody::Default | FaultBody::Normal => detail(
            status,
            status.canonical_reason().unwrap_or("injected fault"),
        ),
        FaultBody::Json(v) => (status, Json(v.clone())).into_response(),
        FaultBody::Raw(s) => (status, s.clone()).into_response(),
        FaultBody::Oversized(n) => (status, "x".repeat(*n)).into_response(),
        FaultBody::Endless => {
            let chunk = bytes_chunk();
            let stream = futures::stream::repeat_with(move || {
                Ok::<_, std::convert::Infallible>(chunk.clone())
            });
            (status, Body::from_stream(stream)).into_response()
        }
    };
    if let Some(ra) = &fault.retry_after
        && let Ok(v) = ra.parse()
    {
        response.headers_mut().insert("retry-after", v);
    }
    response
}

fn bytes_chunk() -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b'{'; 64 * 1024])
}

async fn admin_seed(State(state): State<Shared>, Json(c): Json<SeedConnection>) -> StatusCode {
    seed(&state, c);
    StatusCode::CREATED
}

#[derive(Deserialize)]
struct KeyBody {
    key: String,
}

async fn admin_key(State(state): State<Shared>, Json(k): Json<KeyBody>) -> StatusCode {
    lock(&state).api_keys.insert(k.key);
    StatusCode::CREATED
}

async fn admin_fault(State(state): State<Shared>, Json(f): Json<Fault>) -> StatusCode {
    lock(&state)
        .faults
        .entry(f.connection_id)
        .or_default()
        .push_back(f);
    StatusCode::CREATED
}

async fn admin_authorize(
    State(state): State<Shared>,
    Path((org, id)): Path<(Uuid, Uuid)>,
) -> StatusCode {
    authorize(&state, org, id);
    StatusCode::NO_CONTENT
}

async fn admin_requests(State(state): State<Shared>) -> Json<Vec<RecordedRequest>> {
    Json(lock(&state).requests.clone())
}
