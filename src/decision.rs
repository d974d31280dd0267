//! The controller's decisions as plain functions: given a resource and what reading its
//! inputs and calling Leen came to, which status to write, which Event to emit, whether to
//! keep the finalizer, and when to look again. No I/O here; `controller` does the writes.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::{
    credentials::Credentials,
    leen::{Connection, LeenOutcome, UpdateRequest},
    resource::{
        BoundConnection, CREDENTIALS_VALID_CONDITION, Condition, ConnectionHealth, DeletionPolicy,
        DeletionRecord, DesiredState, HEALTHY_CONDITION, HealthDetail, LeenConnection,
        LeenConnectionStatus, READY_CONDITION, RECONCILING_CONDITION, Region, STALLED_CONDITION,
        is_dns1123_subdomain,
    },
};

/// Why the Ready condition is what it is. Also the reason of the Event emitted. The word
/// shown (conditions, Events, metrics) is the variant's name: adding a reason is one line.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
)]
pub enum Reason {
    /// Read from Leen, not deleted.
    Synced,
    /// Leen reports the connection DELETED.
    ConnectionDeleted,
    /// Leen does not know the connection.
    NotFound,
    /// Leen refused the key (401/403).
    Unauthorized,
    /// Leen rejected the request (422).
    Rejected,
    /// Leen answered 429.
    RateLimited,
    /// 5xx, timeout or connection error.
    LeenUnavailable,
    /// Leen's answer could not be read.
    InvalidResponse,
    /// Leen answered with a status the API does not document.
    UnexpectedResponse,
    /// The API key Secret, its key, or the default key is missing.
    CredentialsMissing,
    /// The spec cannot be acted on (an id is not a UUID).
    InvalidSpec,
    /// The spec names other ids than the ones the resource was bound to.
    ImmutableFieldChanged,
    /// Leen deleted the connection.
    Deleted,
    /// Leen had no such connection any more (404 on DELETE).
    AlreadyDeleted,
    /// deletionPolicy Orphan: the connection was left in Leen.
    Orphaned,
    /// Another live LeenConnection binds the same connection: released without a call.
    StillReferenced,
    /// Another live LeenConnection binds the same connection (an Event, not a condition
    /// reason): almost always a mistake.
    SharedConnection,
    /// The deletion budget is spent: no call until confirmed, orphaned, or (when so set)
    /// the budget frees.
    DeletionHeld,
    /// Leen reports the connection PENDING: not active yet.
    Pending,
    /// Leen reports the connection PAUSED.
    Paused,
    /// Leen reports a state this operator does not know.
    UnknownState,
    /// An OAuth vendor's connection waits for a person's consent at
    /// status.oauth2AuthorizeUrl.
    AwaitingAuthorization,
    /// Leen reports ACTIVE or PAUSED, spec.state asks the other; being corrected.
    StateDrift,
    /// The operator created the connection (an Event).
    Created,
    /// A create whose answer was lost was found again by identifier (an Event).
    CreateRecovered,
    /// spec.state was enforced on a connection found in the other state (an Event).
    StateCorrected,
    /// Changed vendor credentials were sent to Leen (an Event).
    CredentialsApplied,
    /// The vendor credentials Secret holds something that cannot be credentials.
    CredentialsMalformed,
    /// The resource never got a connection: its deletion has nothing to delete.
    NotCreated,
}

impl Reason {
    /// The CamelCase word used in conditions, Events and metrics: the variant's name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The reason a word names, if any.
    pub fn parse(word: &str) -> Option<Self> {
        word.parse().ok()
    }

    /// Whether only a person can make progress (kstatus `Stalled`).
    pub fn is_stalled(self) -> bool {
        matches!(
            self,
            Reason::Rejected
                | Reason::Unauthorized
                | Reason::CredentialsMissing
                | Reason::CredentialsMalformed
                | Reason::InvalidSpec
                | Reason::ImmutableFieldChanged
                | Reason::DeletionHeld
        )
    }

    /// Whether retrying heals it without anyone acting (Leen down, rate limits, odd answers).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Reason::LeenUnavailable
                | Reason::RateLimited
                | Reason::InvalidResponse
                | Reason::UnexpectedResponse
        )
    }

    /// Whether it is a failure (a Warning Event), rather than a state of the connection.
    pub fn is_failure(self) -> bool {
        self.is_stalled() || self.is_transient() || self == Reason::NotFound
    }

    /// Whether a deletion that ended with this reason is finished.
    pub fn releases_finalizer(self) -> bool {
        matches!(
            self,
            Reason::Deleted
                | Reason::AlreadyDeleted
                | Reason::Orphaned
                | Reason::StillReferenced
                | Reason::NotCreated
        )
    }
}

/// What reading the inputs and (maybe) calling Leen came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// Leen was called and answered (or failed to).
    Leen(LeenOutcome),
    /// No API key could be had; Leen was not called.
    CredentialsMissing(String),
    /// The deletion budget is spent; Leen was not called.
    DeletionHeld {
        /// What happened and how to proceed.
        message: String,
        /// When the deletion tries again on its own (the budget frees); `None`: only when
        /// confirmed or orphaned.
        resume_at: Option<DateTime<Utc>>,
    },
    /// The spec cannot be acted on; Leen was not called.
    InvalidSpec {
        /// [`Reason::InvalidSpec`] or [`Reason::ImmutableFieldChanged`].
        reason: Reason,
        /// What is wrong.
        message: String,
    },
}

