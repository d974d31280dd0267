//! What goes over the wire to Leen and back: the API key, the requests, the connection
//! Leen returns, and the kind of each call.

use std::fmt;

use reqwest::{Method, header::HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use uuid::Uuid;

use crate::resource::Region;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter)]
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
    /// `GET /provisioning/organizations/{id}`
    Organization,
}

impl Operation {
    /// Lower-case name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub(crate) fn method(self) -> Method {
        match self {
            Operation::Get | Operation::Test | Operation::List | Operation::Organization => {
                Method::GET
            }
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
    pub(crate) fn body(&self) -> Value {
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
    pub(crate) fn body(&self) -> Value {
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

/// An organization as Leen returns it (`GET /provisioning/organizations/{id}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    /// Its id (checked to be the one asked for).
    pub id: Uuid,
    /// Its name, when Leen gave one.
    pub name: Option<String>,
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

/// The region and ids of one connection in Leen: what a resource is bound to and acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Binding {
    /// Leen region.
    pub region: Region,
    /// Organization UUID.
    pub organization: Uuid,
    /// Connection UUID.
    pub connection: Uuid,
}
