//! Client for the Leen provisioning API, in the shape of Crossplane's `ExternalClient`:
//! observe (GET, list by identifier), create (POST), update (PATCH, test) and delete
//! (DELETE) of connections. Every answer is classified: success into the call's own type,
//! everything else into the [`LeenOutcome`] that the decisions know.

use std::{fmt, sync::Arc, time::Duration};

use reqwest::{Method, header::HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use url::Url;
use uuid::Uuid;

use crate::{
    rate_gate::{Admission, LimitKey, RateGate},
    resource::Region,
    telemetry::Metrics,
};

/// Largest Leen response body the client reads; a longer one is cut there and reported as
/// an invalid response. A connection is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest `Retry-After` the client honours; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Longest error detail from Leen kept for status and Events.
const MAX_DETAIL_CHARS: usize = 512;

/// A Leen API key. Its `Debug` and `Display` never show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// Why a text cannot be an API key. The messages never show the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing but white space.
    #[error("is empty")]
    Empty,
    /// Holds characters an HTTP header cannot carry (a control character, a newline inside).
    #[error("holds characters that cannot be sent in an HTTP header")]
    NotAHeaderValue,
}

impl ApiKey {
    /// Wraps a key; surrounding white space (a trailing newline in a Secret) is dropped.
    /// A key that is empty or cannot travel in the `X-API-KEY` header is refused.
    pub fn new(key: impl AsRef<str>) -> Result<Self, KeyError> {
        let key = key.as_ref().trim();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if HeaderValue::from_str(key).is_err() {
            return Err(KeyError::NotAHeaderValue);
        }
        Ok(Self(key.to_string()))
    }

    /// The key itself, for the `X-API-KEY` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which call to Leen. Its metrics label is the variant's name in lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Operation {
    /// `GET .../connections/{id}`
    Get,
    /// `DELETE .../connections/{id}`
    Delete,
    /// `POST .../connections`
    Create,
    /// `PATCH .../connections/{id}`
    Update,
    /// `GET .../connections/{id}/test`
    Test,
    /// `GET .../connections` (one page)
    List,
}

impl Operation {
    /// Lower-case name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    fn method(self) -> Method {
        match self {
            Operation::Get | Operation::Test | Operation::List => Method::GET,
            Operation::Delete => Method::DELETE,
            Operation::Create => Method::POST,
            Operation::Update => Method::PATCH,
        }
    }
}

/// What a create sends (`POST .../connections`). Its `Debug` never shows the credentials
/// (theirs is redacted).
#[derive(Clone, Debug, PartialEq)]
pub struct CreateRequest {
    /// Vendor name.
    pub vendor: String,
    /// Vendor credentials; `None` for OAuth vendors.
    pub credentials: Option<crate::credentials::Credentials>,
    /// The caller's reference, by which a lost create is found again.
    pub identifier: String,
    /// Vendor options.
    pub options: Option<Value>,
}

impl CreateRequest {
    fn body(&self) -> Value {
        serde_json::json!({
            "vendor": self.vendor,
            "credentials": self.credentials.as_ref().map(|c| c.expose().clone()),
            "identifier": self.identifier,
            "options": self.options,
        })
    }
}

/// What an update sends (`PATCH .../connections/{id}`): only the fields given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateRequest {
    /// New credentials.
    pub credentials: Option<crate::credentials::Credentials>,
    /// New state: ACTIVE or PAUSED.
    pub state: Option<&'static str>,
}

impl UpdateRequest {
    fn body(&self) -> Value {
        let mut body = serde_json::Map::new();
        if let Some(c) = &self.credentials {
            body.insert("credentials".into(), c.expose().clone());
        }
        if let Some(state) = self.state {
            body.insert("state".into(), Value::String(state.to_string()));
        }
        Value::Object(body)
    }
}

/// Leen's test of a connection's credentials (`GET .../test`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialCheck {
    /// Whether Leen found them valid.
    pub valid: bool,
    /// Leen's message.
    pub message: Option<String>,
}