/// What the deletion of a resource comes to before any call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeletionStep {
    /// deletionPolicy Orphan: no call, no credentials.
    Orphan,
    /// The resource never got a connection: nothing was created, or the create that may
    /// have gone out is not in Leen's list.
    NotCreated {
        /// The identifier looked for.
        identifier: String,
    },
    /// Another live LeenConnection binds the same region, organization and connection:
    /// no call; the connection stays for the other resource.
    StillReferenced {
        /// `namespace/name` of the other resource.
        by: String,
    },
    /// A previous attempt already got Leen's confirmation and wrote it to status, but the
    /// finalizer was not removed (crash, failed patch): release without calling again.
    AlreadyConfirmed(Reason),
    /// The inputs were read and Leen was called (or could not be).
    Observed(Observation),
}

/// Keep or drop the finalizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalizerAction {
    /// Keep it: the deletion is not done.
    Keep,
    /// Remove it, after the status write has been accepted.
    Remove,
}

/// An Event to emit on the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    /// Warning rather than Normal.
    pub warning: bool,
    /// The reason, the same as the condition's.
    pub reason: Reason,
    /// What the controller was doing: `SyncConnection` or `DeleteConnection`.
    pub action: &'static str,
    /// Human readable detail.
    pub note: String,
}

/// Everything the controller does after one reconciliation.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The whole status to write (skipped when equal to the current one).
    pub status: LeenConnectionStatus,
    /// The Event to emit, if any.
    pub event: Option<EventSpec>,
    /// Keep or drop the finalizer (only ever `Remove` while deleting).
    pub finalizer: FinalizerAction,
    /// When to reconcile again; `None`: only on a change.
    pub requeue_after: Option<Duration>,
}

/// How long to wait before trying again, by kind of failure.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// First delay after a transient failure (5xx, timeout, 429 without Retry-After).
    pub transient_base: Duration,
    /// Longest delay after transient failures.
    pub transient_cap: Duration,
    /// First delay after 401/403 (a Secret change retries at once anyway).
    pub unauthorized_base: Duration,
    /// Longest delay after 401/403.
    pub unauthorized_cap: Duration,
    /// Delay after a 422 or an invalid spec: these do not heal by themselves.
    pub slow_retry: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            transient_base: Duration::from_secs(2),
            transient_cap: Duration::from_secs(300),
            unauthorized_base: Duration::from_secs(30),
            unauthorized_cap: Duration::from_secs(600),
            slow_retry: Duration::from_secs(900),
        }
    }
}

impl RetryPolicy {
    /// Capped exponential backoff with jitter: attempt 1 waits about `base`, each further
    /// attempt doubles it up to `cap`; the delay is drawn from [d/2, d] with `jitter` in [0, 1].
    pub fn backoff(base: Duration, cap: Duration, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = base.saturating_mul(1u32 << exp).min(cap);
        let jitter = jitter.clamp(0.0, 1.0);
        raw.div_f64(2.0) + raw.div_f64(2.0).mul_f64(jitter)
    }

    /// The delay after the `attempt`-th consecutive failure with this reason.
    pub fn delay(
        &self,
        reason: Reason,
        retry_after: Option<Duration>,
        attempt: u32,
        jitter: f64,
    ) -> Duration {
        match reason {
            Reason::RateLimited if retry_after.is_some() => {
                retry_after.unwrap_or_default().max(Duration::from_secs(1))
            }
            Reason::Unauthorized => Self::backoff(
                self.unauthorized_base,
                self.unauthorized_cap,
                attempt,
                jitter,
            ),
            Reason::Rejected | Reason::InvalidSpec | Reason::ImmutableFieldChanged => {
                self.slow_retry.mul_f64(0.9 + 0.2 * jitter.clamp(0.0, 1.0))
            }
            _ => Self::backoff(self.transient_base, self.transient_cap, attempt, jitter),
        }
    }
}

/// The inputs of a decision that do not come from the resource or Leen.
#[derive(Clone, Debug)]
pub struct DecisionInputs<'a> {
    /// The current time.
    pub now: DateTime<Utc>,
    /// A random number in [0, 1] for jitter.
    pub jitter: f64,
    /// How often a live resource is read again from Leen.
    pub sync_interval: Duration,
    /// Consecutive failed syncs or deletion attempts before this one (kept by the
    /// controller in memory).
    pub sync_failures: u32,
    /// Retry delays.
    pub policy: &'a RetryPolicy,
    /// Other live resources (`namespace/name`) that bind the same connection.
    pub also_bound_by: Vec<String>,
    /// Why Leen's test of the credentials last sent could not be had, when it failed.
    pub credentials_test_error: Option<String>,
}

