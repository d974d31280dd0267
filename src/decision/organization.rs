//! What an organization resource's status says, and whether it keeps its in-use
//! finalizer: pure, from what was read (its users, its key, Leen's answer).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Reason, failure, rfc3339};
use crate::{
    leen::{LeenOutcome, Organization},
    resource::{Condition, READY_CONDITION},
};

/// The longest Ready message written (a long list of users is cut).
const MAX_MESSAGE_CHARS: usize = 1024;

/// The word of the Ready condition while a deletion waits for the organization's users.
pub const IN_USE: &str = "InUse";

/// What the reconcile of an organization learnt.
#[derive(Clone, Debug, PartialEq)]
pub enum OrganizationCheck {
    /// The key has read the organization.
    Read(Organization),
    /// The key could not be had (the `CredentialsMissing` message).
    KeyMissing(String),
    /// The spec cannot be acted on (an id that is not a UUID).
    Invalid(String),
    /// Leen answered otherwise.
    Failed(LeenOutcome),
    /// Not asked: the resource is being deleted, and waits for its users.
    Deleting,
}

/// An organization's decided status fields, the finalizer's fate and the next look.
#[derive(Clone, Debug, PartialEq)]
pub struct OrganizationDecision {
    /// The Ready condition (its transition time kept when the status did not change).
    pub ready: Condition,
    /// The organization's name, when read.
    pub name: Option<String>,
    /// Whether the in-use finalizer must be on the resource.
    pub keep_finalizer: bool,
    /// When to look again; `None`: only on a change.
    pub requeue_after: Option<Duration>,
}