/// A connection as Leen returns it (`ConnectionRespModel`), read leniently: every field may
/// be missing or null, unknown fields are ignored and enum values are kept as strings, so
/// that a value Leen adds later is data, not an error.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Connection {
    /// Connection UUID.
    pub id: Option<String>,
    /// Vendor name.
    pub vendor: Option<String>,
    /// Whether the connection is active.
    pub is_active: Option<bool>,
    /// Refresh interval in seconds.
    pub refresh_interval_secs: Option<i64>,
    /// Vendor call timeout in seconds.
    pub timeout_secs: Option<i64>,
    /// Organization UUID.
    pub organization_id: Option<String>,
    /// Organization name (only some API versions return it).
    pub organization_name: Option<String>,
    /// Identifier of the connection.
    pub identifier: Option<String>,
    /// For OAuth vendors: where the vendor's consent is given.
    pub oauth2_authorize_url: Option<String>,
    /// PENDING, ACTIVE, PAUSED, DELETED or a value added later.
    pub state: Option<String>,
    /// Creation time as Leen wrote it.
    pub created_at: Option<String>,
    /// Last update time as Leen wrote it.
    pub updated_at: Option<String>,
    /// Health of the connection.
    pub health: Option<Health>,
}

/// `ConnectionHealthStatus`, read leniently.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Health {
    /// Health name.
    pub name: Option<String>,
    /// Health status.
    pub status: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Who resolves it.
    pub resolution_owner: Option<String>,
    /// Details; null and missing both read as empty.
    #[serde(deserialize_with = "null_as_empty")]
    pub details: Vec<HealthDetail>,
}

/// `ConnectionHealthUnauthorizedDetail`, read leniently.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct HealthDetail {
    /// Data export type.
    pub data_export_type: Option<String>,
    /// Endpoint.
    pub endpoint: Option<String>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// What one call to Leen came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeenOutcome {
    /// 2xx with a readable connection.
    Success(Box<Connection>),
    /// 404: Leen does not know the connection.
    NotFound {
        /// Leen's error detail.
        detail: String,
    },
    /// 401 or 403: the key is wrong, revoked, or for another region/organization.
    Unauthorized {
        /// The status code.
        status: u16,
        /// Leen's error detail.
        detail: String,
    },
    /// 422: Leen rejected the request as invalid.
    Rejected {
        /// The validation detail, one line.
        detail: String,
    },
    /// 429: too many requests.
    RateLimited {
        /// The `Retry-After` Leen sent, when it sent a readable one.
        retry_after: Option<Duration>,
    },
    /// 5xx, timeout or connection error: Leen could not be reached or failed.
    Unavailable {
        /// The status code, when Leen answered.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
    /// Leen answered with a body that could not be read as it must be.
    InvalidResponse {
        /// The status code.
        status: u16,
        /// What was wrong with it.
        error: String,
    },
    /// A status code the API does not document for this call (400, 405, 409, 3xx, ...).
    Unexpected {
        /// The status code.
        status: u16,
        /// Leen's error detail.
        detail: String,
    },
}

impl LeenOutcome {
    /// The HTTP status code of Leen's answer, when there was one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            LeenOutcome::Success(_) => Some(200),
            LeenOutcome::NotFound { .. } => Some(404),
            LeenOutcome::Unauthorized { status, .. }
            | LeenOutcome::InvalidResponse { status, .. }
            | LeenOutcome::Unexpected { status, .. } => Some(*status),
            LeenOutcome::Rejected { .. } => Some(422),
            LeenOutcome::RateLimited { .. } => Some(429),
            LeenOutcome::Unavailable { status, .. } => *status,
        }
    }

    fn map_text(self, f: impl Fn(String) -> String) -> Self {
        match self {
            LeenOutcome::NotFound { detail } => LeenOutcome::NotFound { detail: f(detail) },
            LeenOutcome::Unauthorized { status, detail } => LeenOutcome::Unauthorized {
                status,
                detail: f(detail),
            },
            LeenOutcome::Rejected { detail } => LeenOutcome::Rejected { detail: f(detail) },
            LeenOutcome::Unavailable { status, error } => LeenOutcome::Unavailable {
                status,
                error: f(error),
            },
            LeenOutcome::InvalidResponse { status, error } => LeenOutcome::InvalidResponse {
                status,
                error: f(error),
            },
            LeenOutcome::Unexpected { status, detail } => LeenOutcome::Unexpected {
                status,
                detail: f(detail),
            },
            other => other,
        }
    }
}

/// Why a response body could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The body is longer than [`MAX_BODY_BYTES`].
    TooLarge,
    /// The connection broke or timed out while reading.
    Read(String),
}

/// The connection a call is about: what a confirming answer must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The organization in the path.
    pub organization: Uuid,
    /// The connection in the path.
    pub connection: Uuid,
}