/// An identical failure repeated within this time does not rewrite the status or emit an
/// Event again: with many resources failing alike (a long 429, an outage) the status
/// writes would otherwise cost the API server more than the retries cost Leen.
pub const REPEAT_QUIET: Duration = Duration::from_secs(60);

/// Longest string mirrored from Leen into status; longer ones are cut.
pub const MAX_MIRRORED_CHARS: usize = 1024;

/// Most health details mirrored from Leen into status.
pub const MAX_MIRRORED_DETAILS: usize = 32;

/// The region and ids a resource acts on, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Binding {
    /// Leen region.
    pub region: Region,
    /// Organization UUID.
    pub organization: Uuid,
    /// Connection UUID.
    pub connection: Uuid,
}

/// The region and ids of a resource, checked: both ids are UUIDs, Secret names are DNS-1123
/// names, a resource to be created names a vendor, and region and ids are the ones the
/// resource was first bound to. `Ok(None)`: nothing is bound yet and the spec asks the
/// operator to create the connection.
pub fn validate_binding(obj: &LeenConnection) -> Result<Option<Binding>, Observation> {
    let invalid = |message: String| Observation::InvalidSpec {
        reason: Reason::InvalidSpec,
        message,
    };
    let parse = |field: &str, value: &str| {
        Uuid::parse_str(value).map_err(|_| invalid(format!("spec.{field} {value:?} is not a UUID")))
    };
    let organization = parse("organizationId", &obj.spec.organization_id)?;
    let spec_connection = obj
        .spec
        .connection_id
        .as_deref()
        .map(|id| parse("connectionId", id))
        .transpose()?;
    for (field, name) in [
        (
            "apiKeySecretRef",
            obj.spec.api_key_secret_ref.as_ref().map(|r| &r.name),
        ),
        (
            "credentialsSecretRef",
            obj.spec.credentials_secret_ref.as_ref().map(|r| &r.name),
        ),
    ] {
        if let Some(name) = name
            && !is_dns1123_subdomain(name)
        {
            return Err(invalid(format!(
                "spec.{field}.name {name:?} is not a Secret name (a DNS-1123 subdomain)"
            )));
        }
    }
    if let Some(vendor) = &obj.spec.vendor
        && !is_vendor_name(vendor)
    {
        return Err(invalid(format!(
            "spec.vendor {:?} is not a Leen vendor name (upper case letters, digits and _, starting with a letter)",
            clip(vendor)
        )));
    }
    let bound = obj
        .status
        .as_ref()
        .and_then(|s| s.bound_connection.as_ref());
    let Some(bound) = bound else {
        return match spec_connection {
            Some(connection) => Ok(Some(Binding {
                region: obj.spec.region,
                organization,
                connection,
            })),
            None if obj.spec.vendor.is_none() => Err(invalid(
                "spec.vendor is required when spec.connectionId is unset (the operator creates the connection); set connectionId to adopt an existing one".to_string(),
            )),
            None => Ok(None),
        };
    };
    let same = |a: &str, b: &Uuid| Uuid::parse_str(a).is_ok_and(|a| a == *b);
    let bound_connection = Uuid::parse_str(&bound.connection_id).ok();
    let connection = spec_connection.or(bound_connection);
    let same_region = bound.region.is_none_or(|r| r == obj.spec.region);
    let same_connection = connection.is_some_and(|c| same(&bound.connection_id, &c));
    if !same(&bound.organization_id, &organization) || !same_connection || !same_region {
        let bound_region = bound.region.unwrap_or(obj.spec.region);
        let named = connection.map_or_else(|| "none".to_string(), |c| c.to_string());
        return Err(Observation::InvalidSpec {
            reason: Reason::ImmutableFieldChanged,
            message: format!(
                "spec names region {} organization {organization} connection {named}, but this resource is bound to region {} organization {} connection {}; region and ids are immutable: restore them, or create a new LeenConnection",
                obj.spec.region.as_str(),
                bound_region.as_str(),
                bound.organization_id,
                bound.connection_id
            ),
        });
    }
    Ok(connection.map(|connection| Binding {
        region: obj.spec.region,
        organization,
        connection,
    }))
}

