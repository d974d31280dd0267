//! The `LeenConnection` custom resource: spec, status and the CRD they generate.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Finalizer the controller puts on every `LeenConnection`.
pub const FINALIZER: &str = "leen.dev/delete-connection";

/// Finalizer the controller puts on a key Secret while a `Delete` resource needs it, so
/// that a prune or `helm uninstall` that takes the Secret along cannot strand a deletion.
pub const SECRET_FINALIZER: &str = "leen.dev/secret-in-use";

/// Labels the controller sets on every resource it has bound: the region, organization
/// and connection. They let the controller answer "does another resource bind this
/// connection?" from its metadata cache, and let people ask the same with `kubectl -l`.
pub const REGION_LABEL: &str = "leen.dev/region";
/// See [`REGION_LABEL`].
pub const ORGANIZATION_LABEL: &str = "leen.dev/organization-id";
/// See [`REGION_LABEL`].
pub const CONNECTION_LABEL: &str = "leen.dev/connection-id";

/// Annotation the controller sets on a `Delete` resource that reads its key from a Secret:
/// the Secret's name. It tells the Secret's protection which resources need it.
pub const KEY_SECRET_ANNOTATION: &str = "leen.dev/api-key-secret";

/// Annotation by which a person confirms a deletion the budget held: `"true"`.
pub const CONFIRM_DELETION_ANNOTATION: &str = "leen.dev/confirm-deletion";

/// Annotation by which a person pauses the operator's work on one resource: `"true"`.
/// While paused, no call goes to Leen and only the conditions say so (`ReconcilePaused`).
pub const PAUSED_ANNOTATION: &str = "leen.dev/paused";

/// The shortest `spec.syncInterval` a resource may ask for.
pub const MIN_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// A Go-style duration such as 30s, 5m or 1h30m (what `spec.syncInterval` takes).
pub const DURATION_PATTERN: &str = "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$";

/// Condition: the connection exists in Leen and is what the spec asks.
pub const READY_CONDITION: &str = "Ready";
/// Condition: Leen's health of the connection.
pub const HEALTHY_CONDITION: &str = "Healthy";
/// kstatus condition: the controller is still working towards the spec.
pub const RECONCILING_CONDITION: &str = "Reconciling";
/// kstatus condition: the controller cannot make progress without a person.
pub const STALLED_CONDITION: &str = "Stalled";

/// DNS-1123 subdomain: the names Kubernetes objects such as Secrets may have.
pub const DNS1123_SUBDOMAIN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Whether `name` is a DNS-1123 subdomain of at most 253 characters.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

/// Leen vendor names: upper case, digits and underscores.
pub const VENDOR_PATTERN: &str = "^[A-Z][A-Z0-9_]*$";

/// Default key of an API key Secret.
pub const DEFAULT_API_KEY_KEY: &str = "apiKey";

/// The one Secret key that holds the whole credentials object as JSON.
pub const CREDENTIALS_JSON_KEY: &str = "credentials.json";

