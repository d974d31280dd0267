//! The decisions: given a resource and what its plan came to, which status to write,
//! which Event to emit, whether to keep the finalizer, and when to look again.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    Reason, RetryPolicy, bind_status, connection_name, held_binding,
    status::{
        cap, mirror, rfc3339, set_condition, set_credentials_valid, set_healthy, set_progress,
        set_ready,
    },
};
use crate::{
    leen::{Connection, LeenOutcome},
    resource::{
        DeletionRecord, DesiredState, HEALTHY_CONDITION, LeenConnection, LeenConnectionStatus,
        PAUSED_ANNOTATION,
    },
    text::clip,
};

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
    /// A create whose outcome is unknown is not proven absent yet: no POST (and no
    /// `NotCreated`) before `resume_at`; the look-up goes on meanwhile.
    CreatePending {
        /// What is awaited.
        message: String,
        /// When its absence counts as proof.
        resume_at: DateTime<Utc>,
    },
    /// `leen.dev/paused: "true"`: nothing was read or called; only the conditions say so.
    Paused,
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
    /// Any other outcome the plan settles without a call: the reason (whose
    /// `releases_finalizer` says whether the finalizer goes) and the message. A new rule
    /// of the deletion table that needs no Leen call needs no new variant.
    Concluded {
        /// Why.
        reason: Reason,
        /// What status and the Event say.
        message: String,
    },
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
    /// Whether this reconcile sent a DELETE to Leen.
    pub delete_sent: bool,
}

/// An identical failure repeated within this time does not rewrite the status or emit an
/// Event again: with many resources failing alike (a long 429, an outage) the status
/// writes would otherwise cost the API server more than the retries cost Leen.
pub const REPEAT_QUIET: Duration = Duration::from_secs(60);