/// Whether `name` has the shape of a Leen vendor name: `^[A-Z][A-Z0-9_]*$`.
pub fn is_vendor_name(name: &str) -> bool {
    name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The binding a resource holds: the one in status, else its spec's when valid. This is
/// what the binding labels say.
pub fn held_binding(obj: &LeenConnection) -> Option<Binding> {
    if let Some(bound) = obj
        .status
        .as_ref()
        .and_then(|s| s.bound_connection.as_ref())
    {
        return Some(Binding {
            region: bound.region.unwrap_or(obj.spec.region),
            organization: Uuid::parse_str(&bound.organization_id).ok()?,
            connection: Uuid::parse_str(&bound.connection_id).ok()?,
        });
    }
    validate_binding(obj).ok().flatten()
}

/// The connection id a resource stands for, for messages: the bound one, else the spec's.
pub fn connection_name(obj: &LeenConnection) -> String {
    obj.status
        .as_ref()
        .and_then(|s| s.bound_connection.as_ref())
        .map(|b| b.connection_id.clone())
        .or_else(|| obj.spec.connection_id.clone())
        .unwrap_or_else(|| "(not created)".to_string())
}

/// The identifier a create sends: the one recorded when the create started, else the
/// spec's, else `<namespace>/<name>/<uid>` (stable, and unique to this resource).
pub fn create_identifier(obj: &LeenConnection) -> String {
    if let Some(recorded) = obj
        .status
        .as_ref()
        .and_then(|s| s.creation.as_ref())
        .map(|c| c.identifier.clone())
    {
        return recorded;
    }
    obj.spec.identifier.clone().unwrap_or_else(|| {
        format!(
            "{}/{}/{}",
            obj.metadata.namespace.as_deref().unwrap_or(""),
            obj.metadata.name.as_deref().unwrap_or(""),
            obj.metadata.uid.as_deref().unwrap_or("")
        )
    })
}

/// Binds a status to a connection (created, found again, or adopted): the binding record,
/// `connectionId`, and no create in progress any more.
pub fn bind_status(status: &mut LeenConnectionStatus, binding: &Binding) {
    status.bound_connection = Some(BoundConnection {
        region: Some(binding.region),
        organization_id: binding.organization.to_string(),
        connection_id: binding.connection.to_string(),
    });
    status.connection_id = Some(binding.connection.to_string());
    status.creation = None;
}

/// What deleting the resource comes to before reading any input: Orphan, or a deletion
/// that a previous attempt already confirmed. `None`: Leen has to be called.
pub fn deletion_shortcut(obj: &LeenConnection) -> Option<DeletionStep> {
    if obj.spec.deletion_policy == DeletionPolicy::Orphan {
        return Some(DeletionStep::Orphan);
    }
    let outcome = obj.status.as_ref()?.deletion.as_ref()?.outcome.as_deref()?;
    [Reason::Deleted, Reason::AlreadyDeleted]
        .into_iter()
        .find(|r| r.as_str() == outcome)
        .map(DeletionStep::AlreadyConfirmed)
}

/// The decision for a live (not deleting) resource after a sync.
pub fn decide_sync(obj: &LeenConnection, obs: &Observation, inputs: &DecisionInputs) -> Decision {
    let current = obj.status.clone().unwrap_or_default();
    let mut status = current.clone();
    let generation = obj.metadata.generation;
    status.observed_generation = generation;
    if !matches!(obs, Observation::InvalidSpec { .. })
        && let Some(binding) = held_binding(obj)
    {
        match status.bound_connection.as_mut() {
            None => bind_status(&mut status, &binding),
            // Bound before regions were recorded: the region is the spec's.
            Some(bound) if bound.region.is_none() => bound.region = Some(obj.spec.region),
            Some(_) => {}
        }
        status.connection_id = Some(binding.connection.to_string());
    }
    let id = connection_name(obj);
    let id = status.connection_id.clone().unwrap_or(id);
    let desired = obj.spec.state.map(DesiredState::leen_state);

    let (ready, reason, mut message, retry_after) = match obs {
        Observation::Leen(LeenOutcome::Success(conn)) => {
            mirror(&mut status, conn);
            let (state, health) = state_and_health(conn);
            match (state, desired) {
                ("ACTIVE", Some("PAUSED")) | ("PAUSED", Some("ACTIVE")) => (
                    false,
                    Reason::StateDrift,
                    format!(
                        "Leen reports connection {id} {state}, spec.state asks {}; correcting",
                        desired.unwrap_or_default()
                    ),
                    None,
                ),
                ("ACTIVE", _) => (
                    true,
                    Reason::Synced,
                    format!("Leen reports state {state}, health {health}"),
                    None,
                ),
                ("DELETED", _) => (
                    false,
                    Reason::ConnectionDeleted,
                    format!("Leen reports connection {id} DELETED"),
                    None,
                ),
                ("PENDING", _) if status.oauth2_authorize_url.is_some() => (
                    false,
                    Reason::AwaitingAuthorization,
                    format!(
                        "connection {id} waits for the vendor's consent: open the URL in status.oauth2AuthorizeUrl"
                    ),
                    None,
                ),
                ("PENDING", _) => (
                    false,
                    Reason::Pending,
                    format!(
                        "Leen reports connection {id} PENDING (health {health}): not active yet"
                    ),
                    None,
                ),
                ("PAUSED", Some("PAUSED")) => (
                    true,
                    Reason::Paused,
                    format!("connection {id} is PAUSED, as spec.state asks (health {health})"),
                    None,
                ),
                ("PAUSED", _) => (
                    false,
                    Reason::Paused,
                    format!("Leen reports connection {id} PAUSED (health {health})"),
                    None,
                ),
                (other, _) => (
                    false,
                    Reason::UnknownState,
                    format!(
                        "Leen reports connection {id} in state {}, which this operator does not know",
                        clip(other)
                    ),
                    None,
                ),
            }
        }
        Observation::Leen(outcome) => {
            let (reason, message) = failure(outcome, &id);
            let retry_after = match outcome {
                LeenOutcome::RateLimited { retry_after } => *retry_after,
                _ => None,
            };
            (false, reason, message, retry_after)
        }
        Observation::CredentialsMissing(message) => {
            (false, Reason::CredentialsMissing, message.clone(), None)
        }
        Observation::InvalidSpec { reason, message } => (false, *reason, message.clone(), None),
        // Only a deletion is ever held.
        Observation::DeletionHeld { message, .. } => {
            (false, Reason::DeletionHeld, message.clone(), None)
        }
    };

    // A failed read is retried with backoff, but never later than the next regular sync.
    let requeue = if ready || reason == Reason::ConnectionDeleted {
        inputs
            .sync_interval
            .mul_f64(0.9 + 0.2 * inputs.jitter.clamp(0.0, 1.0))
    } else {
        inputs
            .policy
            .delay(
                reason,
                retry_after,
                inputs.sync_failures.saturating_add(1),
                inputs.jitter,
            )
            .min(inputs.sync_interval)
    };
    let shared = shared_note(&id, &inputs.also_bound_by);
    if let Some(note) = &shared {
        message = format!("{message}; {note}");
    }
    set_ready(&mut status, ready, reason, &message, generation, inputs.now);
    if let Observation::Leen(LeenOutcome::Success(_)) = obs {
        set_healthy(&mut status, generation, inputs.now);
    } else if status.condition(HEALTHY_CONDITION).is_none() {
        set_condition(
            &mut status,
            HEALTHY_CONDITION,
            "Unknown",
            "NotRead",
            "the connection has not been read from Leen yet",
            generation,
            inputs.now,
        );
    }
    set_credentials_valid(&mut status, obj, obs, inputs, generation);
    set_progress(
        &mut status,
        ready,
        reason,
        false,
        &message,
        generation,
        inputs.now,
    );

    // Events mark changes; a resource that stays in one state does not repeat them, and a
    // first successful read is no news (it shows in `kubectl get`).
    let previous = current.ready();
    let previous_key = previous.map(|c| (c.status.as_str(), c.reason.as_str()));
    let changed = previous_key != Some((if ready { "True" } else { "False" }, reason.as_str()))
        && !(previous_key.is_none() && ready);
    let newly_shared =
        shared.is_some() && !previous.is_some_and(|c| c.message.contains(SHARED_MARK));
    let event = if changed {
        Some(EventSpec {
            warning: !ready && reason.is_failure(),
            reason,
            action: "SyncConnection",
            note: message,
        })
    } else {
        None
    };
    let event = match (event, newly_shared, shared) {
        (None, true, Some(note)) => Some(EventSpec {
            warning: true,
            reason: Reason::SharedConnection,
            action: "SyncConnection",
            note,
        }),
        (event, _, _) => event,
    };
    Decision {
        status,
        event,
        finalizer: FinalizerAction::Keep,
        requeue_after: Some(requeue),
    }
}

/// The decision for a resource being deleted: the deletion table of DESIGN.md.
pub fn decide_deletion(
    obj: &LeenConnection,
    step: &DeletionStep,
    inputs: &DecisionInputs,
) -> Decision {
    let mut status = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let id = &connection_name(obj);
    let previous = status.deletion.clone().unwrap_or_default();

    let mut warn_anyway = false;
    let (reason, message, http_status, retry_after) = match step {
        DeletionStep::StillReferenced { by } => (
            Reason::StillReferenced,
            format!(
                "{by} binds the same connection {id}: it was not deleted in Leen and stays for {by}"
            ),
            None,
            None,
        ),
        DeletionStep::NotCreated { identifier } => (
            Reason::NotCreated,
            format!(
                "no connection was created for this resource (Leen lists none with identifier {identifier:?}): nothing to delete"
            ),
            None,
            None,
        ),
        DeletionStep::Orphan => (
            Reason::Orphaned,
            format!("deletionPolicy is Orphan: connection {id} was left in Leen"),
            None,
            None,
        ),
        DeletionStep::AlreadyConfirmed(reason) => {
            // Status already says it; only the finalizer is left to remove.
            return Decision {
                event: Some(EventSpec {
                    warning: false,
                    reason: *reason,
                    action: "DeleteConnection",
                    note: format!(
                        "deletion of connection {id} was confirmed by Leen earlier; releasing the finalizer"
                    ),
                }),
                status,
                finalizer: FinalizerAction::Remove,
                requeue_after: None,
            };
        }
        DeletionStep::Observed(Observation::Leen(LeenOutcome::Success(conn))) => {
            mirror(&mut status, conn);
            let (state, health) = state_and_health(conn);
            let message = if state == "DELETED" {
                format!("Leen deleted connection {id}: state {state}, health {health}")
            } else {
                warn_anyway = true;
                format!(
                    "Leen confirmed the deletion of connection {id} but reports state {}, not DELETED (health {health}); recorded as Leen returned it",
                    clip(state)
                )
            };
            (Reason::Deleted, message, Some(200), None)
        }
        DeletionStep::Observed(Observation::Leen(LeenOutcome::NotFound { detail })) => (
            Reason::AlreadyDeleted,
            format!("Leen has no connection {id} (404: {detail}); nothing left to delete"),
            Some(404),
            None,
        ),
        DeletionStep::Observed(Observation::Leen(outcome)) => {
            let (reason, message) = failure(outcome, id);
            let retry_after = match outcome {
                LeenOutcome::RateLimited { retry_after } => *retry_after,
                _ => None,
            };
            (reason, message, outcome.http_status(), retry_after)
        }
        DeletionStep::Observed(Observation::CredentialsMissing(message)) => {
            (Reason::CredentialsMissing, message.clone(), None, None)
        }
        DeletionStep::Observed(Observation::InvalidSpec { reason, message }) => {
            (*reason, message.clone(), None, None)
        }
        DeletionStep::Observed(Observation::DeletionHeld { message, resume_at }) => {
            let wait = resume_at
                .and_then(|at| (at - inputs.now).to_std().ok())
                .map(|d| d.max(Duration::from_secs(1)))
                .unwrap_or(inputs.sync_interval);
            (Reason::DeletionHeld, message.clone(), None, Some(wait))
        }
    };

    let attempts = previous.attempts.saturating_add(1);
    // Quiet repeats do not advance the record, so the backoff also counts the failures the
    // controller remembers.
    let attempt = previous
        .attempts
        .max(inputs.sync_failures)
        .saturating_add(1);
    let message = cap(&message);
    if !reason.releases_finalizer() && is_quiet_repeat(&previous, reason, &message, inputs.now) {
        // The same failure again, shortly after the last recorded one: no new status or
        // Event; the record is brought up to date once REPEAT_QUIET has passed.
        return Decision {
            status,
            event: None,
            finalizer: FinalizerAction::Keep,
            requeue_after: Some(
                inputs
                    .policy
                    .delay(reason, retry_after, attempt, inputs.jitter),
            ),
        };
    }
    let (finalizer, requeue_after, note) = if reason.releases_finalizer() {
        (FinalizerAction::Remove, None, message.clone())
    } else {
        let delay = inputs
            .policy
            .delay(reason, retry_after, attempt, inputs.jitter);
        if reason == Reason::DeletionHeld {
            // The message already says how to proceed; the wait is the budget's.
            (FinalizerAction::Keep, retry_after, message.clone())
        } else {
            let note = format!(
                "{message}; finalizer kept, retrying in {} (set spec.deletionPolicy: Orphan to release it without deleting in Leen)",
                humantime::format_duration(Duration::from_secs(delay.as_secs().max(1)))
            );
            (FinalizerAction::Keep, Some(delay), note)
        }
    };
    status.observed_generation = generation;
    status.deletion = Some(DeletionRecord {
        attempts,
        outcome: Some(reason.as_str().to_string()),
        last_attempt_time: Some(rfc3339(inputs.now)),
        last_http_status: http_status,
        last_error: (!reason.releases_finalizer()).then(|| message.clone()),
        next_retry_time: requeue_after
            .map(|d| rfc3339(inputs.now + chrono::Duration::from_std(d).unwrap_or_default())),
    });
    set_ready(&mut status, false, reason, &note, generation, inputs.now);
    set_progress(
        &mut status,
        false,
        reason,
        !reason.releases_finalizer(),
        &note,
        generation,
        inputs.now,
    );
    Decision {
        status,
        event: Some(EventSpec {
            warning: !reason.releases_finalizer() || warn_anyway,
            reason,
            action: "DeleteConnection",
            note,
        }),
        finalizer,
        requeue_after,
    }
}

/// Marks a Ready message that names other resources binding the same connection.
const SHARED_MARK: &str = "also bound by";

fn shared_note(id: &str, others: &[String]) -> Option<String> {
    if others.is_empty() {
        return None;
    }
    let shown: Vec<&str> = others.iter().take(5).map(String::as_str).collect();
    let more = others.len().saturating_sub(shown.len());
    let list = if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    };
    Some(format!(
        "connection {id} is {SHARED_MARK} {list}: two resources for one connection are almost always a mistake; deleting either one leaves the connection in Leen (StillReferenced) until the last one goes"
    ))
}

