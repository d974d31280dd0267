//! Classification of Leen's answers, pure: status, `Retry-After` and body in, the call's
//! own type or the [`LeenOutcome`] the decisions know out. Also the redaction of secrets
//! from what a server sent back.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::wire::{Connection, CredentialCheck, Organization};
use crate::text::clip;

/// Largest Leen response body the client reads; a longer one is cut there and reported as
/// an invalid response. A connection is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest `Retry-After` the client honours; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Longest error detail from Leen kept for status and Events.
const MAX_DETAIL_CHARS: usize = 512;

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

    /// Whether Leen may have carried the call out although this is not its success: no
    /// answer, a 5xx, a 3xx, or a 2xx that could not be read. A refusal (401/403, 404,
    /// 422, 429, another 4xx) means it did not.
    pub fn may_have_acted(&self) -> bool {
        match self {
            LeenOutcome::Success(_)
            | LeenOutcome::Unavailable { .. }
            | LeenOutcome::InvalidResponse { .. } => true,
            LeenOutcome::Unexpected { status, .. } => !(400..500).contains(status),
            LeenOutcome::NotFound { .. }
            | LeenOutcome::Unauthorized { .. }
            | LeenOutcome::Rejected { .. }
            | LeenOutcome::RateLimited { .. } => false,
        }
    }

    /// The `Retry-After` of a 429, when Leen sent a readable one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LeenOutcome::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn map_text(self, f: impl Fn(String) -> String) -> Self {
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

/// An organization's answer: a JSON object whose `id` is the organization asked for.
pub fn parse_organization(organization: Uuid, body: &[u8]) -> Result<Organization, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON ({e}): {}", snippet(body)))?;
    let Some(object) = value.as_object() else {
        return Err(format!("not a JSON object: {}", snippet(body)));
    };
    let id = object.get("id").and_then(Value::as_str).unwrap_or_default();
    match Uuid::parse_str(id) {
        Ok(id) if id == organization => Ok(Organization {
            id,
            name: object.get("name").and_then(Value::as_str).map(clip),
        }),
        _ => Err(format!(
            "Leen answered for organization {:?}, not {organization}",
            clip(id)
        )),
    }
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
    parse_page(body).map(|page| (page.items, page.total))
}

/// One page of a list of connections, as Leen answered it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListPage {
    /// The connections on the page (entries that are not connections are skipped).
    pub items: Vec<Connection>,
    /// How many there are in all, when the answer says.
    pub total: Option<u64>,
    /// The cursor pagination's `next_cursor`: `None` when the answer has no such field
    /// (Leen paged by offset), `Some(None)` on the last page (`null` or empty).
    pub next_cursor: Option<Option<String>>,
}

/// A page of a list: `{"items": [...], "total": n}` (offsets) or `{"items": [...],
/// "next_cursor": c}` (cursors; also `data` or `connections` for the items), or a bare
/// array.
pub fn parse_page(body: &[u8]) -> Result<ListPage, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("list body is not JSON: {e}"))?;
    let (items, total, next_cursor) = match &value {
        Value::Array(items) => (items.clone(), None, None),
        Value::Object(map) => {
            let items = ["items", "data", "connections"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_array))
                .cloned()
                .ok_or_else(|| "list body has no items".to_string())?;
            // At the top, as Leen documents; or in a paging object beside the items.
            let cursor = map.get("next_cursor").or_else(|| {
                ["pagination", "meta", "page_info"]
                    .iter()
                    .find_map(|k| map.get(*k).and_then(|p| p.get("next_cursor")))
            });
            let next_cursor = match cursor {
                None => None,
                Some(Value::Null) => Some(None),
                Some(Value::String(c)) if c.is_empty() => Some(None),
                Some(Value::String(c)) => Some(Some(c.clone())),
                Some(other) => {
                    return Err(format!(
                        "list body's next_cursor is neither a string nor null: {}",
                        snippet(other.to_string().as_bytes())
                    ));
                }
            };
            (items, map.get("total").and_then(Value::as_u64), next_cursor)
        }
        _ => return Err("list body is neither an object nor an array".to_string()),
    };
    let items = items
        .into_iter()
        .filter(Value::is_object)
        .filter_map(|v| serde_json::from_value::<Connection>(v).ok())
        .collect();
    Ok(ListPage {
        items,
        total,
        next_cursor,
    })
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