/// The decision for a live (not deleting) resource after a sync.
pub fn decide_sync(obj: &LeenConnection, obs: &Observation, inputs: &DecisionInputs) -> Decision {
    if let Observation::Paused = obs {
        return decide_paused(obj, false, inputs);
    }
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
            Some(bound) if bound.region.is_none() => bound.region = Some(obj.region()),
            Some(_) => {}
        }
        status.connection_id = Some(binding.connection.to_string());
    }
    let id = connection_name(obj);
    let id = status.connection_id.clone().unwrap_or(id);
    // An observed connection's state is Leen's business, not the spec's.
    let desired = obj
        .spec
        .state
        .filter(|_| !obj.observe_only())
        .map(DesiredState::leen_state);
    let sync_interval = obj
        .sync_interval()
        .and_then(Result::ok)
        .unwrap_or(inputs.sync_interval);

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
            let retry_after = outcome.retry_after();
            (false, reason, message, retry_after)
        }
        Observation::CredentialsMissing(message) => {
            (false, Reason::CredentialsMissing, message.clone(), None)
        }
        Observation::InvalidSpec { reason, message } => (false, *reason, message.clone(), None),
        Observation::Paused => return decide_paused(obj, false, inputs),
        // Only a deletion is ever held.
        Observation::DeletionHeld { message, .. } => {
            (false, Reason::DeletionHeld, message.clone(), None)
        }
        Observation::CreatePending { message, resume_at } => {
            let wait = (*resume_at - inputs.now).to_std().unwrap_or_default();
            (false, Reason::CreatePending, message.clone(), Some(wait))
        }
    };

    // A failed read is retried with backoff, but never later than the next regular sync.
    let requeue = if ready || reason == Reason::ConnectionDeleted {
        sync_interval.mul_f64(0.9 + 0.2 * inputs.jitter.clamp(0.0, 1.0))
    } else {
        inputs
            .policy
            .delay(
                reason,
                retry_after,
                inputs.sync_failures.saturating_add(1),
                inputs.jitter,
            )
            .min(sync_interval)
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
        DeletionStep::Concluded { reason, message } => (*reason, message.clone(), None, None),
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
            let retry_after = outcome.retry_after();
            (reason, message, outcome.http_status(), retry_after)
        }
        DeletionStep::Observed(Observation::CredentialsMissing(message)) => {
            (Reason::CredentialsMissing, message.clone(), None, None)
        }
        DeletionStep::Observed(Observation::InvalidSpec { reason, message }) => {
            (*reason, message.clone(), None, None)
        }
        DeletionStep::Observed(Observation::Paused) => return decide_paused(obj, true, inputs),
        DeletionStep::Observed(Observation::CreatePending { message, resume_at }) => {
            let wait = (*resume_at - inputs.now).to_std().unwrap_or_default();
            (Reason::CreatePending, message.clone(), None, Some(wait))
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
    // Whether a DELETE ever went out: kept across every later outcome.
    let delete_sent = inputs.delete_sent || super::delete_already_sent(obj);
    if !reason.releases_finalizer()
        && (delete_sent == previous.delete_sent)
        && is_quiet_repeat(&previous, reason, &message, inputs.now)
    {
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
        // A held retry of a DELETE the budget already counted is not a new decision
        // for a person: it waits for the window.
        held: previous.held || (reason == Reason::DeletionHeld && !delete_sent),
        delete_sent,
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

/// The decision while `leen.dev/paused` is `"true"`: the status stays as last observed,
/// except the Ready condition (False, `ReconcilePaused`) and the kstatus pair at rest (a
/// paused resource neither progresses nor waits for a fix); a Normal Event when the pause
/// begins; no requeue (removing the annotation brings the resource back at once). A
/// deletion keeps its finalizer.
fn decide_paused(obj: &LeenConnection, deleting: bool, inputs: &DecisionInputs) -> Decision {
    let current = obj.status.clone().unwrap_or_default();
    let mut status = current.clone();
    let generation = obj.metadata.generation;
    let reason = Reason::ReconcilePaused;
    let message = if deleting {
        format!(
            "reconciliation is paused (annotation {PAUSED_ANNOTATION}: \"true\"): the deletion waits, finalizer kept and connection {} not deleted in Leen, until the annotation is removed; spec.deletionPolicy: Orphan releases it without a call",
            connection_name(obj)
        )
    } else {
        format!(
            "reconciliation is paused (annotation {PAUSED_ANNOTATION}: \"true\"): no call to Leen, and status shows connection {} as last observed; remove the annotation to resume",
            connection_name(obj)
        )
    };
    let already = current
        .ready()
        .is_some_and(|c| c.reason == reason.as_str() && c.message == message);
    set_ready(&mut status, false, reason, &message, generation, inputs.now);
    set_progress(
        &mut status,
        false,
        reason,
        false,
        &message,
        generation,
        inputs.now,
    );
    Decision {
        status,
        event: (!already).then_some(EventSpec {
            warning: false,
            reason,
            action: if deleting {
                "DeleteConnection"
            } else {
                "SyncConnection"
            },
            note: message,
        }),
        finalizer: FinalizerAction::Keep,
        requeue_after: None,
    }
}

/// Marks a Ready message that names other resources binding the same connection.
pub(crate) const SHARED_MARK: &str = "also bound by";

pub(crate) fn shared_note(id: &str, others: &[String]) -> Option<String> {
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
pub(crate) fn is_quiet_repeat(
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

/// One line for a failed call, as status shows it.
pub fn describe_failure(outcome: &LeenOutcome) -> String {
    failure(outcome, "").1
}

/// Reason and message of a failed call.
pub(crate) fn failure(outcome: &LeenOutcome, id: &str) -> (Reason, String) {
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
pub(crate) fn state_and_health(conn: &Connection) -> (&str, &str) {
    let state = conn.state.as_deref().unwrap_or("unknown");
    let health = conn
        .health
        .as_ref()
        .and_then(|h| h.status.as_deref())
        .unwrap_or("unknown");
    (state, health)
}