/// Whether a failed attempt repeats the recorded one closely enough to write nothing.
fn is_quiet_repeat(
    previous: &DeletionRecord,
    reason: Reason,
    message: &str,
    now: DateTime<Utc>,
) -> bool {
    previous.outcome.as_deref() == Some(reason.as_str())
        && previous.last_error.as_deref() == Some(message)
        && previous
            .last_attempt_time
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| {
                let since = now.signed_duration_since(t.with_timezone(&Utc));
                since >= chrono::Duration::zero()
                    && since < chrono::Duration::from_std(REPEAT_QUIET).unwrap_or_default()
            })
}

/// Cuts a string mirrored from Leen, so that a huge answer cannot push the status past
/// the API server's object size limit.
fn cap(s: &str) -> String {
    if s.chars().count() <= MAX_MIRRORED_CHARS {
        return s.to_string();
    }
    s.chars().take(MAX_MIRRORED_CHARS).collect::<String>() + "..."
}

fn cap_opt(s: &Option<String>) -> Option<String> {
    s.as_deref().map(cap)
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// What to PATCH to bring a connection Leen returned to the spec: `spec.state` when Leen
/// reports the other of ACTIVE and PAUSED (PENDING and DELETED are not Leen's to be
/// toggled), and credentials whose salted hash differs from the one last sent.
pub fn plan_update(
    obj: &LeenConnection,
    conn: &Connection,
    credentials: Option<&Credentials>,
) -> UpdateRequest {
    let state = obj.spec.state.map(DesiredState::leen_state).filter(|want| {
        let now = conn.state.as_deref().unwrap_or_default();
        matches!(now, "ACTIVE" | "PAUSED") && now != *want
    });
    let applied = obj
        .status
        .as_ref()
        .and_then(|s| s.credentials.as_ref())
        .and_then(|c| c.applied_hash.as_deref());
    let uid = obj.metadata.uid.as_deref().unwrap_or_default();
    let credentials = credentials
        .filter(|c| applied != Some(c.salted_hash(uid).as_str()))
        .cloned();
    UpdateRequest { credentials, state }
}

/// One line for a failed call, as status shows it.
pub fn describe_failure(outcome: &LeenOutcome) -> String {
    failure(outcome, "").1
}

/// Reason and message of a failed call.
fn failure(outcome: &LeenOutcome, id: &str) -> (Reason, String) {
    match outcome {
        LeenOutcome::Success(_) => (Reason::Synced, String::new()),
        LeenOutcome::NotFound { detail } => (
            Reason::NotFound,
            format!("Leen has no connection {id} (404: {detail})"),
        ),
        LeenOutcome::Unauthorized { status, detail } => (
            Reason::Unauthorized,
            format!("Leen refused the API key ({status}: {detail}); check the key and the region"),
        ),
        LeenOutcome::Rejected { detail } => (
            Reason::Rejected,
            format!("Leen rejected the request (422): {detail}"),
        ),
        // No seconds in the message: a long 429 is one repeated failure, not many.
        LeenOutcome::RateLimited { .. } => (
            Reason::RateLimited,
            "Leen rate limited calls with this API key (429); every call sharing the limit waits for it".to_string(),
        ),
        LeenOutcome::Unavailable { error, .. } => (
            Reason::LeenUnavailable,
            format!("Leen is unavailable: {error}"),
        ),
        LeenOutcome::InvalidResponse { status, error } => (
            Reason::InvalidResponse,
            format!("Leen answered {status} with an unreadable body: {error}"),
        ),
        LeenOutcome::Unexpected { status, detail } => (
            Reason::UnexpectedResponse,
            format!("Leen answered an unexpected {status}: {detail}"),
        ),
    }
}

/// Leen's state and health status of a connection, "unknown" where it gave none.
fn state_and_health(conn: &Connection) -> (&str, &str) {
    let state = conn.state.as_deref().unwrap_or("unknown");
    let health = conn
        .health
        .as_ref()
        .and_then(|h| h.status.as_deref())
        .unwrap_or("unknown");
    (state, health)
}

/// Copies Leen's view of the connection into status, every string and list capped.
fn mirror(status: &mut LeenConnectionStatus, conn: &Connection) {
    status.state = cap_opt(&conn.state);
    status.health = conn.health.as_ref().map(|h| ConnectionHealth {
        name: cap_opt(&h.name),
        status: cap_opt(&h.status),
        description: cap_opt(&h.description),
        resolution_owner: cap_opt(&h.resolution_owner),
        details: h
            .details
            .iter()
            .take(MAX_MIRRORED_DETAILS)
            .map(|d| HealthDetail {
                data_export_type: cap_opt(&d.data_export_type),
                endpoint: cap_opt(&d.endpoint),
            })
            .collect(),
    });
    status.vendor = cap_opt(&conn.vendor);
    status.oauth2_authorize_url = cap_opt(&conn.oauth2_authorize_url);
    status.is_active = conn.is_active;
    status.identifier = cap_opt(&conn.identifier);
    status.refresh_interval_secs = conn.refresh_interval_secs;
    status.timeout_secs = conn.timeout_secs;
    status.organization_name = cap_opt(&conn.organization_name);
    status.created_at = cap_opt(&conn.created_at);
    status.updated_at = cap_opt(&conn.updated_at);
}

fn set_ready(
    status: &mut LeenConnectionStatus,
    ready: bool,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let value = if ready { "True" } else { "False" };
    set_condition(
        status,
        READY_CONDITION,
        value,
        reason.as_str(),
        message,
        generation,
        now,
    );
}

/// Sets one condition in place (its lastTransitionTime moves only when its status does).
fn set_condition(
    status: &mut LeenConnectionStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let last_transition_time = status
        .condition(type_)
        .filter(|c| c.status == value)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| rfc3339(now));
    let condition = Condition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: reason.to_string(),
        // Never empty: see set_progress.
        message: if message.is_empty() {
            reason.to_string()
        } else {
            cap(message)
        },
        last_transition_time,
        observed_generation: generation,
    };
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = condition,
        None => status.conditions.push(condition),
    }
}

