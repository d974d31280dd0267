//! Client for the Leen provisioning API: GET and DELETE of one connection, each answer
//! classified into a [`LeenOutcome`].

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

/// Which call to Leen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `GET .../connections/{id}`
    Get,
    /// `DELETE .../connections/{id}`
    Delete,
}

impl Operation {
    /// Lower-case name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Delete => "delete",
        }
    }

    fn method(self) -> Method {
        match self {
            Operation::Get => Method::GET,
            Operation::Delete => Method::DELETE,
        }
    }
}

/// A connection as Leen returns it (`ConnectionRespModel`), read leniently: every field may
/// be missing or null, unknown fields are ignored and enum values are kept as strings, so
/// that a value Leen adds later is data, not an error.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Connection {
    /// Connection UUID.
    #[serde(default)]
    pub id: Option<String>,
    /// Vendor name.
    #[serde(default)]
    pub vendor: Option<String>,
    /// Whether the connection is active.
    #[serde(default)]
    pub is_active: Option<bool>,
    /// Refresh interval in seconds.
    #[serde(default)]
    pub refresh_interval_secs: Option<i64>,
    /// Vendor call timeout in seconds.
    #[serde(default)]
    pub timeout_secs: Option<i64>,
    /// Organization UUID.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// Organization name (only some API versions return it).
    #[serde(default)]
    pub organization_name: Option<String>,
    /// Identifier of the connection.
    #[serde(default)]
    pub identifier: Option<String>,
    /// PENDING, ACTIVE, PAUSED, DELETED or a value added later.
    #[serde(default)]
    pub state: Option<String>,
    /// Creation time as Leen wrote it.
    #[serde(default)]
    pub created_at: Option<String>,
    /// Last update time as Leen wrote it.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Health of the connection.
    #[serde(default)]
    pub health: Option<Health>,
}

/// `ConnectionHealthStatus`, read leniently.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Health name.
    #[serde(default)]
    pub name: Option<String>,
    /// Health status.
    #[serde(default)]
    pub status: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Who resolves it.
    #[serde(default)]
    pub resolution_owner: Option<String>,
    /// Details; null and missing both read as empty.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub details: Vec<HealthDetail>,
}

/// `ConnectionHealthUnauthorizedDetail`, read leniently.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthDetail {
    /// Data export type.
    #[serde(default)]
    pub data_export_type: Option<String>,
    /// Endpoint.
    #[serde(default)]
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
    let body = match body {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return LeenOutcome::InvalidResponse {
                status,
                error: format!("response body exceeds {MAX_BODY_BYTES} bytes"),
            };
        }
        Err(BodyError::Read(e)) if (200..300).contains(&status) => {
            return LeenOutcome::Unavailable {
                status: Some(status),
                error: format!("reading the response body failed: {e}"),
            };
        }
        // For an error status the code alone decides; the detail is a nicety.
        Err(BodyError::Read(_)) => &[][..],
    };
    match status {
        200 => parse_connection(body)
            .and_then(|c| confirm(expected, c))
            .map(|c| LeenOutcome::Success(Box::new(c)))
            .unwrap_or_else(|error| LeenOutcome::InvalidResponse { status, error }),
        201..=299 => LeenOutcome::InvalidResponse {
            status,
            error: format!(
                "Leen answered {status}, not 200 with connection {}: {}",
                expected.connection,
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
    }
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

    /// The URL of one connection in the given region (or at the configured endpoint).
    pub fn connection_url(&self, region: Region, organization: Uuid, connection: Uuid) -> String {
        format!(
            "{}/provisioning/organizations/{organization}/connections/{connection}",
            self.base_url(region)
        )
    }

    /// `GET` one connection.
    pub async fn get_connection(
        &self,
        region: Region,
        organization: Uuid,
        connection: Uuid,
        key: &ApiKey,
    ) -> LeenOutcome {
        self.call(Operation::Get, region, organization, connection, key)
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
        self.call(Operation::Delete, region, organization, connection, key)
            .await
    }

    async fn call(
        &self,
        op: Operation,
        region: Region,
        organization: Uuid,
        connection: Uuid,
        key: &ApiKey,
    ) -> LeenOutcome {
        let limit = LimitKey::new(self.base_url(region), key.expose());
        let admission = self.gate.admit(limit);
        if let Admission::Wait(rest) = admission {
            // Another call of this limit was answered 429: this one is not sent at all.
            self.metrics.leen_request_held(op);
            // Spread over half the pause again, so that the held calls do not all come
            // back in the same instant (the probe goes first in any case).
            let spread = rest.mul_f64(rand::random::<f64>() * 0.5);
            return LeenOutcome::RateLimited {
                retry_after: Some(rest + spread),
            };
        }
        // The semaphore is never closed, so acquire cannot fail; if it ever did, going on
        // without a permit is the lesser harm.
        let _permit = self.in_flight.acquire().await.ok();
        let started = std::time::Instant::now();
        let url = self.connection_url(region, organization, connection);
        let expected = Expected {
            organization,
            connection,
        };
        let outcome = self.send(op, &url, key, expected).await;
        // Transport errors could quote what the server sent; the key must not reach status.
        let outcome = outcome.map_text(|s| s.replace(key.expose(), REDACTED));
        self.metrics
            .observe_leen_request(op, outcome.http_status(), started.elapsed());
        let retry_after = match &outcome {
            LeenOutcome::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        };
        self.gate.report(
            limit,
            admission,
            retry_after.is_some(),
            retry_after.flatten(),
            rand::random::<f64>(),
        );
        outcome
    }

    async fn send(
        &self,
        op: Operation,
        url: &str,
        key: &ApiKey,
        expected: Expected,
    ) -> LeenOutcome {
        // ApiKey::new admits only keys that are valid header values.
        let Ok(mut header) = HeaderValue::from_str(key.expose()) else {
            return LeenOutcome::Unavailable {
                status: None,
                error: "the API key cannot be sent in a header".to_string(),
            };
        };
        header.set_sensitive(true);
        let request = self
            .http
            .request(op.method(), url)
            .header("X-API-KEY", header)
            .header(reqwest::header::ACCEPT, "application/json");
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return LeenOutcome::Unavailable {
                    status: None,
                    error: describe_transport_error(&e),
                };
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
        let body = read_bounded(&mut response)
            .await
            .map(|b| redact(b, key.expose().as_bytes()));
        classify(
            expected,
            status.as_u16(),
            retry_after.as_deref(),
            body.as_ref().map(Vec::as_slice).map_err(Clone::clone),
        )
    }
}

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