/// Classifies one answer of Leen about the `expected` connection. Pure: status,
/// `Retry-After` header and body in, outcome out.
///
/// Only two answers count as Leen's word about the connection (DESIGN.md, "What counts as
/// Leen's confirmation"): 200 with a connection whose `id` is the expected one (and whose
/// `organization_id`, when present, is the expected organization), and 404 with Leen's JSON
/// error body. Any other 2xx is [`LeenOutcome::InvalidResponse`]; any other 404 (an HTML page
/// from a proxy, a wrong base path) is [`LeenOutcome::Unexpected`].
pub fn classify(
    expected: Expected,
    status: u16,
    retry_after: Option<&str>,
    body: Result<&[u8], BodyError>,
) -> LeenOutcome {
    let what = format!("connection {}", expected.connection);
    classify_answer(status, retry_after, body, &[200], &what, |b| {
        parse_connection(b).and_then(|c| confirm(expected, c))
    })
    .map(|c| LeenOutcome::Success(Box::new(c)))
    .unwrap_or_else(|outcome| outcome)
}

/// Classifies one answer of Leen for any call: a status in `success` with a body that
/// `parse` accepts is `Ok`; everything else is the failure [`LeenOutcome`] the decisions
/// know (never `Success`). `what` names what a success must carry, for messages. The 404
/// rule is the same for every call: only Leen's JSON error body makes it a `NotFound`.
pub fn classify_answer<T>(
    status: u16,
    retry_after: Option<&str>,
    body: Result<&[u8], BodyError>,
    success: &[u16],
    what: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, LeenOutcome> {
    let body = match body {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return Err(LeenOutcome::InvalidResponse {
                status,
                error: format!("response body exceeds {MAX_BODY_BYTES} bytes"),
            });
        }
        Err(BodyError::Read(e)) if (200..300).contains(&status) => {
            return Err(LeenOutcome::Unavailable {
                status: Some(status),
                error: format!("reading the response body failed: {e}"),
            });
        }
        // For an error status the code alone decides; the detail is a nicety.
        Err(BodyError::Read(_)) => &[][..],
    };
    if success.contains(&status) {
        return parse(body).map_err(|error| LeenOutcome::InvalidResponse { status, error });
    }
    Err(match status {
        200..=299 => LeenOutcome::InvalidResponse {
            status,
            error: format!(
                "Leen answered {status}, not 200 with {what}: {}",
                snippet(body)
            ),
        },
        401 | 403 => LeenOutcome::Unauthorized {
            status,
            detail: error_detail(body),
        },
        404 => match leen_error_detail(body) {
            Some(detail) => LeenOutcome::NotFound { detail },
            None => LeenOutcome::Unexpected {
                status,
                detail: format!(
                    "a 404 without Leen's JSON error body proves nothing (a proxy's page or a wrong base path in LEEN_ENDPOINT?): {}",
                    snippet(body)
                ),
            },
        },
        422 => LeenOutcome::Rejected {
            detail: error_detail(body),
        },
        429 => LeenOutcome::RateLimited {
            retry_after: retry_after.and_then(parse_retry_after),
        },
        500..=599 => LeenOutcome::Unavailable {
            status: Some(status),
            error: format!("Leen answered {status}: {}", error_detail(body)),
        },
        _ => LeenOutcome::Unexpected {
            status,
            detail: error_detail(body),
        },
    })
}

/// A created connection: a connection body with a UUID `id` (and, when present, the
/// organization asked for).
pub fn parse_created(organization: Uuid, body: &[u8]) -> Result<Connection, String> {
    let conn = parse_connection(body)?;
    let id = conn
        .id
        .as_deref()
        .ok_or_else(|| "Leen answered the create without a connection id".to_string())?;
    if Uuid::parse_str(id).is_err() {
        return Err(format!(
            "Leen answered the create with connection id {:?}, which is not a UUID",
            clip(id)
        ));
    }
    if let Some(org) = conn.organization_id.as_deref()
        && Uuid::parse_str(org).ok() != Some(organization)
    {
        return Err(format!(
            "Leen answered the create with a connection of organization {}, not of {organization}",
            clip(org)
        ));
    }
    Ok(conn)
}

/// One page of the list: `{"items": [...], "total": n}` (also a bare array, or the items
/// under `data` or `connections`: the shape is not documented). Entries that are not
/// connections are skipped.
pub fn parse_list(body: &[u8]) -> Result<(Vec<Connection>, Option<u64>), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("list body is not JSON: {e}"))?;
    let (items, total) = match &value {
        Value::Array(items) => (items.clone(), None),
        Value::Object(map) => {
            let items = ["items", "data", "connections"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_array))
                .cloned()
                .ok_or_else(|| "list body has no items".to_string())?;
            (items, map.get("total").and_then(Value::as_u64))
        }
        _ => return Err("list body is neither an object nor an array".to_string()),
    };
    let connections = items
        .into_iter()
        .filter(Value::is_object)
        .filter_map(|v| serde_json::from_value::<Connection>(v).ok())
        .collect();
    Ok((connections, total))
}