/// `Healthy` from the health Leen last returned: True for HEALTHY, else False with the
/// health name as reason and the description and resolution owner as message.
fn set_healthy(status: &mut LeenConnectionStatus, generation: Option<i64>, now: DateTime<Utc>) {
    let (value, reason, message) = match status.health.as_ref() {
        None => (
            "Unknown",
            "NoHealthReported".to_string(),
            "Leen returned no health for the connection".to_string(),
        ),
        Some(h) if h.status.as_deref() == Some("HEALTHY") => (
            "True",
            "HEALTHY".to_string(),
            h.description
                .clone()
                .unwrap_or_else(|| "Leen reports the connection healthy".to_string()),
        ),
        Some(h) => {
            let name = h
                .name
                .as_deref()
                .or(h.status.as_deref())
                .unwrap_or("UNHEALTHY");
            let description = h.description.as_deref().unwrap_or("no description");
            let message = match h.resolution_owner.as_deref() {
                Some(owner) => format!(
                    "{name}: {description}; resolution owner {owner}{}",
                    owner_hint(owner)
                ),
                None => format!("{name}: {description}"),
            };
            ("False", condition_reason(name), message)
        }
    };
    set_condition(
        status,
        HEALTHY_CONDITION,
        value,
        &reason,
        &message,
        generation,
        now,
    );
}