/// Condition: result of Leen's test of the credentials last sent.
pub const CREDENTIALS_VALID_CONDITION: &str = "CredentialsValid";

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Desired state of a LeenConnection: which Leen connection this resource stands for,
/// where it lives and what happens to it when the resource is deleted.
// One printcolumn(...) per column is kube's syntax, not a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "leen.dev",
    version = "v1alpha1",
    kind = "LeenConnection",
    plural = "leenconnections",
    singular = "leenconnection",
    namespaced,
    shortname = "leenconn",
    category = "leen",
    status = "LeenConnectionStatus",
    doc = "A connection between a Leen organization and one security vendor, managed from Kubernetes. Deleting the resource deletes the connection in Leen unless deletionPolicy is Orphan.",
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "Connection state as Leen last returned it"
    ),
    printcolumn(
        name = "Health",
        type_ = "string",
        json_path = ".status.health.status",
        description = "Connection health as Leen last returned it"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the connection was read from Leen and is not deleted"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1,
        description = "Reason of the Ready condition"
    ),
    printcolumn(
        name = "Policy",
        type_ = "string",
        json_path = ".spec.managementPolicy",
        description = "Full: the operator manages the connection; Observe: it only reads it"
    ),
    printcolumn(
        name = "Paused",
        type_ = "string",
        json_path = ".metadata.annotations.leen\\.dev/paused",
        priority = 1,
        description = "Whether the annotation leen.dev/paused stops the operator's work on it"
    ),
    printcolumn(
        name = "Vendor",
        type_ = "string",
        json_path = ".status.vendor",
        description = "Vendor of the connection"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
// The same rules as the first and third CEL rules, as plain OpenAPI, for API servers
// before CEL.
#[schemars(extend("allOf" = [
    {"anyOf": [{"required": ["connectionId"]}, {"required": ["vendor"]}]},
    {"anyOf": [{"required": ["organizationId"]}, {"required": ["organizationRef"]}]}
]))]
#[x_kube(validation = Rule::new("has(self.connectionId) || has(self.vendor)").message("vendor is required when connectionId is unset (the operator creates the connection)"))]
#[x_kube(validation = Rule::new("!has(oldSelf.connectionId) || has(self.connectionId)").message("connectionId cannot be removed once set"))]
#[x_kube(validation = Rule::new("has(self.organizationId) || has(self.organizationRef)").message("organizationId or organizationRef is required"))]
#[x_kube(validation = Rule::new("!has(self.organizationId) || !has(self.organizationRef)").message("organizationRef names the organization: remove organizationId"))]
#[x_kube(validation = Rule::new("!has(self.apiKeySecretRef) || !has(self.organizationRef)").message("organizationRef brings the API key: remove apiKeySecretRef"))]
pub struct LeenConnectionSpec {
    /// UUID of the Leen organization that owns the connection. Immutable. Required unless
    /// spec.organizationRef names an organization resource, which brings it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("format" = "uuid", "pattern" = UUID_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("organizationId is immutable"))]
    pub organization_id: String,

    /// The organization resource whose organization id, region and API key this
    /// connection uses, instead of organizationId, region and apiKeySecretRef: a
    /// LeenOrganization in this namespace, or a ClusterLeenOrganization that selects this
    /// namespace. The binding rules apply to the organization it resolves to: a
    /// connection bound to one organization stays bound to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_ref: Option<crate::organization::OrganizationRef>,

    /// UUID of the Leen connection this resource stands for: set, the resource adopts that
    /// existing connection; unset, the operator creates one from vendor, credentials,
    /// identifier and options, and records its id in status.connectionId. Immutable once
    /// set (it may be set later only to the id the resource was bound to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uuid", "pattern" = UUID_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("connectionId is immutable"))]
    pub connection_id: Option<String>,

    /// Leen vendor name (e.g. CROWDSTRIKE_SPOTLIGHT, TENABLE, QUALYS, MS_DEFENDER_VMS).
    /// Required when the operator creates the connection (connectionId unset); not an
    /// enum, since Leen keeps adding vendors: Leen judges it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = VENDOR_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("vendor is immutable"))]
    pub vendor: Option<String>,

    /// Secret in the resource's own namespace holding the vendor credentials, labelled
    /// leen.dev/secret-type=credentials. Each data
    /// key becomes credentials.<key>; or one key credentials.json holds the whole
    /// credentials object (nested shapes such as AWS). Sent when the connection is
    /// created and again (PATCH) whenever the Secret changes, then tested; the result is
    /// the CredentialsValid condition. Unset: no credentials (OAuth vendors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,

    /// Leen's identifier of the connection: the caller's own reference, by which a
    /// connection whose create answer was lost is found again. Default when creating:
    /// <namespace>/<name>/<uid of this resource>, stable and unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub identifier: Option<String>,

    /// Vendor options sent when creating the connection (e.g. oauth2_redirect_urls,
    /// init_load_timestamp, auth_type): free-form, not secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub options: Option<serde_json::Value>,

