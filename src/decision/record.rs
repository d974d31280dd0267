//! What the steps of a plan record on the way, before the final decision: the create
//! intent (written before the POST), the binding (written right after Leen's answer,
//! before anything else is done with the connection), the credentials sent, and the
//! Event that marks each. Pure: the controller writes what these return.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{EventSpec, Reason, bind_status, rfc3339};
use crate::{
    credentials::Credentials,
    leen::{Binding, Connection, LeenOutcome, UpdateRequest},
    resource::{CreationRecord, CredentialsStatus, LeenConnection, LeenConnectionStatus, Region},
};

/// The binding of a connection Leen returned from a create or the list (its id was checked
/// to be a UUID there).
pub fn found_binding(region: Region, organization: Uuid, conn: &Connection) -> Binding {
    Binding {
        region,
        organization,
        connection: conn
            .id
            .as_deref()
            .and_then(|id| Uuid::parse_str(id).ok())
            .unwrap_or_default(),
    }
}

/// The status with the create intent recorded: the identifier, when the first create was
/// about to go out, and one more attempt. Written before the POST, so that a lost answer
/// is looked for rather than repeated.
pub fn create_intent(
    obj: &LeenConnection,
    region: Region,
    organization: Uuid,
    identifier: &str,
    now: DateTime<Utc>,
) -> LeenConnectionStatus {
    let mut status = obj.status.clone().unwrap_or_default();
    let pending = status.creation.take();
    status.creation = Some(CreationRecord {
        identifier: identifier.to_string(),
        started_at: pending
            .as_ref()
            .and_then(|p| p.started_at.clone())
            .or_else(|| Some(rfc3339(now))),
        attempts: pending.map_or(0, |p| p.attempts).saturating_add(1),
        last_attempt_time: Some(rfc3339(now)),
        region: Some(region),
        organization_id: Some(organization.to_string()),
    });
    status
}

/// The status after Leen refused a create outright (401/403, 404, 422, 429, another 4xx):
/// nothing was created, so the next attempt need not wait for proof of absence. `None`:
/// the outcome is unknown (time-out, 5xx, an unreadable answer) and the settle period
/// stands.
pub fn create_refused(obj: &LeenConnection, outcome: &LeenOutcome) -> Option<LeenConnectionStatus> {
    if outcome.may_have_acted() {
        return None;
    }
    let mut status = obj.status.clone().unwrap_or_default();
    status.creation.as_mut()?.last_attempt_time.take()?;
    Some(status)
}

/// The status bound to `binding` (created, found again, or adopted); with `sent`, the
/// credentials that went with the create.
pub fn bound(
    obj: &LeenConnection,
    binding: &Binding,
    sent: Option<&Credentials>,
    now: DateTime<Utc>,
) -> LeenConnectionStatus {
    let mut status = obj.status.clone().unwrap_or_default();
    bind_status(&mut status, binding);
    if let Some(c) = sent {
        status.credentials = Some(applied(c, obj, now));
    }
    status
}

/// What status records of credentials just sent.
pub fn applied(
    credentials: &Credentials,
    obj: &LeenConnection,
    now: DateTime<Utc>,
) -> CredentialsStatus {
    CredentialsStatus {
        applied_hash: Some(
            credentials.salted_hash(obj.metadata.uid.as_deref().unwrap_or_default()),
        ),
        applied_time: Some(rfc3339(now)),
        last_test: None,
    }
}

fn sync_event(reason: Reason, note: String) -> EventSpec {
    EventSpec {
        warning: false,
        reason,
        action: "SyncConnection",
        note,
    }
}

/// The Event of a connection that this resource's create made, found again by identifier
/// after its answer was lost, and bound instead of creating another.
pub fn recovered_event(binding: &Binding, identifier: &str) -> EventSpec {
    sync_event(
        Reason::CreateRecovered,
        format!(
            "found connection {} by identifier {identifier:?} (a create whose answer was lost); bound to it instead of creating another",
            binding.connection
        ),
    )
}

/// The Event of a connection created.
pub fn created_event(binding: &Binding, vendor: &str, identifier: &str) -> EventSpec {
    sync_event(
        Reason::Created,
        format!(
            "created {vendor} connection {} (identifier {identifier:?})",
            binding.connection
        ),
    )
}

/// The status after a PATCH Leen accepted (the credentials sent recorded), and its Events:
/// the state corrected, the credentials applied.
pub fn updated(
    obj: &LeenConnection,
    binding: &Binding,
    before: &Connection,
    request: &UpdateRequest,
    now: DateTime<Utc>,
) -> (Option<LeenConnectionStatus>, Vec<EventSpec>) {
    let mut events = Vec::new();
    if let Some(state) = request.state {
        let was = before.state.as_deref().unwrap_or("unknown");
        events.push(sync_event(
            Reason::StateCorrected,
            format!(
                "Leen reported connection {} {was}, spec.state asks {state}: set it to {state}",
                binding.connection
            ),
        ));
    }
    let status = request.credentials.as_ref().map(|c| {
        let mut status = obj.status.clone().unwrap_or_default();
        status.credentials = Some(applied(c, obj, now));
        events.push(sync_event(
            Reason::CredentialsApplied,
            format!(
                "sent the changed credentials of Secret {} to connection {}; testing them",
                obj.spec
                    .credentials_secret_ref
                    .as_ref()
                    .map(|r| r.name.as_str())
                    .unwrap_or_default(),
                binding.connection
            ),
        ));
        status
    });
    (status, events)
}