/// `CredentialsValid` for a resource that names a credentials Secret: Leen's test of the
/// credentials last sent (True/False), Unknown until tested or when the test failed, False
/// when the Secret cannot be read. Absent without a credentials Secret.
fn set_credentials_valid(
    status: &mut LeenConnectionStatus,
    obj: &LeenConnection,
    obs: &Observation,
    inputs: &DecisionInputs,
    generation: Option<i64>,
) {
    if obj.spec.credentials_secret_ref.is_none() {
        status
            .conditions
            .retain(|c| c.type_ != CREDENTIALS_VALID_CONDITION);
        return;
    }
    let applied = status
        .credentials
        .as_ref()
        .and_then(|c| c.applied_hash.clone());
    let test = status
        .credentials
        .as_ref()
        .and_then(|c| c.last_test.clone())
        .filter(|t| applied.is_some() && t.applied_hash == applied);
    let (value, reason, message) = match (obs, &inputs.credentials_test_error, test) {
        (Observation::CredentialsMissing(m), _, _) => ("False", "CredentialsMissing", m.clone()),
        (
            Observation::InvalidSpec {
                reason: Reason::CredentialsMalformed,
                message,
            },
            _,
            _,
        ) => ("False", "CredentialsMalformed", message.clone()),
        (_, Some(error), _) => (
            "Unknown",
            "TestFailed",
            format!("Leen's test of the credentials failed: {error}"),
        ),
        (_, None, Some(t)) if t.valid => (
            "True",
            "Valid",
            t.message
                .unwrap_or_else(|| "Leen found the credentials valid".to_string()),
        ),
        (_, None, Some(t)) => (
            "False",
            "Invalid",
            t.message
                .unwrap_or_else(|| "Leen found the credentials invalid".to_string()),
        ),
        (_, None, None) => (
            "Unknown",
            "NotTested",
            "the credentials have not been sent and tested yet".to_string(),
        ),
    };
    set_condition(
        status,
        CREDENTIALS_VALID_CONDITION,
        value,
        reason,
        &message,
        generation,
        inputs.now,
    );
}