    /// State the connection should be in: Active or Paused, enforced with PATCH (a
    /// connection paused or resumed in the Leen console is set back, with an Event).
    /// Unset: the operator does not manage the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DesiredState>,

    /// Leen region that hosts the organization: us (https://api.leen.dev/v1),
    /// eu (https://api.eu-c1.leen.dev/v1) or apac (https://api.ap-se2.leen.dev/v1).
    /// The operator's LEEN_ENDPOINT setting, when given, replaces every region's URL.
    /// Immutable: a resource is bound to its region as to its ids. Unset: us, or with
    /// spec.organizationRef the organization's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("region is immutable"))]
    pub region: Option<Region>,

    /// Secret in the resource's own namespace that holds the Leen API key, labelled
    /// leen.dev/secret-type=api-key. When absent, the operator's default key
    /// (LEEN_API_KEY) is used where the operator allows it (LEEN_DEFAULT_KEY_NAMESPACES).
    /// Not with spec.organizationRef, which brings the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<ApiKeySecretRef>,

    /// What deleting this resource does to the Leen connection: Delete calls Leen's
    /// delete endpoint before the resource goes away; Orphan leaves the connection in
    /// Leen untouched. Editable while the resource is being deleted: setting Orphan
    /// releases a deletion that Leen keeps refusing.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// How much the operator does with the connection. Full (default): it creates,
    /// updates and deletes it as the spec says. Observe: it only reads and mirrors it;
    /// it never sends POST, PATCH or DELETE, and deleting the resource leaves the
    /// connection in Leen (whatever deletionPolicy says). Switching to Full is a spec edit
    /// that takes effect at once.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// How often this connection is read again from Leen, as a duration such as 30s, 2m
    /// or 1h (at least 5s: each read is a call to Leen). Unset: the operator's
    /// LEEN_SYNC_INTERVAL (5m by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('5s')").message("syncInterval must be at least 5s"))]
    pub sync_interval: Option<String>,
}

/// How much the operator does with a connection.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ManagementPolicy {
    /// Create, update and delete the connection as the spec says.
    #[default]
    Full,
    /// Read and mirror only: never POST, PATCH or DELETE; deleting the resource releases
    /// it without a call.
    Observe,
}

impl LeenConnection {
    /// The region the spec says: spec.region, us when unset.
    pub fn region(&self) -> Region {
        self.spec.region.unwrap_or_default()
    }

    /// Whether `leen.dev/paused` is `"true"`.
    pub fn paused(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PAUSED_ANNOTATION))
            .is_some_and(|v| v.trim() == "true")
    }

    /// Whether the operator only observes the connection (`managementPolicy: Observe`).
    pub fn observe_only(&self) -> bool {
        self.spec.management_policy == ManagementPolicy::Observe
    }

    /// Whether deleting the resource calls Leen (so needs the API key then): `Delete`
    /// under full management.
    pub fn deletes_in_leen(&self) -> bool {
        self.spec.deletion_policy == DeletionPolicy::Delete && !self.observe_only()
    }

    /// `spec.syncInterval`, parsed: `None` when unset, `Err` (what is wrong) when it is not
    /// a duration of at least [`MIN_SYNC_INTERVAL`].
    pub fn sync_interval(&self) -> Option<Result<std::time::Duration, String>> {
        let value = self.spec.sync_interval.as_deref()?;
        Some(match parse_go_duration(value) {
            Some(d) if d >= MIN_SYNC_INTERVAL => Ok(d),
            Some(_) => Err(format!(
                "spec.syncInterval {value:?} is shorter than {}",
                humantime::format_duration(MIN_SYNC_INTERVAL)
            )),
            None => Err(format!(
                "spec.syncInterval {:?} is not a duration such as 30s, 2m or 1h",
                value.chars().take(40).collect::<String>()
            )),
        })
    }
}

