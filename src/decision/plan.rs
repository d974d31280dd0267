//! The plan: which one step (a Leen call, a read, or none) comes next for a resource.

use super::{DeletionStep, Reason};
use crate::{
    credentials::Credentials,
    leen::{Connection, UpdateRequest},
    resource::{DeletionPolicy, DesiredState, LeenConnection},
};

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