fn owner_hint(owner: &str) -> &'static str {
    match owner {
        "CUSTOMER" => " (the customer must act, e.g. update the vendor credentials)",
        "VENDOR" => " (the vendor must act)",
        "LEEN" => " (Leen must act)",
        _ => "",
    }
}

/// A condition reason from Leen's text: metav1's reason shape, letters, digits and `_`.
fn condition_reason(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    match cleaned.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => cleaned.trim_end_matches('_').to_string(),
        _ => "Unhealthy".to_string(),
    }
}

/// The kstatus pair: `Stalled` when only a person can make progress, `Reconciling` while
/// the controller is still working towards the spec (transient retries, a connection not
/// active yet, a deletion in progress).
fn set_progress(
    status: &mut LeenConnectionStatus,
    ready: bool,
    reason: Reason,
    deleting: bool,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let stalled = reason.is_stalled();
    let reconciling = !ready
        && !stalled
        && (deleting
            || reason.is_transient()
            || matches!(
                reason,
                Reason::Pending | Reason::StateDrift | Reason::AwaitingAuthorization
            ));
    // Never an empty message: the API server reads an empty string in a merge patch of
    // a list element as null, which the schema refuses.
    let (r_value, r_message) = if reconciling {
        ("True", message)
    } else {
        (
            "False",
            "not working towards the spec: nothing is pending, or a person must act",
        )
    };
    set_condition(
        status,
        RECONCILING_CONDITION,
        r_value,
        reason.as_str(),
        r_message,
        generation,
        now,
    );
    let (s_value, s_message) = if stalled {
        ("True", message)
    } else {
        ("False", "no person needs to act")
    };
    set_condition(
        status,
        STALLED_CONDITION,
        s_value,
        reason.as_str(),
        s_message,
        generation,
        now,
    );
}

/// RFC 3339 in whole seconds, as status and messages show times.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}
