//! Status as values: the conditions, Leen's view mirrored (capped), times.

use chrono::{DateTime, SecondsFormat, Utc};

use super::{DecisionInputs, Observation, Reason};
use crate::{
    leen::Connection,
    resource::{
        CREDENTIALS_VALID_CONDITION, Condition, ConnectionHealth, HEALTHY_CONDITION, HealthDetail,
        LeenConnection, LeenConnectionStatus, READY_CONDITION, RECONCILING_CONDITION,
        STALLED_CONDITION,
    },
};

/// Longest string mirrored from Leen into status; longer ones are cut.
pub const MAX_MIRRORED_CHARS: usize = 1024;

/// Most health details mirrored from Leen into status.
pub const MAX_MIRRORED_DETAILS: usize = 32;

/// Cuts a string mirrored from Leen, so that a huge answer cannot push the status past
/// the API server's object size limit.
pub(crate) fn cap(s: &str) -> String {
    if s.chars().count() <= MAX_MIRRORED_CHARS {
        return s.to_string();
    }
    s.chars().take(MAX_MIRRORED_CHARS).collect::<String>() + "..."
}

pub(crate) fn cap_opt(s: &Option<String>) -> Option<String> {
    s.as_deref().map(cap)
}

/// Copies Leen's view of the connection into status, every string and list capped.
pub(crate) fn mirror(status: &mut LeenConnectionStatus, conn: &Connection) {
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

pub(crate) fn set_ready(
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
pub(crate) fn set_condition(
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
pub(crate) fn set_healthy(
    status: &mut LeenConnectionStatus,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
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
pub(crate) fn set_credentials_valid(
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

pub(crate) fn owner_hint(owner: &str) -> &'static str {
    match owner {
        "CUSTOMER" => " (the customer must act, e.g. update the vendor credentials)",
        "VENDOR" => " (the vendor must act)",
        "LEEN" => " (Leen must act)",
        _ => "",
    }
}

/// A condition reason from Leen's text: metav1's reason shape, letters, digits and `_`.
pub(crate) fn condition_reason(name: &str) -> String {
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
pub(crate) fn set_progress(
    status: &mut LeenConnectionStatus,
    ready: bool,
    reason: Reason,
    deleting: bool,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let stalled = reason.is_stalled();
    let reconciling = !ready && !stalled && (deleting || reason.is_progressing());
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