/// A Go-style duration (`1h30m`, `45s`, `1.5h`, `250ms`): what CEL's `duration()` takes.
pub fn parse_go_duration(value: &str) -> Option<std::time::Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        // No digits at all leaves "" here, which is no number.
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, seconds) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
            .into_iter()
            .find(|(u, _)| rest.starts_with(u))?;
        rest = &rest[unit.len()..];
        total += number * seconds;
    }
    // Under 10^9 s (31 years): also no infinity from a number too long for an f64.
    (total < 1e9).then(|| std::time::Duration::from_secs_f64(total))
}

/// Leen region hosting the organization.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// United States: https://api.leen.dev/v1
    #[default]
    Us,
    /// Europe: https://api.eu-c1.leen.dev/v1
    Eu,
    /// Asia-Pacific: https://api.ap-se2.leen.dev/v1
    Apac,
}

impl Region {
    /// The documented base URL of the region, including `/v1`.
    pub fn base_url(self) -> &'static str {
        match self {
            Region::Us => "https://api.leen.dev/v1",
            Region::Eu => "https://api.eu-c1.leen.dev/v1",
            Region::Apac => "https://api.ap-se2.leen.dev/v1",
        }
    }

    /// The name used in the spec: us, eu or apac.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Us => "us",
            Region::Eu => "eu",
            Region::Apac => "apac",
        }
    }
}

/// State the connection should be in.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DesiredState {
    /// Active: Leen collects data from the vendor.
    Active,
    /// Paused: Leen stops collecting until resumed.
    Paused,
}

impl DesiredState {
    /// Leen's name of the state: ACTIVE or PAUSED.
    pub fn leen_state(self) -> &'static str {
        match self {
            DesiredState::Active => "ACTIVE",
            DesiredState::Paused => "PAUSED",
        }
    }
}

/// Reference to a Secret in the resource's own namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as the LeenConnection (a DNS-1123
    /// subdomain).
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN))]
    pub name: String,
}

/// What happens to the Leen connection when the resource is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the connection in Leen, then let the resource go.
    #[default]
    Delete,
    /// Leave the connection in Leen; only the resource goes.
    Orphan,
}

/// Reference to a key of a Secret in the resource's own namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySecretRef {
    /// Name of the Secret, in the same namespace as the LeenConnection (a DNS-1123
    /// subdomain).
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN))]
    pub name: String,
    /// Key within the Secret's data that holds the API key.
    #[serde(default = "default_api_key_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_api_key_key() -> String {
    DEFAULT_API_KEY_KEY.to_string()
}

/// Observed state of a LeenConnection: the connection as Leen last returned it, the Ready
/// condition, and the record of the deletion attempts.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeenConnectionStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Leen connection this resource is bound to, created or adopted. For a created
    /// connection it is written before anything else is done with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    /// For OAuth vendors: where a person gives the vendor's consent; the connection stays
    /// PENDING (Ready=False, AwaitingAuthorization) until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_authorize_url: Option<String>,
    /// The create in progress: recorded before the create call goes out, so that a create
    /// whose answer was lost is looked up by identifier rather than repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation: Option<CreationRecord>,
    /// The vendor credentials last sent to Leen and Leen's test of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsStatus>,
    /// Connection state as Leen last returned it: PENDING, ACTIVE, PAUSED or DELETED
    /// (a value Leen adds later is kept as is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Connection health as Leen last returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ConnectionHealth>,
    /// Vendor of the connection (CrowdStrike, Snyk, ...), as Leen returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Whether Leen reports the connection as active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
    /// Identifier Leen holds for the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// How often Leen refreshes the connection's data, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval_secs: Option<i64>,
    /// Leen's timeout for the connection's vendor calls, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<i64>,
    /// Name of the Leen organization, when Leen returns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<String>,
    /// When Leen created the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When Leen last updated the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// The Leen organization and connection ids this resource was first bound to. A spec
    /// naming other ids is refused, so that the operator never acts on another connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_connection: Option<BoundConnection>,
    /// Record of the calls made to delete the connection, present once deletion started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<DeletionRecord>,
    /// Current conditions: `Ready` (the connection exists and is what the spec asks), `Healthy`
    /// (Leen's health), and the kstatus pair `Reconciling` and `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Health of a connection, mirrored from Leen in camelCase.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionHealth {
    /// Health name, e.g. HEALTHY, UNAUTHORIZED, VENDOR_SERVER_ERROR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Health status: HEALTHY, UNHEALTHY or INITIALIZING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Human readable description of the health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who has to act to resolve an unhealthy connection: LEEN, CUSTOMER or VENDOR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution_owner: Option<String>,
    /// Per data export type details of the health.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<HealthDetail>,
}