/// Decides an organization's Ready condition and finalizer from `check`, its `users` and
/// the Ready condition it had.
pub fn decide_organization(
    check: &OrganizationCheck,
    users: &[String],
    previous: Option<&Condition>,
    generation: Option<i64>,
    now: DateTime<Utc>,
    sync_interval: Duration,
) -> OrganizationDecision {
    let retry = Some(sync_interval.min(Duration::from_secs(10)));
    let (status, reason, message, name, requeue_after) = match check {
        OrganizationCheck::Read(org) => (
            "True",
            Reason::Synced.as_str().to_string(),
            match &org.name {
                Some(name) => format!("the API key reads organization {} ({name})", org.id),
                None => format!("the API key reads organization {}", org.id),
            },
            org.name.clone(),
            Some(sync_interval),
        ),
        OrganizationCheck::KeyMissing(message) => (
            "False",
            Reason::CredentialsMissing.as_str().to_string(),
            message.clone(),
            None,
            retry,
        ),
        OrganizationCheck::Invalid(message) => (
            "False",
            Reason::InvalidSpec.as_str().to_string(),
            message.clone(),
            None,
            None,
        ),
        OrganizationCheck::Failed(outcome) => {
            let (reason, message) = match outcome {
                LeenOutcome::NotFound { detail } => (
                    Reason::NotFound,
                    format!(
                        "Leen has no such organization for this key and region (404: {detail})"
                    ),
                ),
                other => failure(other, ""),
            };
            ("False", reason.as_str().to_string(), message, None, retry)
        }
        OrganizationCheck::Deleting => (
            "False",
            IN_USE.to_string(),
            format!(
                "being deleted; waits for the {} LeenConnection(s) that use it: {}",
                users.len(),
                users.join(", ")
            ),
            None,
            // Looked at again until its users are gone, whatever wakes it or not.
            retry,
        ),
    };
    let mut ready = Condition {
        type_: READY_CONDITION.to_string(),
        status: status.to_string(),
        reason,
        message: message.chars().take(MAX_MESSAGE_CHARS).collect(),
        last_transition_time: rfc3339(now),
        observed_generation: generation,
    };
    if let Some(before) = previous
        && before.status == ready.status
    {
        ready.last_transition_time = before.last_transition_time.clone();
    }
    OrganizationDecision {
        ready,
        name,
        keep_finalizer: !users.is_empty(),
        requeue_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn decide(check: OrganizationCheck, users: &[&str]) -> OrganizationDecision {
        let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        decide_organization(
            &check,
            &users,
            None,
            Some(2),
            DateTime::<Utc>::UNIX_EPOCH,
            Duration::from_secs(300),
        )
    }

    #[test]
    fn an_organization_is_ready_once_its_key_reads_it() {
        let id = Uuid::nil();
        let d = decide(
            OrganizationCheck::Read(Organization {
                id,
                name: Some("Acme".into()),
            }),
            &["team-a/web"],
        );
        assert_eq!(d.ready.status, "True");
        assert!(d.ready.message.contains("Acme"), "{}", d.ready.message);
        assert_eq!(d.name.as_deref(), Some("Acme"));
        assert!(d.keep_finalizer);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(300)));
        assert_eq!(d.ready.observed_generation, Some(2));
        let unused = decide(
            OrganizationCheck::Read(Organization { id, name: None }),
            &[],
        );
        assert!(!unused.keep_finalizer, "no user, no finalizer");
    }

    #[test]
    fn each_failure_says_why_and_is_looked_at_again() {
        let cases = [
            (
                OrganizationCheck::KeyMissing("Secret x not found".into()),
                "CredentialsMissing",
                Some(Duration::from_secs(10)),
            ),
            (
                OrganizationCheck::Invalid("not a UUID".into()),
                "InvalidSpec",
                None,
            ),
            (
                OrganizationCheck::Failed(LeenOutcome::Unauthorized {
                    status: 401,
                    detail: "Invalid API Key".into(),
                }),
                "Unauthorized",
                Some(Duration::from_secs(10)),
            ),
            (
                OrganizationCheck::Failed(LeenOutcome::NotFound {
                    detail: "no".into(),
                }),
                "NotFound",
                Some(Duration::from_secs(10)),
            ),
            (
                OrganizationCheck::Failed(LeenOutcome::Unavailable {
                    status: Some(503),
                    error: "503".into(),
                }),
                "LeenUnavailable",
                Some(Duration::from_secs(10)),
            ),
        ];
        for (check, reason, requeue) in cases {
            let d = decide(check, &["team-a/web"]);
            assert_eq!(d.ready.status, "False");
            assert_eq!(d.ready.reason, reason);
            assert_eq!(d.requeue_after, requeue, "{reason}");
            assert!(d.keep_finalizer, "users keep it whatever Leen says");
        }
    }

    #[test]
    fn a_deletion_waits_for_its_users_and_names_them() {
        let d = decide(OrganizationCheck::Deleting, &["team-a/db", "team-a/web"]);
        assert_eq!(d.ready.reason, IN_USE);
        assert!(d.ready.message.contains("2 LeenConnection(s)"));
        assert!(d.ready.message.contains("team-a/db, team-a/web"));
        assert!(d.keep_finalizer);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(10)));
        assert!(!decide(OrganizationCheck::Deleting, &[]).keep_finalizer);
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let before = Condition {
            type_: READY_CONDITION.into(),
            status: "False".into(),
            reason: "CredentialsMissing".into(),
            message: "old".into(),
            last_transition_time: "2020-01-01T00:00:00Z".into(),
            observed_generation: Some(1),
        };
        let now = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(1);
        let same = decide_organization(
            &OrganizationCheck::Invalid("x".into()),
            &[],
            Some(&before),
            Some(1),
            now,
            Duration::from_secs(300),
        );
        assert_eq!(same.ready.last_transition_time, "2020-01-01T00:00:00Z");
        let flipped = decide_organization(
            &OrganizationCheck::Read(Organization {
                id: Uuid::nil(),
                name: None,
            }),
            &[],
            Some(&before),
            Some(1),
            now,
            Duration::from_secs(300),
        );
        assert_eq!(flipped.ready.last_transition_time, rfc3339(now));
    }
}