/// The test's answer: `{"is_valid": bool, "message": str}`.
pub fn parse_check(body: &[u8]) -> Result<CredentialCheck, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("test body is not JSON: {e}"))?;
    let valid = value
        .get("is_valid")
        .and_then(Value::as_bool)
        .ok_or_else(|| "test body has no boolean is_valid".to_string())?;
    let message = value
        .get("message")
        .and_then(Value::as_str)
        .map(|m| truncate(m.split_whitespace().collect::<Vec<_>>().join(" ")));
    Ok(CredentialCheck { valid, message })
}

/// A 200's connection confirms the call only when it is the expected one.
fn confirm(expected: Expected, conn: Connection) -> Result<Connection, String> {
    let Some(id) = conn.id.as_deref() else {
        return Err(format!(
            "Leen answered 200 without a connection id, not connection {}",
            expected.connection
        ));
    };
    if Uuid::parse_str(id).ok() != Some(expected.connection) {
        return Err(format!(
            "Leen answered 200 about connection {}, not {}",
            clip(id),
            expected.connection
        ));
    }
    if let Some(org) = conn.organization_id.as_deref()
        && Uuid::parse_str(org).ok() != Some(expected.organization)
    {
        return Err(format!(
            "Leen answered 200 about connection {} of organization {}, not of {}",
            expected.connection,
            clip(org),
            expected.organization
        ));
    }
    Ok(conn)
}

/// Leen's error body: a JSON object with a non-null `detail`. Its one-line text.
fn leen_error_detail(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) if map.get("detail").is_some_and(|d| !d.is_null()) => {
            Some(error_detail(body))
        }
        _ => None,
    }
}

/// The start of a body, one line, for a message.
fn snippet(body: &[u8]) -> String {
    if body.is_empty() {
        return "empty body".to_string();
    }
    let text = String::from_utf8_lossy(body);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = line.chars().take(120).collect();
    if cut.len() < line.len() {
        format!("{cut}...")
    } else {
        cut
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Reads a `ConnectionRespModel` body.
pub fn parse_connection(body: &[u8]) -> Result<Connection, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("response body is not JSON: {e}"))?;
    if !value.is_object() {
        return Err("response body is not a JSON object".to_string());
    }
    serde_json::from_value(value).map_err(|e| format!("response body is not a connection: {e}"))
}

/// Turns an error body into one line: FastAPI's `{"detail": "..."}` or
/// `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`, else the raw text.
pub fn error_detail(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => match map.get("detail") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    let loc = item
                        .get("loc")
                        .and_then(Value::as_array)
                        .map(|parts| {
                            parts
                                .iter()
                                .map(|p| match p {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                })
                                .collect::<Vec<_>>()
                                .join(".")
                        })
                        .unwrap_or_default();
                    let msg = item.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                    if loc.is_empty() {
                        msg.to_string()
                    } else {
                        format!("{loc}: {msg}")
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            Some(other) => other.to_string(),
            None => Value::Object(map).to_string(),
        },
        Ok(other) => other.to_string(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    truncate(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn truncate(mut s: String) -> String {
    if s.chars().count() > MAX_DETAIL_CHARS {
        s = s.chars().take(MAX_DETAIL_CHARS).collect::<String>() + "...";
    }
    s
}

/// Reads `Retry-After` as seconds or an HTTP date; capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let after = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
        delta.to_std().unwrap_or(Duration::ZERO)
    };
    Some(after.min(MAX_RETRY_AFTER))
}

/// Settings of a [`LeenClient`].
#[derive(Clone, Debug)]
pub struct LeenClientConfig {
    /// Replaces every region's base URL (LEEN_ENDPOINT), including `/v1`.
    pub endpoint: Option<Url>,
    /// Timeout of one request, connect to last byte.
    pub request_timeout: Duration,
    /// Most requests to Leen in flight at once.
    pub max_in_flight: usize,
}

impl Default for LeenClientConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 16,
        }
    }
}

/// Calls Leen's connection endpoints. Cheap to clone.
#[derive(Clone)]
pub struct LeenClient {
    http: reqwest::Client,
    endpoint: Option<Url>,
    in_flight: Arc<Semaphore>,
    gate: RateGate,
    metrics: Arc<Metrics>,
}