/// One detail of a connection's health.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthDetail {
    /// Data export type the detail is about (devices, alerts, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_export_type: Option<String>,
    /// Vendor endpoint the detail is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// The region and ids a resource is bound to.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoundConnection {
    /// Leen region (absent in records written before regions were bound; the controller
    /// fills it in from the spec on its next read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// Leen organization UUID.
    pub organization_id: String,
    /// Leen connection UUID.
    pub connection_id: String,
}

/// A create of the connection that went out (or is about to), not yet bound.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreationRecord {
    /// The identifier the create sends, by which the connection is found again.
    pub identifier: String,
    /// When the first create call was about to go out (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Create calls made so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the last create call whose outcome is unknown was about to go out (RFC 3339):
    /// no other goes out until the connection is proven absent for LEEN_CREATE_SETTLE
    /// after it. Unset once Leen refused that call (nothing was created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<String>,
    /// The region the create went to: the look-up goes there, whatever the spec says now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// The organization the create went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
}

/// The vendor credentials last sent to Leen, as a salted hash, and Leen's test of them.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsStatus {
    /// SHA-256 of the credentials last sent, salted with this resource's uid (never the
    /// plain digest of a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
    /// When they were sent (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_time: Option<String>,
    /// Leen's test of the credentials last sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_test: Option<CredentialsTest>,
}

/// Leen's answer to a test of the connection's credentials.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsTest {
    /// Whether Leen found the credentials valid.
    pub valid: bool,
    /// Leen's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the test ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The appliedHash the test was about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
}

/// Record of the attempts to delete the connection in Leen.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionRecord {
    /// How many deletion attempts were made (calls to Leen, and attempts stopped before a
    /// call, e.g. for missing credentials).
    #[serde(default)]
    pub attempts: u32,
    /// Outcome of the last attempt, the same word as the Ready condition's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// When the last attempt was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<String>,
    /// HTTP status code of Leen's last answer, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_http_status: Option<u16>,
    /// Error of the last attempt, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the controller will try again (RFC 3339), when it will.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_time: Option<String>,
    /// The deletion budget held this deletion once: it stays held whatever happens in
    /// between (a missing Secret, a failed look-up) until `leen.dev/confirm-deletion`,
    /// `deletionPolicy: Orphan`, or (when so set) the budget frees.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// A DELETE of this deletion went out to Leen at least once (the budget counted it):
    /// a retry beyond the budget waits for the window to free rather than for a person.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_sent: bool,
}

/// A condition in the shape of Kubernetes' metav1.Condition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition, e.g. Ready.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// One CamelCase word saying why the condition is in this status.
    pub reason: String,
    /// Human readable detail.
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// The metadata.generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl LeenConnectionStatus {
    /// The Ready condition, if set.
    pub fn ready(&self) -> Option<&Condition> {
        self.condition(READY_CONDITION)
    }

    /// The condition of this type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The CRDs as YAML documents, exactly what `leen-operator crd` prints: each as the file
/// in `crds/` that holds it, joined by `---`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let docs = crate::organization::crds()
        .into_iter()
        .map(|(_, crd)| serde_yaml::to_string(&crd))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(docs.join("---\n"))
}
