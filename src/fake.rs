//! A fake Leen provisioning API on 127.0.0.1 for tests, the demo and benchmarks: in-memory
//! connections, the JSON of `../shared/leen-api`, scripted faults per connection and a log
//! of every request. Driven in-process through [`FakeLeen`] or over HTTP under `/_fake/`.

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
    /// Connection it applies to.
    pub connection_id: Uuid,
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

    /// After this delay.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self
    }
}

/// A request the fake received.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RecordedRequest {
    /// GET or DELETE.
    pub method: String,
    /// The organization id in the path.
    pub organization_id: String,
    /// The connection id in the path.
    pub connection_id: String,
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

#[derive(Default)]
struct FakeState {
    failure_rate: f64,
    rng: Option<rand::rngs::StdRng>,
    connections: HashMap<(Uuid, Uuid), Value>,
    api_keys: HashSet<String>,
    faults: HashMap<Uuid, VecDeque<Fault>>,
    latency: Duration,
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
}

fn serve(listener: tokio::net::TcpListener, state: Shared) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
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
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state: Shared = Arc::default();
        let tx = serve(listener, state.clone());
        Ok(Self {
            addr,
            state,
            shutdown: Mutex::new(Some(tx)),
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
        let tx = serve(listener, self.state.clone());
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

    /// The base URL to use as `LEEN_ENDPOINT`, ending in `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Accepts this API key.
    pub fn add_api_key(&self, key: &str) {
        lock(&self.state).api_keys.insert(key.to_string());
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
    lock(state)
        .connections
        .insert((c.organization_id, c.id), conn);
}

/// The fake's HTTP routes: the Leen API under `/v1` and the control API under `/_fake`.
fn router(state: Shared) -> Router {
    Router::new()
        .route(
            "/v1/provisioning/organizations/{org}/connections/{id}",
            get(connection).delete(connection),
        )
        .route("/_fake/connections", post(admin_seed))
        .route("/_fake/keys", post(admin_key))
        .route("/_fake/faults", post(admin_fault))
        .route("/_fake/requests", get(admin_requests))
        .with_state(state)
}

async fn connection(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((org, id)): Path<(String, String)>,
) -> Response {
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (response, status, delay) = answer(&state, &method, &org, &id, api_key.as_deref());
    lock(&state).requests.push(RecordedRequest {
        method: method.to_string(),
        organization_id: org,
        connection_id: id,
        api_key,
        status,
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    response
}

fn detail(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "detail": text }))).into_response()
}

fn answer(
    state: &Shared,
    method: &Method,
    org: &str,
    id: &str,
    api_key: Option<&str>,
) -> (Response, u16, Duration) {
    let mut s = lock(state);
    let mut delay = s.latency;
    let (Ok(org), Ok(id)) = (Uuid::parse_str(org), Uuid::parse_str(id)) else {
        let bad = if Uuid::parse_str(org).is_err() {
            "organization_id"
        } else {
            "connection_id"
        };
        let body = json!({"detail": [{"loc": ["path", bad], "msg": "value is not a valid uuid", "type": "type_error.uuid"}]});
        return (
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response(),
            422,
            delay,
        );
    };
    if let Some(queue) = s.faults.get_mut(&id) {
        let applies = queue.front().is_some_and(|f| {
            f.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
        });
        if applies && let Some(front) = queue.front_mut() {
            let fault = front.clone();
            front.times = front.times.saturating_sub(1);
            if front.times == 0 {
                queue.pop_front();
            }
            delay += Duration::from_millis(fault.delay_ms);
            if fault.body != FaultBody::Normal {
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
    if !api_key.is_some_and(|k| s.api_keys.contains(k)) {
        return (
            detail(StatusCode::UNAUTHORIZED, "Invalid API Key"),
            401,
            delay,
        );
    }
    let soft = s.soft_delete;
    let Some(conn) = s.connections.get_mut(&(org, id)) else {
        return (
            detail(StatusCode::NOT_FOUND, "Connection Not Found"),
            404,
            delay,
        );
    };
    if *method == Method::DELETE {
        let already = conn["state"] == "DELETED";
        if already && !soft {
            return (
                detail(StatusCode::NOT_FOUND, "Connection Not Found"),
                404,
                delay,
            );
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
        return (
            (StatusCode::OK, Json(conn.clone())).into_response(),
            200,
            delay,
        );
    }
    if conn["state"] == "DELETED" && !soft {
        return (
            detail(StatusCode::NOT_FOUND, "Connection Not Found"),
            404,
            delay,
        );
    }
    (
        (StatusCode::OK, Json(conn.clone())).into_response(),
        200,
        delay,
    )
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

async fn admin_requests(State(state): State<Shared>) -> Json<Vec<RecordedRequest>> {
    Json(lock(&state).requests.clone())
}