/// Failure to build a [`LeenClient`].
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client for Leen failed: {0}")]
pub struct ClientBuildError(#[from] reqwest::Error);

impl LeenClient {
    /// Builds a client. Redirects are not followed, so the key is never sent elsewhere.
    pub fn new(config: LeenClientConfig, metrics: Arc<Metrics>) -> Result<Self, ClientBuildError> {
        let mut builder = reqwest::Client::builder();
        // A loopback endpoint (a local proxy, tests) is never reached through a proxy
        // from HTTP_PROXY/HTTPS_PROXY: that would send the key off the machine.
        if config.endpoint.as_ref().is_some_and(is_loopback) {
            builder = builder.no_proxy();
        }
        let http = builder
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("leen-operator/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            endpoint: config.endpoint,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            gate: RateGate::default(),
            metrics,
        })
    }

    /// The base URL of the given region (or the configured endpoint), including `/v1`.
    pub fn base_url(&self, region: Region) -> &str {
        self.endpoint
            .as_ref()
            .map(|u| u.as_str())
            .unwrap_or(region.base_url())
            .trim_end_matches('/')
    }

    /// The URL of the organization's connections in the given region (or at the
    /// configured endpoint).
    pub fn connections_url(&self, region: Region, organization: Uuid) -> String {
        format!(
            "{}/provisioning/organizations/{organization}/connections",
            self.base_url(region)
        )
    }

    /// The URL of one connection in the given region (or at the configured endpoint).
    pub fn connection_url(&self, region: Region, organization: Uuid, connection: Uuid) -> String {
        format!(
            "{}/{connection}",
            self.connections_url(region, organization)
        )
    }

    /// `GET` one connection (observe).
    pub async fn get_connection(
        &self,
        region: Region,
        organization: Uuid,
        connection: Uuid,
        key: &ApiKey,
    ) -> LeenOutcome {
        self.one(Operation::Get, region, organization, connection, key)
            .await
    }

    /// `DELETE` one connection.
    pub async fn delete_connection(
        &self,
        region: Region,
        organization: Uuid,
        connection: Uuid,
        key: &ApiKey,
    ) -> LeenOutcome {
        self.one(Operation::Delete, region, organization, connection, key)
            .await
    }

    /// A call without a body on one connection's URL.
    async fn one(
        &self,
        op: Operation,
        region: Region,
        organization: Uuid,
        connection: Uuid,
        key: &ApiKey,
    ) -> LeenOutcome {
        let url = self.connection_url(region, organization, connection);
        self.about(op, region, url, None, key, (organization, connection), &[])
            .await
    }

    /// `PATCH` one connection with the given fields (update).
    pub async fn update_connection(
        &self,
        region: Region,
        organization: Uuid,
        connection: Uuid,
        update: &UpdateRequest,
        key: &ApiKey,
    ) -> LeenOutcome {
        let url = self.connection_url(region, organization, connection);
        let secrets = update
            .credentials
            .as_ref()
            .map(|c| c.secrets())
            .unwrap_or_default();
        self.about(
            Operation::Update,
            region,
            url,
            Some(update.body()),
            key,
            (organization, connection),
            &secrets,
        )
        .await
    }

    /// `POST` a new connection (create). `Ok` only with a connection that has a UUID id.
    pub async fn create_connection(
        &self,
        region: Region,
        organization: Uuid,
        create: &CreateRequest,
        key: &ApiKey,
    ) -> Result<Connection, LeenOutcome> {
        let url = self.connections_url(region, organization);
        let secrets = create
            .credentials
            .as_ref()
            .map(|c| c.secrets())
            .unwrap_or_default();
        self.call_redacting(
            Operation::Create,
            region,
            url,
            Some(create.body()),
            key,
            &secrets,
            move |status, retry_after, body| {
                // 201 is what a REST API usually answers to a create; accept it as well.
                classify_answer(
                    status,
                    retry_after,
                    body,
                    &[200, 201],
                    "a connection",
                    |b| parse_created(organization, b),
                )
            },
        )
        .await
    }

    /// `GET .../test`: Leen's check of the connection's credentials.
    pub async fn test_connection(
        &self,
        region: Region,
        organization: Uuid,
        connection: Uuid,
        key: &ApiKey,
    ) -> Result<CredentialCheck, LeenOutcome> {
        let url = format!(
            "{}/test",
            self.connection_url(region, organization, connection)
        );
        self.call(
            Operation::Test,
            region,
            url,
            None,
            key,
            |status, retry_after, body| {
                classify_answer(
                    status,
                    retry_after,
                    body,
                    &[200],
                    "a test result",
                    parse_check,
                )
            },
        )
        .await
    }

    /// The organization's connection whose `identifier` is this one, looked up page by page
    /// in the list (at most [`MAX_LIST_PAGES`] pages of [`LIST_PAGE`]). A connection Leen
    /// reports DELETED does not count.
    pub async fn find_connection(
        &self,
        region: Region,
        organization: Uuid,
        identifier: &str,
        key: &ApiKey,
    ) -> Result<Option<Connection>, LeenOutcome> {
        let base = self.connections_url(region, organization);
        for page in 0..MAX_LIST_PAGES {
            let offset = page * LIST_PAGE;
            let url = Url::parse_with_params(
                &base,
                &[
                    ("limit", LIST_PAGE.to_string()),
                    ("offset", offset.to_string()),
                ],
            )
            .map(String::from)
            .unwrap_or_else(|_| base.clone());
            let (items, total) = self
                .call(
                    Operation::List,
                    region,
                    url,
                    None,
                    key,
                    |status, ra, body| {
                        classify_answer(
                            status,
                            ra,
                            body,
                            &[200],
                            "a list of connections",
                            parse_list,
                        )
                    },
                )
                .await?;
            let count = items.len() as u64;
            let found = items.into_iter().find(|c| {
                c.identifier.as_deref() == Some(identifier)
                    && c.state.as_deref() != Some("DELETED")
                    && c.id
                        .as_deref()
                        .is_some_and(|id| Uuid::parse_str(id).is_ok())
                    && c.organization_id
                        .as_deref()
                        .is_none_or(|o| Uuid::parse_str(o).ok() == Some(organization))
            });
            if found.is_some() {
                return Ok(found);
            }
            let seen = offset + count;
            if count < LIST_PAGE || total.is_some_and(|t| seen >= t) {
                return Ok(None);
            }
        }
        Err(LeenOutcome::Unexpected {
            status: 200,
            detail: format!(
                "the organization lists more than {} connections; identifier {identifier:?} was not among them",
                MAX_LIST_PAGES * LIST_PAGE
            ),
        })
    }

    /// A call about one known connection: its answer must name that connection.
    #[allow(clippy::too_many_arguments)]
    async fn about(
        &self,
        op: Operation,
        region: Region,
        url: String,
        body: Option<Value>,
        key: &ApiKey,
        (organization, connection): (Uuid, Uuid),
        secrets: &[String],
    ) -> LeenOutcome {
        let expected = Expected {
            organization,
            connection,
        };
        self.call_redacting(
            op,
            region,
            url,
            body,
            key,
            secrets,
            move |status, ra, body| match classify(expected, status, ra, body) {
                LeenOutcome::Success(c) => Ok(c),
                other => Err(other),
            },
        )
        .await
        .map(LeenOutcome::Success)
        .unwrap_or_else(|outcome| outcome)
    }

    /// The one place every request goes through: the 429 gate, the in-flight limit, the
    /// key header, redaction, metrics.
    async fn call<T>(
        &self,
        op: Operation,
        region: Region,
        url: String,
        body: Option<Value>,
        key: &ApiKey,
        classify: impl FnOnce(u16, Option<&str>, Result<&[u8], BodyError>) -> Result<T, LeenOutcome>,
    ) -> Result<T, LeenOutcome> {
        self.call_redacting(op, region, url, body, key, &[], classify)
            .await
    }

    /// [`Self::call`], also redacting these values (credentials sent) from the answer.
    #[allow(clippy::too_many_arguments)]
    async fn call_redacting<T>(
        &self,
        op: Operation,
        region: Region,
        url: String,
        body: Option<Value>,
        key: &ApiKey,
        secrets: &[String],
        classify: impl FnOnce(u16, Option<&str>, Result<&[u8], BodyError>) -> Result<T, LeenOutcome>,
    ) -> Result<T, LeenOutcome> {
        let limit = LimitKey::new(self.base_url(region), key.expose());
        let admission = self.gate.admit(limit);
        if let Admission::Wait(rest) = admission {
            // Another call of this limit was answered 429: this one is not sent at all.
            self.metrics.leen_request_held(op);
            // Spread over half the pause again, so that the held calls do not all come
            // back in the same instant (the probe goes first in any case).
            let spread = rest.mul_f64(rand::random::<f64>() * 0.5);
            return Err(LeenOutcome::RateLimited {
                retry_after: Some(rest + spread),
            });
        }
        // The semaphore is never closed, so acquire cannot fail; if it ever did, going on
        // without a permit is the lesser harm.
        let _permit = self.in_flight.acquire().await.ok();
        let started = std::time::Instant::now();
        let (status, result) = self.send(op, &url, body, key, secrets, classify).await;
        // Transport errors could quote what the server sent; the key must not reach status.
        let result = result.map_err(|o| {
            o.map_text(|mut text| {
                for secret in
                    std::iter::once(key.expose()).chain(secrets.iter().map(String::as_str))
                {
                    text = text.replace(secret, REDACTED);
                }
                text
            })
        });
        self.metrics
            .observe_leen_request(op, status, started.elapsed());
        let retry_after = match &result {
            Err(LeenOutcome::RateLimited { retry_after }) => Some(*retry_after),
            _ => None,
        };
        self.gate.report(
            limit,
            admission,
            retry_after.is_some(),
            retry_after.flatten(),
            rand::random::<f64>(),
        );
        result
    }

    async fn send<T>(
        &self,
        op: Operation,
        url: &str,
        body: Option<Value>,
        key: &ApiKey,
        secrets: &[String],
        classify: impl FnOnce(u16, Option<&str>, Result<&[u8], BodyError>) -> Result<T, LeenOutcome>,
    ) -> (Option<u16>, Result<T, LeenOutcome>) {
        // ApiKey::new admits only keys that are valid header values.
        let Ok(mut header) = HeaderValue::from_str(key.expose()) else {
            return (
                None,
                Err(LeenOutcome::Unavailable {
                    status: None,
                    error: "the API key cannot be sent in a header".to_string(),
                }),
            );
        };
        header.set_sensitive(true);
        let mut request = self
            .http
            .request(op.method(), url)
            .header("X-API-KEY", header)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return (
                    None,
                    Err(LeenOutcome::Unavailable {
                        status: None,
                        error: describe_transport_error(&e),
                    }),
                );
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // A hostile or buggy server could echo the key back: redact it in the raw body,
        // before any normalisation or truncation could split it.
        let body = read_bounded(&mut response).await.map(|b| {
            secrets
                .iter()
                .fold(redact(b, key.expose().as_bytes()), |b, s| {
                    redact(b, s.as_bytes())
                })
        });
        let result = classify(
            status.as_u16(),
            retry_after.as_deref(),
            body.as_ref().map(Vec::as_slice).map_err(Clone::clone),
        );
        (Some(status.as_u16()), result)
    }
}

/// Connections asked for per page of the list.
pub const LIST_PAGE: u64 = 100;

/// Most pages of the list read when looking for an identifier.
pub const MAX_LIST_PAGES: u64 = 100;

/// What replaces the API key wherever a server echoed it.
pub const REDACTED: &str = "<redacted>";

/// Replaces every occurrence of `secret` in `body` with [`REDACTED`].
pub fn redact(body: Vec<u8>, secret: &[u8]) -> Vec<u8> {
    if secret.is_empty() || body.len() < secret.len() {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(secret) {
            out.extend_from_slice(REDACTED.as_bytes());
            i += secret.len();
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    out
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

async fn read_bounded(response: &mut reqwest::Response) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY_BYTES as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(BodyError::Read(describe_transport_error(&e))),
        }
    }
}

fn describe_transport_error(e: &reqwest::Error) -> String {
    // reqwest's Display names the URL; the source chain says what actually happened.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the body failed"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED: Expected = Expected {
        organization: Uuid::from_u128(0x6f1c2d4e_0000_4000_8000_000000000001),
        connection: Uuid::from_u128(0x0b9e7a52_0000_4000_8000_000000000002),
    };

    #[test]
    fn api_key_never_prints() {
        let key = ApiKey::new("s3cr3t-key\n").expect("non-empty");
        assert_eq!(key.expose(), "s3cr3t-key");
        assert!(!format!("{key:?} {key} {key:#?}").contains("s3cr3t"));
        assert_eq!(ApiKey::new("  \n"), Err(KeyError::Empty));
        assert_eq!(ApiKey::new("a\u{7}b"), Err(KeyError::NotAHeaderValue));
    }

    #[test]
    fn classifies_every_status_class() {
        let conn = br#"{"id":"0b9e7a52-0000-4000-8000-000000000002","state":"DELETED","health":{"name":"HEALTHY","status":"HEALTHY","description":"ok","resolution_owner":"LEEN","details":null}}"#;
        match classify(EXPECTED, 200, None, Ok(conn)) {
            LeenOutcome::Success(c) => {
                assert_eq!(c.state.as_deref(), Some("DELETED"));
                assert!(c.health.expect("health").details.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            classify(
                EXPECTED,
                404,
                None,
                Ok(br#"{"detail":"Connection Not Found"}"#)
            ),
            LeenOutcome::NotFound {
                detail: "Connection Not Found".into()
            }
        );
        assert!(matches!(
            classify(EXPECTED, 403, None, Ok(b"")),
            LeenOutcome::Unauthorized { status: 403, .. }
        ));
        assert_eq!(
            classify(EXPECTED,
                422,
                None,
                Ok(br#"{"detail":[{"loc":["path","connection_id"],"msg":"value is not a valid uuid","type":"type_error.uuid"}]}"#)
            ),
            LeenOutcome::Rejected {
                detail: "path.connection_id: value is not a valid uuid".into()
            }
        );
        assert_eq!(
            classify(EXPECTED, 429, Some("7"), Ok(b"")),
            LeenOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify(EXPECTED, 429, Some("soon"), Ok(b"")),
            LeenOutcome::RateLimited { retry_after: None }
        );
        assert!(matches!(
            classify(EXPECTED, 503, None, Ok(b"<html>down</html>")),
            LeenOutcome::Unavailable {
                status: Some(503),
                ..
            }
        ));
        assert!(matches!(
            classify(EXPECTED, 200, None, Ok(b"{not json")),
            LeenOutcome::InvalidResponse { status: 200, .. }
        ));
        assert!(matches!(
            classify(EXPECTED, 200, None, Ok(b"[1,2]")),
            LeenOutcome::InvalidResponse { status: 200, .. }
        ));
        assert!(matches!(
            classify(EXPECTED, 200, None, Err(BodyError::TooLarge)),
            LeenOutcome::InvalidResponse { status: 200, .. }
        ));
        assert!(matches!(
            classify(EXPECTED, 409, None, Ok(b"conflict")),
            LeenOutcome::Unexpected { status: 409, .. }
        ));
    }

    #[test]
    fn only_the_expected_connection_confirms() {
        let ok = br#"{"id":"0B9E7A52-0000-4000-8000-000000000002","organization_id":"6f1c2d4e-0000-4000-8000-000000000001"}"#;
        assert!(matches!(
            classify(EXPECTED, 200, None, Ok(ok)),
            LeenOutcome::Success(_)
        ));
        for (status, body, says) in [
            (200, &b"{}"[..], "without a connection id"),
            (200, br#"{"id":"0b9e7a52-0000-4000-8000-000000000003"}"#, "about connection 0b9e7a52-0000-4000-8000-000000000003, not 0b9e7a52-0000-4000-8000-000000000002"),
            (200, br#"{"id":"0b9e7a52-0000-4000-8000-000000000002","organization_id":"6f1c2d4e-0000-4000-8000-000000000009"}"#, "of organization 6f1c2d4e-0000-4000-8000-000000000009"),
            (200, b"[]", "not a JSON object"),
            (202, br#"{"detail":"scheduled"}"#, "Leen answered 202, not 200"),
            (204, b"", "Leen answered 204, not 200"),
        ] {
            match classify(EXPECTED, status, None, Ok(body)) {
                LeenOutcome::InvalidResponse { error, .. } => assert!(error.contains(says), "{error}"),
                other => panic!("{status} {body:?}: {other:?}"),
            }
        }
        assert!(matches!(
            classify(EXPECTED, 404, None, Ok(b"<html>404 Not Found</html>")),
            LeenOutcome::Unexpected { status: 404, .. }
        ));
        assert!(matches!(
            classify(EXPECTED, 404, None, Ok(br#"{"detail":null}"#)),
            LeenOutcome::Unexpected { status: 404, .. }
        ));
    }

    #[test]
    fn redaction_happens_on_the_raw_body() {
        let body = b"{\"detail\": \"bad key s3cr3t   k3y\"}".to_vec();
        let out = redact(body, b"s3cr3t   k3y");
        assert_eq!(out, b"{\"detail\": \"bad key <redacted>\"}".to_vec());
    }

    #[test]
    fn unknown_enum_values_and_extra_fields_are_data() {
        let body = br#"{"state":"ARCHIVED","future_field":{"x":1},"vendor":null,
            "health":{"name":"SOMETHING_NEW","status":"DEGRADED","resolution_owner":"PARTNER",
            "details":[{"data_export_type":"quantum_findings","endpoint":"/v2/x"}]}}"#;
        let c = parse_connection(body).expect("lenient parse");
        assert_eq!(c.state.as_deref(), Some("ARCHIVED"));
        let h = c.health.expect("health");
        assert_eq!(h.name.as_deref(), Some("SOMETHING_NEW"));
        assert_eq!(
            h.details[0].data_export_type.as_deref(),
            Some("quantum_findings")
        );
    }

    #[test]
    fn wrong_types_are_invalid_not_panics() {
        assert!(parse_connection(br#"{"state": 7}"#).is_err());
        assert!(parse_connection(br#"{"health": "ok"}"#).is_err());
    }

    #[test]
    fn retry_after_is_capped_and_reads_dates() {
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
    }
}
