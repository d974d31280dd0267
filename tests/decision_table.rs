//! The deletion table of DESIGN.md and the sync rules, row by row, on the pure decision
//! functions: (resource, what Leen answered) -> (status, Event, finalizer, requeue).

use std::time::Duration;

#[path = "support/fixtures.rs"]
mod fixtures;

use chrono::{TimeZone, Utc};
use fixtures::{Fixture, ID, ORG};
use leen_operator::{
    decision::{
        DecisionInputs, DeletionStep, FinalizerAction, Observation, Reason, RetryPolicy,
        decide_deletion, decide_sync, deletion_shortcut, validate_binding,
    },
    leen::{Connection, Expected, Health, LeenOutcome, classify},
    resource::{BoundConnection, DeletionRecord, LeenConnection, LeenConnectionStatus, Region},
};

fn deleted_connection() -> Connection {
    Connection {
        state: Some("DELETED".into()),
        vendor: Some("CrowdStrike".into()),
        health: Some(Health {
            name: Some("HEALTHY".into()),
            status: Some("HEALTHY".into()),
            description: Some("Connection deleted".into()),
            resolution_owner: Some("LEEN".into()),
            details: vec![],
        }),
        ..Default::default()
    }
}

fn inputs(policy: &RetryPolicy) -> DecisionInputs<'_> {
    DecisionInputs {
        now: Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("time"),
        jitter: 1.0,
        sync_interval: Duration::from_secs(300),
        sync_failures: 0,
        policy,
        also_bound_by: Vec::new(),
        credentials_test_error: None,
    }
}

const OTHER_ID: &str = "0b9e7a52-0000-4000-8000-000000000003";
const OTHER_ORG: &str = "6f1c2d4e-0000-4000-8000-000000000009";

/// What happened when the controller went to delete: Leen's HTTP answer, or a situation in
/// which no call is made.
enum Answer {
    /// Leen answered: status, `Retry-After`, body.
    Http(u16, Option<&'static str>, &'static str),
    /// No answer at all (timeout, refused connection).
    Silence,
    /// The resource says Orphan.
    Orphan,
    /// Another live resource binds the same connection.
    StillReferenced,
    /// No key could be read.
    NoCredentials,
    /// The spec names another region than the one bound.
    RegionChanged,
}

/// When the controller looks again.
#[derive(Debug, PartialEq)]
enum Retry {
    /// Never: the finalizer is gone.
    Done,
    /// Exponential backoff from the transient base.
    Backoff,
    /// Backoff from the 401/403 base.
    Unauthorized,
    /// The slow retry of answers that do not heal by themselves.
    Slow,
    /// After Leen's Retry-After.
    After(u64),
}

struct Row {
    answer: Answer,
    reason: Reason,
    removed: bool,
    warning: bool,
    retry: Retry,
    /// The message says this.
    says: &'static str,
}

fn row(
    answer: Answer,
    reason: Reason,
    removed: bool,
    warning: bool,
    retry: Retry,
    says: &'static str,
) -> Row {
    Row {
        answer,
        reason,
        removed,
        warning,
        retry,
        says,
    }
}

/// The whole deletion table of DESIGN.md, one line a row: from what Leen answered (status,
/// headers, body) through the real `classify` and `decide_deletion` to what the controller
/// does.
#[test]
fn deletion_table() {
    use Answer::*;
    use Retry::*;
    let deleted = r#"{"id":"0b9e7a52-0000-4000-8000-000000000002","organization_id":"6f1c2d4e-0000-4000-8000-000000000001","state":"DELETED","health":{"name":"HEALTHY","status":"HEALTHY"}}"#;
    let still_active = r#"{"id":"0b9e7a52-0000-4000-8000-000000000002","state":"ACTIVE"}"#;
    let other_conn = r#"{"id":"0b9e7a52-0000-4000-8000-000000000003","state":"DELETED"}"#;
    let other_org = r#"{"id":"0b9e7a52-0000-4000-8000-000000000002","organization_id":"6f1c2d4e-0000-4000-8000-000000000009","state":"DELETED"}"#;
    let rows = [
        row(Orphan, Reason::Orphaned, true, false, Done, "left in Leen"),
        row(
            StillReferenced,
            Reason::StillReferenced,
            true,
            false,
            Done,
            "security/renamed binds the same connection",
        ),
        row(
            Http(200, None, deleted),
            Reason::Deleted,
            true,
            false,
            Done,
            "state DELETED",
        ),
        row(
            Http(200, None, still_active),
            Reason::Deleted,
            true,
            true,
            Done,
            "reports state ACTIVE, not DELETED",
        ),
        row(
            Http(404, None, r#"{"detail":"Connection Not Found"}"#),
            Reason::AlreadyDeleted,
            true,
            false,
            Done,
            "Connection Not Found",
        ),
        row(
            Http(200, None, "{}"),
            Reason::InvalidResponse,
            false,
            true,
            Backoff,
            "without a connection id",
        ),
        row(
            Http(200, None, "[]"),
            Reason::InvalidResponse,
            false,
            true,
            Backoff,
            "not a JSON object",
        ),
        row(
            Http(200, None, other_conn),
            Reason::InvalidResponse,
            false,
            true,
            Backoff,
            OTHER_ID,
        ),
        row(
            Http(200, None, other_org),
            Reason::InvalidResponse,
            false,
            true,
            Backoff,
            OTHER_ORG,
        ),
        row(
            Http(200, None, "{not json"),
            Reason::InvalidResponse,
            false,
            true,
            Backoff,
            "not JSON",
        ),
        row(
            Http(202, None, r#"{"detail":"scheduled"}"#),
            Reason::InvalidResponse,
            false,
            true,
            Backoff,
            "answered 202, not 200",
        ),
        row(
            Http(204, None, ""),
            Reason::InvalidResponse,
            false,
            true,
            Backoff,
            "answered 204, not 200",
        ),
        row(
            Http(404, None, "<html><body>404 Not Found</body></html>"),
            Reason::UnexpectedResponse,
            false,
            true,
            Backoff,
            "proves nothing",
        ),
        row(
            Http(404, None, ""),
            Reason::UnexpectedResponse,
            false,
            true,
            Backoff,
            "proves nothing",
        ),
        row(
            Http(401, None, r#"{"detail":"Invalid API Key"}"#),
            Reason::Unauthorized,
            false,
            true,
            Unauthorized,
            "Invalid API Key",
        ),
        row(
            Http(403, None, ""),
            Reason::Unauthorized,
            false,
            true,
            Unauthorized,
            "403",
        ),
        row(
            Http(
                422,
                None,
                r#"{"detail":[{"loc":["path","connection_id"],"msg":"value is not a valid uuid","type":"type_error.uuid"}]}"#,
            ),
            Reason::Rejected,
            false,
            true,
            Slow,
            "path.connection_id: value is not a valid uuid",
        ),
        row(
            Http(429, Some("42"), ""),
            Reason::RateLimited,
            false,
            true,
            After(42),
            "429",
        ),
        row(
            Http(429, None, ""),
            Reason::RateLimited,
            false,
            true,
            Backoff,
            "429",
        ),
        row(
            Http(503, None, "<html>down</html>"),
            Reason::LeenUnavailable,
            false,
            true,
            Backoff,
            "503",
        ),
        row(
            Http(500, None, r#"{"detail":"boom"}"#),
            Reason::LeenUnavailable,
            false,
            true,
            Backoff,
            "boom",
        ),
        row(
            Silence,
            Reason::LeenUnavailable,
            false,
            true,
            Backoff,
            "timed out",
        ),
        row(
            Http(409, None, "conflict"),
            Reason::UnexpectedResponse,
            false,
            true,
            Backoff,
            "409",
        ),
        row(
            Http(302, None, ""),
            Reason::UnexpectedResponse,
            false,
            true,
            Backoff,
            "302",
        ),
        row(
            NoCredentials,
            Reason::CredentialsMissing,
            false,
            true,
            Backoff,
            "not found",
        ),
        row(
            RegionChanged,
            Reason::ImmutableFieldChanged,
            false,
            true,
            Slow,
            "bound to region us",
        ),
    ];
    let policy = RetryPolicy::default();
    let expected = Expected {
        organization: ORG.parse().expect("uuid"),
        connection: ID.parse().expect("uuid"),
    };
    for row in rows {
        let mut obj = match row.answer {
            Answer::Orphan => LeenConnection::test().orphan(),
            _ => LeenConnection::test(),
        };
        obj.status = Some(LeenConnectionStatus {
            bound_connection: Some(BoundConnection {
                region: Some(Region::Us),
                organization_id: ORG.into(),
                connection_id: ID.into(),
            }),
            ..Default::default()
        });
        let step = match &row.answer {
            Answer::Orphan => deletion_shortcut(&obj).expect("Orphan is a shortcut"),
            Answer::StillReferenced => DeletionStep::StillReferenced {
                by: "security/renamed".into(),
            },
            Answer::NoCredentials => DeletionStep::Observed(Observation::CredentialsMissing(
                "Secret security/leen-api-key not found".into(),
            )),
            Answer::RegionChanged => {
                obj.spec.region = Region::Eu;
                DeletionStep::Observed(validate_binding(&obj).expect_err("region is bound"))
            }
            Answer::Silence => {
                DeletionStep::Observed(Observation::Leen(LeenOutcome::Unavailable {
                    status: None,
                    error: "timed out".into(),
                }))
            }
            Answer::Http(status, retry_after, body) => DeletionStep::Observed(Observation::Leen(
                classify(expected, *status, *retry_after, Ok(body.as_bytes())),
            )),
        };
        let name = format!("{:?}", step);
        let d = decide_deletion(&obj, &step, &inputs(&policy));
        let ready = d.status.ready().expect("Ready condition");
        assert_eq!(ready.status, "False", "{name}");
        assert_eq!(ready.reason, row.reason.as_str(), "{name}");
        assert!(
            ready.message.contains(row.says),
            "{name}: {}",
            ready.message
        );
        assert_eq!(ready.observed_generation, Some(3), "{name}");
        assert_eq!(
            d.finalizer,
            if row.removed {
                FinalizerAction::Remove
            } else {
                FinalizerAction::Keep
            },
            "{name}"
        );
        let event = d.event.as_ref().expect("every outcome emits an Event");
        assert_eq!(
            (event.reason, event.warning),
            (row.reason, row.warning),
            "{name}"
        );
        assert_eq!(event.action, "DeleteConnection");
        let retry = match d.requeue_after {
            None => Retry::Done,
            Some(d) if d == policy.transient_base => Retry::Backoff,
            Some(d) if d == policy.unauthorized_base => Retry::Unauthorized,
            Some(d) if d == policy.slow_retry.mul_f64(1.1) => Retry::Slow,
            Some(d) => Retry::After(d.as_secs()),
        };
        assert_eq!(retry, row.retry, "{name}");
        let record = d.status.deletion.as_ref().expect("deletion record");
        assert_eq!(record.attempts, 1, "{name}");
        assert_eq!(record.outcome.as_deref(), Some(row.reason.as_str()));
        assert_eq!(record.next_retry_time.is_some(), !row.removed, "{name}");
        if !row.removed {
            assert!(
                ready.message.contains("deletionPolicy: Orphan"),
                "{name}: a kept finalizer says how to release it: {}",
                ready.message
            );
            assert!(record.last_error.is_some(), "{name}");
        }
    }
}

#[test]
fn deleted_row_mirrors_state_and_health() {
    let policy = RetryPolicy::default();
    let d = decide_deletion(
        &LeenConnection::test(),
        &DeletionStep::Observed(Observation::Leen(LeenOutcome::Success(Box::new(
            deleted_connection(),
        )))),
        &inputs(&policy),
    );
    assert_eq!(d.status.state.as_deref(), Some("DELETED"));
    let health = d.status.health.expect("health");
    assert_eq!(health.description.as_deref(), Some("Connection deleted"));
    assert_eq!(health.resolution_owner.as_deref(), Some("LEEN"));
    assert_eq!(d.status.vendor.as_deref(), Some("CrowdStrike"));
    assert_eq!(
        d.status.deletion.and_then(|r| r.last_http_status),
        Some(200)
    );
}

#[test]
fn rejected_message_carries_the_validation_detail() {
    let policy = RetryPolicy::default();
    let d = decide_deletion(
        &LeenConnection::test(),
        &DeletionStep::Observed(Observation::Leen(LeenOutcome::Rejected {
            detail: "path.connection_id: value is not a valid uuid".into(),
        })),
        &inputs(&policy),
    );
    let message = &d.status.ready().expect("ready").message;
    assert!(
        message.contains("path.connection_id: value is not a valid uuid"),
        "{message}"
    );
}

#[test]
fn backoff_grows_and_is_capped() {
    let policy = RetryPolicy::default();
    let mut obj = LeenConnection::test();
    let step = DeletionStep::Observed(Observation::Leen(LeenOutcome::Unavailable {
        status: Some(500),
        error: "boom".into(),
    }));
    let mut delays = Vec::new();
    for i in 0..12 {
        // Attempts further apart than REPEAT_QUIET are each recorded.
        let mut at = inputs(&policy);
        at.now += chrono::Duration::minutes(2 * i);
        let d = decide_deletion(&obj, &step, &at);
        delays.push(d.requeue_after.expect("requeue"));
        obj.status = Some(d.status);
    }
    assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
    assert_eq!(delays[0], Duration::from_secs(2));
    assert_eq!(delays[1], Duration::from_secs(4));
    assert_eq!(*delays.last().expect("last"), policy.transient_cap);
    assert_eq!(
        obj.status.and_then(|s| s.deletion).map(|r| r.attempts),
        Some(12)
    );
    // Jitter draws from [d/2, d].
    let low = RetryPolicy::backoff(Duration::from_secs(8), Duration::from_secs(300), 1, 0.0);
    assert_eq!(low, Duration::from_secs(4));
}

#[test]
fn confirmed_deletion_is_released_without_a_new_call() {
    let mut obj = LeenConnection::test();
    obj.status = Some(LeenConnectionStatus {
        state: Some("DELETED".into()),
        deletion: Some(DeletionRecord {
            attempts: 1,
            outcome: Some("Deleted".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let step = deletion_shortcut(&obj).expect("shortcut");
    assert_eq!(step, DeletionStep::AlreadyConfirmed(Reason::Deleted));
    let policy = RetryPolicy::default();
    let d = decide_deletion(&obj, &step, &inputs(&policy));
    assert_eq!(d.finalizer, FinalizerAction::Remove);
    assert_eq!(Some(d.status), obj.status, "status already says it");
}

#[test]
fn a_failed_attempt_is_never_a_shortcut() {
    let mut obj = LeenConnection::test();
    obj.status = Some(LeenConnectionStatus {
        deletion: Some(DeletionRecord {
            attempts: 3,
            outcome: Some("LeenUnavailable".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(deletion_shortcut(&obj), None);
}

#[test]
fn only_success_rows_remove_the_finalizer() {
    let policy = RetryPolicy::default();
    let obj = LeenConnection::test();
    let releasing = [Reason::Deleted, Reason::AlreadyDeleted, Reason::Orphaned];
    let outcomes = [
        LeenOutcome::Unauthorized {
            status: 401,
            detail: String::new(),
        },
        LeenOutcome::Rejected {
            detail: String::new(),
        },
        LeenOutcome::RateLimited { retry_after: None },
        LeenOutcome::Unavailable {
            status: None,
            error: String::new(),
        },
        LeenOutcome::InvalidResponse {
            status: 200,
            error: String::new(),
        },
        LeenOutcome::Unexpected {
            status: 302,
            detail: String::new(),
        },
        LeenOutcome::Unexpected {
            status: 400,
            detail: String::new(),
        },
    ];
    for outcome in outcomes {
        let d = decide_deletion(
            &obj,
            &DeletionStep::Observed(Observation::Leen(outcome.clone())),
            &inputs(&policy),
        );
        assert_eq!(d.finalizer, FinalizerAction::Keep, "{outcome:?}");
        let reason = d.event.expect("event").reason;
        assert!(!releasing.contains(&reason), "{outcome:?}");
    }
}

#[test]
fn sync_rows() {
    let policy = RetryPolicy::default();
    let obj = LeenConnection::test();
    let active = Connection {
        state: Some("ACTIVE".into()),
        ..deleted_connection()
    };
    let cases = [
        (
            Observation::Leen(LeenOutcome::Success(Box::new(active))),
            "True",
            "Synced",
        ),
        (
            Observation::Leen(LeenOutcome::Success(Box::new(deleted_connection()))),
            "False",
            "ConnectionDeleted",
        ),
        (
            Observation::Leen(LeenOutcome::NotFound {
                detail: String::new(),
            }),
            "False",
            "NotFound",
        ),
        (
            Observation::Leen(LeenOutcome::Unauthorized {
                status: 401,
                detail: String::new(),
            }),
            "False",
            "Unauthorized",
        ),
        (
            Observation::CredentialsMissing("no key".into()),
            "False",
            "CredentialsMissing",
        ),
    ];
    for (obs, ready, reason) in cases {
        let d = decide_sync(&obj, &obs, &inputs(&policy));
        let c = d.status.ready().expect("Ready");
        assert_eq!((c.status.as_str(), c.reason.as_str()), (ready, reason));
        assert_eq!(d.finalizer, FinalizerAction::Keep);
        assert_eq!(d.status.observed_generation, Some(3));
        assert!(
            d.requeue_after
                .is_some_and(|r| r <= Duration::from_secs(330)),
            "always looks again, never later than the sync interval (+10% jitter)"
        );
        assert_eq!(
            d.event.is_some(),
            ready == "False",
            "a first failure emits an Event; a first success does not"
        );
        assert_eq!(
            d.status.bound_connection,
            Some(BoundConnection {
                region: Some(Region::Us),
                organization_id: ORG.into(),
                connection_id: ID.into()
            })
        );
    }
}

#[test]
fn unchanged_sync_writes_nothing_and_emits_nothing() {
    let policy = RetryPolicy::default();
    let mut obj = LeenConnection::test();
    let obs = Observation::Leen(LeenOutcome::Success(Box::new(Connection {
        state: Some("ACTIVE".into()),
        ..deleted_connection()
    })));
    let first = decide_sync(&obj, &obs, &inputs(&policy));
    obj.status = Some(first.status.clone());
    let mut later = inputs(&policy);
    later.now += chrono::Duration::minutes(5);
    let second = decide_sync(&obj, &obs, &later);
    assert_eq!(Some(second.status), obj.status, "no status write");
    assert!(second.event.is_none(), "no repeated Event");
}

#[test]
fn region_and_ids_are_validated_and_bound() {
    let mut obj = LeenConnection::test();
    assert!(validate_binding(&obj).is_ok());
    obj.spec.connection_id = Some("not-a-uuid".into());
    assert!(matches!(
        validate_binding(&obj),
        Err(Observation::InvalidSpec {
            reason: Reason::InvalidSpec,
            ..
        })
    ));
    let mut obj = LeenConnection::test();
    obj.status = Some(LeenConnectionStatus {
        bound_connection: Some(BoundConnection {
            region: Some(Region::Us),
            organization_id: ORG.into(),
            connection_id: "11111111-0000-4000-8000-000000000000".into(),
        }),
        ..Default::default()
    });
    assert!(matches!(
        validate_binding(&obj),
        Err(Observation::InvalidSpec {
            reason: Reason::ImmutableFieldChanged,
            ..
        })
    ));
}

#[test]
fn an_identical_failure_soon_after_writes_nothing_and_emits_nothing() {
    let policy = RetryPolicy::default();
    let mut obj = LeenConnection::test();
    let step = DeletionStep::Observed(Observation::Leen(LeenOutcome::RateLimited {
        retry_after: Some(Duration::from_secs(5)),
    }));
    let first = decide_deletion(&obj, &step, &inputs(&policy));
    assert!(first.event.is_some());
    obj.status = Some(first.status.clone());
    let mut soon = inputs(&policy);
    soon.now += chrono::Duration::seconds(30);
    let again = decide_deletion(&obj, &step, &soon);
    assert_eq!(Some(&again.status), obj.status.as_ref(), "no status write");
    assert!(again.event.is_none(), "no second Event");
    assert_eq!(again.finalizer, FinalizerAction::Keep);
    assert_eq!(again.requeue_after, Some(Duration::from_secs(5)));
    // Just inside REPEAT_QUIET: still quiet; at it: the record is brought up to date.
    let mut edge = inputs(&policy);
    edge.now += chrono::Duration::seconds(59);
    assert!(decide_deletion(&obj, &step, &edge).event.is_none());
    let mut later = inputs(&policy);
    later.now += chrono::Duration::seconds(60);
    let later = decide_deletion(&obj, &step, &later);
    assert_eq!(later.status.deletion.map(|r| r.attempts), Some(2));
    assert!(later.event.is_some());
    // A different failure is news at once.
    let other = DeletionStep::Observed(Observation::Leen(LeenOutcome::Unavailable {
        status: Some(503),
        error: "down".into(),
    }));
    assert!(decide_deletion(&obj, &other, &soon).event.is_some());
}

#[test]
fn a_shared_connection_shows_on_the_live_resource() {
    let policy = RetryPolicy::default();
    let obj = LeenConnection::test();
    let obs = Observation::Leen(LeenOutcome::Success(Box::new(Connection {
        state: Some("ACTIVE".into()),
        ..deleted_connection()
    })));
    let mut shared = inputs(&policy);
    shared.also_bound_by = vec!["apps/renamed".into()];
    let d = decide_sync(&obj, &obs, &shared);
    let ready = d.status.ready().expect("Ready");
    assert_eq!(ready.status, "True");
    assert!(
        ready.message.contains("also bound by apps/renamed"),
        "{}",
        ready.message
    );
    let event = d.event.expect("an Event says it");
    assert_eq!(event.reason, Reason::SharedConnection);
    assert!(event.warning);
}

fn condition<'a>(status: &'a LeenConnectionStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status
        .condition(type_)
        .unwrap_or_else(|| panic!("{type_} condition in {status:?}"));
    (c.status.as_str(), c.reason.as_str())
}

/// The four conditions, as Flux, Argo CD's kstatus users and `kubectl wait` read them.
#[test]
fn conditions_table() {
    let policy = RetryPolicy::default();
    let live = LeenConnection::test();
    let read = |state: &str, health: Option<Health>| {
        Observation::Leen(LeenOutcome::Success(Box::new(Connection {
            state: Some(state.into()),
            health,
            ..Default::default()
        })))
    };
    let healthy = Health {
        name: Some("HEALTHY".into()),
        status: Some("HEALTHY".into()),
        ..Default::default()
    };
    let unauthorized = Health {
        name: Some("UNAUTHORIZED".into()),
        status: Some("UNHEALTHY".into()),
        description: Some("Vendor credentials are invalid".into()),
        resolution_owner: Some("CUSTOMER".into()),
        details: vec![],
    };
    // (observation, Ready, Healthy, Reconciling, Stalled)
    let rows = [
        (
            read("ACTIVE", Some(healthy.clone())),
            ("True", "Synced"),
            ("True", "HEALTHY"),
            "False",
            "False",
        ),
        (
            read("ACTIVE", Some(unauthorized.clone())),
            ("True", "Synced"),
            ("False", "UNAUTHORIZED"),
            "False",
            "False",
        ),
        (
            read("PENDING", Some(healthy.clone())),
            ("False", "Pending"),
            ("True", "HEALTHY"),
            "True",
            "False",
        ),
        (
            read("PAUSED", Some(healthy.clone())),
            ("False", "Paused"),
            ("True", "HEALTHY"),
            "False",
            "False",
        ),
        (
            read("ARCHIVED", None),
            ("False", "UnknownState"),
            ("Unknown", "NoHealthReported"),
            "False",
            "False",
        ),
        (
            Observation::Leen(LeenOutcome::Unavailable {
                status: Some(503),
                error: "down".into(),
            }),
            ("False", "LeenUnavailable"),
            ("Unknown", "NotRead"),
            "True",
            "False",
        ),
        (
            Observation::Leen(LeenOutcome::Unauthorized {
                status: 401,
                detail: "Invalid API Key".into(),
            }),
            ("False", "Unauthorized"),
            ("Unknown", "NotRead"),
            "False",
            "True",
        ),
        (
            Observation::CredentialsMissing("no key".into()),
            ("False", "CredentialsMissing"),
            ("Unknown", "NotRead"),
            "False",
            "True",
        ),
    ];
    for (obs, ready, healthy_c, reconciling, stalled) in rows {
        let d = decide_sync(&live, &obs, &inputs(&policy));
        let s = &d.status;
        assert_eq!(condition(s, "Ready"), ready, "{obs:?}");
        assert_eq!(condition(s, "Healthy"), healthy_c, "{obs:?}");
        assert_eq!(condition(s, "Reconciling").0, reconciling, "{obs:?}");
        assert_eq!(condition(s, "Stalled").0, stalled, "{obs:?}");
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3)),
            "observedGeneration on each: {:?}",
            s.conditions
        );
    }
    // The unhealthy message names the health, its description and who must act.
    let d = decide_sync(&live, &read("ACTIVE", Some(unauthorized)), &inputs(&policy));
    let message = &d.status.condition("Healthy").expect("Healthy").message;
    assert!(
        message.contains("UNAUTHORIZED")
            && message.contains("Vendor credentials are invalid")
            && message.contains("CUSTOMER"),
        "{message}"
    );

    // While deleting: Reconciling until done, Stalled when a person must act.
    let deleting = |step: DeletionStep| decide_deletion(&live, &step, &inputs(&policy)).status;
    let s = deleting(DeletionStep::Observed(Observation::Leen(
        LeenOutcome::Unavailable {
            status: None,
            error: "timed out".into(),
        },
    )));
    assert_eq!(
        (condition(&s, "Reconciling").0, condition(&s, "Stalled").0),
        ("True", "False")
    );
    let s = deleting(DeletionStep::Observed(Observation::DeletionHeld {
        message: "held".into(),
        resume_at: None,
    }));
    assert_eq!(
        (condition(&s, "Reconciling").0, condition(&s, "Stalled")),
        ("False", ("True", "DeletionHeld"))
    );
    let s = deleting(DeletionStep::Observed(Observation::Leen(
        LeenOutcome::Success(Box::new(Connection {
            id: Some(ID.into()),
            state: Some("DELETED".into()),
            ..Default::default()
        })),
    )));
    assert_eq!(
        (condition(&s, "Reconciling").0, condition(&s, "Stalled").0),
        ("False", "False")
    );
}

#[test]
fn every_reason_word_parses_back() {
    use strum::IntoEnumIterator;
    for r in Reason::iter() {
        assert_eq!(Reason::parse(r.as_str()), Some(r), "{r:?}");
    }
    assert_eq!(Reason::AlreadyDeleted.as_str(), "AlreadyDeleted");
    assert_eq!(Reason::parse("alreadydeleted"), None);
}

fn leen_says(state: &str, oauth: Option<&str>) -> Observation {
    Observation::Leen(LeenOutcome::Success(Box::new(Connection {
        id: Some(ID.into()),
        state: Some(state.into()),
        oauth2_authorize_url: oauth.map(str::to_string),
        ..deleted_connection()
    })))
}

fn with_state(state: &str) -> LeenConnection {
    let mut obj = LeenConnection::test();
    obj.spec.state = serde_json::from_value(serde_json::json!(state)).expect("state");
    obj
}

#[test]
fn desired_state_and_authorization_rows() {
    let policy = RetryPolicy::default();
    let rows = [
        // (spec.state, Leen's state, oauth URL, Ready, reason, Reconciling)
        (None, "PAUSED", None, "False", "Paused", "False"),
        (Some("Paused"), "PAUSED", None, "True", "Paused", "False"),
        (
            Some("Paused"),
            "ACTIVE",
            None,
            "False",
            "StateDrift",
            "True",
        ),
        (
            Some("Active"),
            "PAUSED",
            None,
            "False",
            "StateDrift",
            "True",
        ),
        (Some("Active"), "ACTIVE", None, "True", "Synced", "False"),
        (
            None,
            "PENDING",
            Some("https://login/x"),
            "False",
            "AwaitingAuthorization",
            "True",
        ),
        (None, "PENDING", None, "False", "Pending", "True"),
    ];
    for (desired, state, oauth, ready, reason, reconciling) in rows {
        let obj = desired.map_or_else(LeenConnection::test, with_state);
        let d = decide_sync(&obj, &leen_says(state, oauth), &inputs(&policy));
        let what = format!("{desired:?} {state} {oauth:?}");
        assert_eq!(condition(&d.status, "Ready"), (ready, reason), "{what}");
        assert_eq!(condition(&d.status, "Reconciling").0, reconciling, "{what}");
        assert_eq!(d.status.oauth2_authorize_url.as_deref(), oauth, "{what}");
        assert_eq!(d.status.connection_id.as_deref(), Some(ID), "{what}");
    }
}

#[test]
fn plan_update_toggles_only_active_and_paused_and_sends_changed_credentials() {
    use leen_operator::{credentials::Credentials, decision::plan_update};
    let data = |v: &str| {
        std::collections::BTreeMap::from([(
            "token".to_string(),
            k8s_openapi::ByteString(v.as_bytes().to_vec()),
        )])
    };
    let creds = Credentials::from_secret_data(&data("one")).expect("creds");
    let leen = |state: &str| Connection {
        state: Some(state.into()),
        ..Default::default()
    };
    for (desired, now, want) in [
        (Some("Paused"), "ACTIVE", Some("PAUSED")),
        (Some("Active"), "PAUSED", Some("ACTIVE")),
        (Some("Paused"), "PAUSED", None),
        (Some("Active"), "PENDING", None),
        (Some("Paused"), "DELETED", None),
        (None, "PAUSED", None),
    ] {
        let obj = desired.map_or_else(LeenConnection::test, with_state);
        assert_eq!(
            plan_update(&obj, &leen(now), None).state,
            want,
            "{desired:?} {now}"
        );
    }
    let mut obj = LeenConnection::test();
    let plan = plan_update(&obj, &leen("ACTIVE"), Some(&creds));
    assert!(plan.credentials.is_some(), "never sent: send");
    let uid = obj.metadata.uid.clone().expect("uid");
    obj.status = Some(LeenConnectionStatus {
        credentials: Some(leen_operator::resource::CredentialsStatus {
            applied_hash: Some(creds.salted_hash(&uid)),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert!(
        plan_update(&obj, &leen("ACTIVE"), Some(&creds))
            .credentials
            .is_none(),
        "unchanged: nothing to send"
    );
    let rotated = Credentials::from_secret_data(&data("two")).expect("creds");
    assert!(
        plan_update(&obj, &leen("ACTIVE"), Some(&rotated))
            .credentials
            .is_some(),
        "changed: send once"
    );
}

#[test]
fn create_mode_binding_rows() {
    let create = LeenConnection::to_create("QUALYS");
    assert_eq!(validate_binding(&create), Ok(None), "nothing bound: create");
    let mut no_vendor = create.clone();
    no_vendor.spec.vendor = None;
    assert!(matches!(
        validate_binding(&no_vendor),
        Err(Observation::InvalidSpec { reason: Reason::InvalidSpec, ref message }) if message.contains("spec.vendor is required")
    ));
    let mut lower = create.clone();
    lower.spec.vendor = Some("qualys".into());
    assert!(validate_binding(&lower).is_err());
    // Created and bound: the binding comes from status.
    let mut created = create.clone();
    created.status = Some(LeenConnectionStatus {
        bound_connection: Some(BoundConnection {
            region: Some(Region::Us),
            organization_id: ORG.into(),
            connection_id: OTHER_ID.into(),
        }),
        ..Default::default()
    });
    let bound = validate_binding(&created).expect("valid").expect("bound");
    assert_eq!(bound.connection.to_string(), OTHER_ID);
    // Writing the bound id into the spec later is fine; another id is not.
    let mut same = created.clone();
    same.spec.connection_id = Some(OTHER_ID.into());
    assert!(validate_binding(&same).is_ok());
    let mut other = created;
    other.spec.connection_id = Some(ID.into());
    assert!(matches!(
        validate_binding(&other),
        Err(Observation::InvalidSpec {
            reason: Reason::ImmutableFieldChanged,
            ..
        })
    ));
}

#[test]
fn credentials_valid_follows_the_test_of_what_was_sent() {
    use leen_operator::resource::{CredentialsStatus, CredentialsTest, SecretRef};
    let policy = RetryPolicy::default();
    let mut obj = LeenConnection::test();
    let active = leen_says("ACTIVE", None);
    // No credentials Secret: no condition.
    let d = decide_sync(&obj, &active, &inputs(&policy));
    assert!(d.status.condition("CredentialsValid").is_none());
    obj.spec.credentials_secret_ref = Some(SecretRef {
        name: "creds".into(),
    });
    let tested = |hash: &str, valid: bool| CredentialsStatus {
        applied_hash: Some("h1".into()),
        last_test: Some(CredentialsTest {
            valid,
            message: Some("m".into()),
            applied_hash: Some(hash.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    for (credentials, obs, error, want) in [
        (None, &active, None, ("Unknown", "NotTested")),
        (Some(tested("h1", true)), &active, None, ("True", "Valid")),
        (
            Some(tested("h1", false)),
            &active,
            None,
            ("False", "Invalid"),
        ),
        // A test of older credentials says nothing of the ones sent now.
        (
            Some(tested("h0", true)),
            &active,
            None,
            ("Unknown", "NotTested"),
        ),
        (
            Some(tested("h1", true)),
            &active,
            Some("Leen is unavailable"),
            ("Unknown", "TestFailed"),
        ),
        (
            None,
            &Observation::CredentialsMissing("Secret creds not found".into()),
            None,
            ("False", "CredentialsMissing"),
        ),
    ] {
        obj.status = Some(LeenConnectionStatus {
            credentials,
            ..Default::default()
        });
        let mut i = inputs(&policy);
        i.credentials_test_error = error.map(str::to_string);
        let d = decide_sync(&obj, obs, &i);
        assert_eq!(condition(&d.status, "CredentialsValid"), want);
    }
}

#[test]
fn a_deletion_that_never_created_anything_releases_without_a_call() {
    let policy = RetryPolicy::default();
    let obj = LeenConnection::to_create("QUALYS").deleting();
    let d = decide_deletion(
        &obj,
        &DeletionStep::NotCreated {
            identifier: "security/crowdstrike-prod/u-1".into(),
        },
        &inputs(&policy),
    );
    assert_eq!(d.finalizer, FinalizerAction::Remove);
    assert_eq!(condition(&d.status, "Ready"), ("False", "NotCreated"));
    assert!(d.event.is_some_and(|e| !e.warning));
}

#[test]
fn a_rate_limited_read_waits_exactly_what_leen_asked() {
    let policy = RetryPolicy::default();
    let limited = |after: Option<u64>| {
        Observation::Leen(LeenOutcome::RateLimited {
            retry_after: after.map(Duration::from_secs),
        })
    };
    let obj = LeenConnection::test();
    let d = decide_sync(&obj, &limited(Some(42)), &inputs(&policy));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(42)));
    // Without Retry-After: the first transient step (jitter 1: the base, 2 s).
    let d = decide_sync(&obj, &limited(None), &inputs(&policy));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(2)));
    // Never later than the next regular sync.
    let d = decide_sync(&obj, &limited(Some(3000)), &inputs(&policy));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(300)));
    // And on a deletion, the same wait.
    let d = decide_deletion(
        &obj.deleting(),
        &DeletionStep::Observed(limited(Some(42))),
        &inputs(&policy),
    );
    assert_eq!(d.requeue_after, Some(Duration::from_secs(42)));
}

#[test]
fn vendor_names_identifiers_and_connection_names() {
    use leen_operator::decision::{connection_name, create_identifier, is_vendor_name};
    for (name, ok) in [
        ("QUALYS", true),
        ("MS_DEFENDER_VMS", true),
        ("WIZ2", true),
        ("A", true),
        ("qualys", false),
        ("_QUALYS", false),
        ("2WIZ", false),
        ("WIZ-VMS", false),
        ("", false),
    ] {
        assert_eq!(is_vendor_name(name), ok, "{name:?}");
    }
    assert!(is_vendor_name(&"A".repeat(128)));
    assert!(!is_vendor_name(&"A".repeat(129)));

    // The identifier: recorded at the create's start, else the spec's, else derived.
    let mut obj = LeenConnection::to_create("QUALYS");
    assert_eq!(create_identifier(&obj), "security/crowdstrike-prod/u-1");
    obj.spec.identifier = Some("mine".into());
    assert_eq!(create_identifier(&obj), "mine");
    obj.status = Some(LeenConnectionStatus {
        creation: Some(leen_operator::resource::CreationRecord {
            identifier: "recorded".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(create_identifier(&obj), "recorded");

    // The connection a resource stands for: bound, else the spec's, else none yet.
    assert_eq!(
        connection_name(&LeenConnection::to_create("QUALYS")),
        "(not created)"
    );
    assert_eq!(connection_name(&LeenConnection::test()), ID);
    let mut bound = LeenConnection::test();
    bound.status = Some(LeenConnectionStatus {
        bound_connection: Some(BoundConnection {
            region: Some(Region::Us),
            organization_id: ORG.into(),
            connection_id: OTHER_ID.into(),
        }),
        ..Default::default()
    });
    assert_eq!(connection_name(&bound), OTHER_ID);
}

#[test]
fn mirrored_strings_are_capped_and_reasons_cleaned() {
    let policy = RetryPolicy::default();
    let long = "x".repeat(leen_operator::decision::MAX_MIRRORED_CHARS + 10);
    let exact = "y".repeat(leen_operator::decision::MAX_MIRRORED_CHARS);
    let obs = Observation::Leen(LeenOutcome::Success(Box::new(Connection {
        id: Some(ID.into()),
        state: Some("ACTIVE".into()),
        vendor: Some(long.clone()),
        identifier: Some(exact.clone()),
        health: Some(Health {
            name: Some("9 vendor-down!".into()),
            status: Some("UNHEALTHY".into()),
            description: Some("the vendor is down".into()),
            resolution_owner: Some("VENDOR".into()),
            details: vec![Default::default(); leen_operator::decision::MAX_MIRRORED_DETAILS + 5],
        }),
        ..Default::default()
    })));
    let d = decide_sync(&LeenConnection::test(), &obs, &inputs(&policy));
    let vendor = d.status.vendor.clone().expect("vendor");
    assert_eq!(
        vendor.chars().count(),
        leen_operator::decision::MAX_MIRRORED_CHARS + 3
    );
    assert!(vendor.ends_with("..."));
    assert_eq!(
        d.status.identifier.as_deref(),
        Some(exact.as_str()),
        "at the cap: kept whole"
    );
    assert_eq!(
        d.status.health.as_ref().map(|h| h.details.len()),
        Some(leen_operator::decision::MAX_MIRRORED_DETAILS)
    );
    // A health name that is not a condition reason: cleaned to one.
    let healthy = d.status.condition("Healthy").expect("Healthy");
    assert_eq!(healthy.reason, "Unhealthy", "starts with a digit");
    assert!(
        healthy.message.contains("the vendor must act"),
        "{}",
        healthy.message
    );
}

#[test]
fn a_connection_bound_by_many_names_five_and_counts_the_rest() {
    let policy = RetryPolicy::default();
    let mut i = inputs(&policy);
    i.also_bound_by = (1..=7).map(|n| format!("apps/r{n}")).collect();
    let d = decide_sync(&LeenConnection::test(), &leen_says("ACTIVE", None), &i);
    let message = &d.status.ready().expect("Ready").message;
    assert!(message.contains("apps/r5 and 2 more"), "{message}");
    assert!(!message.contains("apps/r6"), "{message}");
    let event = d.event.expect("the sharing is news");
    assert!(event.warning);
    assert_eq!(event.reason, Reason::SharedConnection);
}

#[test]
fn sync_events_warn_on_failures_only() {
    let policy = RetryPolicy::default();
    // From Ready (Synced) to each outcome: the Event's type says whether it is a failure.
    let mut ready = LeenConnection::test();
    ready.status = Some(decide_sync(&ready, &leen_says("ACTIVE", None), &inputs(&policy)).status);
    let rows = [
        (leen_says("PAUSED", None), Reason::Paused, false),
        (leen_says("PENDING", None), Reason::Pending, false),
        (leen_says("DELETED", None), Reason::ConnectionDeleted, false),
        (
            Observation::Leen(LeenOutcome::NotFound {
                detail: "Connection Not Found".into(),
            }),
            Reason::NotFound,
            true,
        ),
        (
            Observation::Leen(LeenOutcome::Unavailable {
                status: Some(503),
                error: "down".into(),
            }),
            Reason::LeenUnavailable,
            true,
        ),
        (
            Observation::CredentialsMissing("no key".into()),
            Reason::CredentialsMissing,
            true,
        ),
    ];
    for (obs, reason, warning) in rows {
        let d = decide_sync(&ready, &obs, &inputs(&policy));
        let event = d.event.expect("a change is an Event");
        assert_eq!((event.reason, event.warning), (reason, warning));
    }
    // The first successful read is no news.
    let d = decide_sync(
        &LeenConnection::test(),
        &leen_says("ACTIVE", None),
        &inputs(&policy),
    );
    assert!(d.event.is_none());
}

#[test]
fn slow_retries_spread_by_jitter() {
    let policy = RetryPolicy::default();
    for (jitter, secs) in [(0.0, 810.0), (0.5, 900.0), (1.0, 990.0)] {
        for reason in [
            Reason::Rejected,
            Reason::InvalidSpec,
            Reason::ImmutableFieldChanged,
        ] {
            assert_eq!(
                policy.delay(reason, None, 3, jitter),
                Duration::from_secs_f64(secs),
                "{reason:?} jitter {jitter}"
            );
        }
    }
    // Unauthorized: its own backoff, 30 s doubling to 10 min.
    assert_eq!(
        policy.delay(Reason::Unauthorized, None, 1, 1.0),
        Duration::from_secs(30)
    );
    assert_eq!(
        policy.delay(Reason::Unauthorized, None, 9, 1.0),
        Duration::from_secs(600)
    );
    // Retry-After is honoured, at least a second.
    assert_eq!(
        policy.delay(Reason::RateLimited, Some(Duration::ZERO), 1, 1.0),
        Duration::from_secs(1)
    );
}

#[test]
fn secret_names_are_checked_in_both_references() {
    let with = |field: &str, name: &str| {
        let mut obj = LeenConnection::test();
        let r = serde_json::json!({ "name": name });
        match field {
            "apiKeySecretRef" => obj.spec.api_key_secret_ref = serde_json::from_value(r).ok(),
            _ => obj.spec.credentials_secret_ref = serde_json::from_value(r).ok(),
        }
        obj
    };
    for field in ["apiKeySecretRef", "credentialsSecretRef"] {
        assert!(
            validate_binding(&with(field, "leen-key.v2")).is_ok(),
            "{field}"
        );
        assert!(
            matches!(
                validate_binding(&with(field, "Not_A_Name")),
                Err(Observation::InvalidSpec { reason: Reason::InvalidSpec, ref message }) if message.contains(field)
            ),
            "{field}"
        );
    }
}

#[test]
fn a_binding_recorded_without_region_gets_the_spec_region() {
    let policy = RetryPolicy::default();
    let mut obj = LeenConnection::test();
    obj.spec.region = Region::Eu;
    obj.status = Some(LeenConnectionStatus {
        bound_connection: Some(BoundConnection {
            region: None,
            organization_id: ORG.into(),
            connection_id: ID.into(),
        }),
        ..Default::default()
    });
    let d = decide_sync(&obj, &leen_says("ACTIVE", None), &inputs(&policy));
    let bound = d.status.bound_connection.expect("bound");
    assert_eq!(bound.region, Some(Region::Eu));
}

#[test]
fn a_ready_sync_requeues_at_the_interval_spread_by_jitter() {
    let policy = RetryPolicy::default();
    for (jitter, secs) in [(0.0, 270.0), (0.5, 300.0), (1.0, 330.0)] {
        let mut i = inputs(&policy);
        i.jitter = jitter;
        let d = decide_sync(&LeenConnection::test(), &leen_says("ACTIVE", None), &i);
        assert_eq!(
            d.requeue_after,
            Some(Duration::from_secs_f64(secs)),
            "{jitter}"
        );
    }
}

#[test]
fn sharing_is_announced_once() {
    let policy = RetryPolicy::default();
    let mut i = inputs(&policy);
    i.also_bound_by = vec!["apps/other".into()];
    let mut obj = LeenConnection::test();
    let first = decide_sync(&obj, &leen_says("ACTIVE", None), &i);
    assert!(first.event.is_some());
    let message = &first.status.ready().expect("Ready").message;
    assert!(message.contains("also bound by apps/other:"), "{message}");
    assert!(!message.contains("more"), "one other, no count: {message}");
    obj.status = Some(first.status);
    let again = decide_sync(&obj, &leen_says("ACTIVE", None), &i);
    assert!(again.event.is_none(), "{:?}", again.event);
}

#[test]
fn a_failed_credentials_test_says_what_leen_answered() {
    // The CredentialsValid message of a failed test is this text: it must carry the
    // status code and Leen's own words, whatever the kind of failure.
    let rows = [
        (
            LeenOutcome::Unavailable {
                status: Some(503),
                error: "HTTP 503: maintenance".into(),
            },
            ["unavailable", "maintenance"],
        ),
        (
            LeenOutcome::Unauthorized {
                status: 403,
                detail: "key revoked".into(),
            },
            ["403", "key revoked"],
        ),
        (
            LeenOutcome::Rejected {
                detail: "credentials.secret is required".into(),
            },
            ["422", "credentials.secret is required"],
        ),
        (
            LeenOutcome::InvalidResponse {
                status: 200,
                error: "not JSON".into(),
            },
            ["200", "not JSON"],
        ),
        (
            LeenOutcome::Unexpected {
                status: 409,
                detail: "conflict".into(),
            },
            ["409", "conflict"],
        ),
    ];
    for (outcome, words) in rows {
        let message = leen_operator::decision::describe_failure(&outcome);
        for word in words {
            assert!(message.contains(word), "{outcome:?}: {message:?}");
        }
    }
}

#[test]
fn an_unhealthy_connection_names_who_must_act() {
    let policy = RetryPolicy::default();
    let hints = [
        "the customer must act",
        "the vendor must act",
        "Leen must act",
    ];
    // (resolution owner, the one hint the Healthy message gives)
    let rows = [
        ("CUSTOMER", Some(hints[0])),
        ("VENDOR", Some(hints[1])),
        ("LEEN", Some(hints[2])),
        ("SOMEONE_NEW", None),
    ];
    for (owner, hint) in rows {
        let obs = Observation::Leen(LeenOutcome::Success(Box::new(Connection {
            id: Some(ID.into()),
            state: Some("ACTIVE".into()),
            health: Some(Health {
                name: Some("UNAUTHORIZED".into()),
                status: Some("UNHEALTHY".into()),
                description: Some("Vendor credentials are invalid".into()),
                resolution_owner: Some(owner.into()),
                details: vec![],
            }),
            ..Default::default()
        })));
        let d = decide_sync(&LeenConnection::test(), &obs, &inputs(&policy));
        let message = &d.status.condition("Healthy").expect("Healthy").message;
        assert!(
            message.contains(&format!("resolution owner {owner}")),
            "{message}"
        );
        for h in hints {
            assert_eq!(message.contains(h), hint == Some(h), "{owner}: {message}");
        }
    }
}

#[test]
fn health_names_become_condition_reasons_with_underscores_kept() {
    let policy = RetryPolicy::default();
    // (Leen's health name, the Healthy reason): letters, digits and `_` stay, anything
    // else goes, trailing `_` too; a name that does not start with a letter is replaced.
    let rows = [
        ("VENDOR_API_DOWN", "VENDOR_API_DOWN"),
        ("Token expired!", "Tokenexpired"),
        ("RATE_LIMITED__", "RATE_LIMITED"),
        ("_hidden", "Unhealthy"),
        ("9 vendor-down!", "Unhealthy"),
    ];
    for (name, reason) in rows {
        let obs = Observation::Leen(LeenOutcome::Success(Box::new(Connection {
            id: Some(ID.into()),
            state: Some("ACTIVE".into()),
            health: Some(Health {
                name: Some(name.into()),
                status: Some("UNHEALTHY".into()),
                ..Default::default()
            }),
            ..Default::default()
        })));
        let d = decide_sync(&LeenConnection::test(), &obs, &inputs(&policy));
        assert_eq!(
            d.status.condition("Healthy").map(|c| c.reason.as_str()),
            Some(reason),
            "{name}"
        );
    }
}

#[test]
fn a_body_that_breaks_off_is_transient_on_success_and_ignored_on_an_error_status() {
    use leen_operator::leen::BodyError;
    let expected = Expected {
        organization: ORG.parse().expect("org"),
        connection: ID.parse().expect("id"),
    };
    let broken = || Err(BodyError::Read("connection reset".into()));
    // A 200 whose body broke off may have been a confirmation: retried, never a failure
    // of Leen's answer.
    match classify(expected, 200, None, broken()) {
        LeenOutcome::Unavailable { status, error } => {
            assert_eq!(status, Some(200));
            assert!(error.contains("connection reset"), "{error}");
        }
        other => panic!("200 with a broken body: {other:?}"),
    }
    // An error status says enough by its code.
    assert!(matches!(
        classify(expected, 401, None, broken()),
        LeenOutcome::Unauthorized { status: 401, .. }
    ));
    assert!(matches!(
        classify(expected, 422, None, broken()),
        LeenOutcome::Rejected { .. }
    ));
}

#[test]
fn a_list_page_is_read_in_every_documented_shape() {
    use leen_operator::leen::parse_list;
    let one = format!(r#"{{"id": "{ID}", "identifier": "a"}}"#);
    // (body, ids read, total)
    let rows = [
        (format!(r#"[{one}, 7, "x"]"#), 1, None),
        (format!(r#"{{"items": [{one}], "total": 31}}"#), 1, Some(31)),
        (format!(r#"{{"data": [{one}, {one}]}}"#), 2, None),
        (r#"{"connections": []}"#.to_string(), 0, None),
    ];
    for (body, ids, total) in rows {
        let (items, t) = parse_list(body.as_bytes()).expect(&body);
        assert_eq!((items.len(), t), (ids, total), "{body}");
        assert!(items.iter().all(|c| c.id.as_deref() == Some(ID)), "{body}");
    }
    for body in [r#"{"total": 3}"#, "42", r#""items""#, "not json"] {
        assert!(parse_list(body.as_bytes()).is_err(), "{body}");
    }
}

#[test]
fn a_created_connection_must_belong_to_the_organization_asked_for() {
    use leen_operator::leen::parse_created;
    let org: uuid::Uuid = ORG.parse().expect("org");
    let other = uuid::Uuid::new_v4();
    let body = |o: &str| format!(r#"{{"id": "{ID}", "organization_id": "{o}"}}"#);
    assert!(parse_created(org, body(ORG).as_bytes()).is_ok());
    assert!(parse_created(org, format!(r#"{{"id": "{ID}"}}"#).as_bytes()).is_ok());
    let err = parse_created(org, body(&other.to_string()).as_bytes()).expect_err("other org");
    assert!(err.contains(&other.to_string()), "{err}");
    assert!(parse_created(org, body("not-a-uuid").as_bytes()).is_err());
}

#[test]
fn quoted_bodies_and_details_are_cut_at_their_limits_and_marked() {
    let expected = Expected {
        organization: ORG.parse().expect("org"),
        connection: ID.parse().expect("id"),
    };
    // A page that is not Leen's: quoted up to 120 characters, "..." when cut.
    let page = |len: usize| match classify(expected, 404, None, Ok("p".repeat(len).as_bytes())) {
        LeenOutcome::Unexpected { detail, .. } => detail,
        other => panic!("{other:?}"),
    };
    assert!(
        page(5).ends_with(&format!(": {}", "p".repeat(5))),
        "{}",
        page(5)
    );
    assert!(page(120).ends_with(&format!(": {}", "p".repeat(120))));
    assert!(page(121).ends_with(&format!(": {}...", "p".repeat(120))));
    // Leen's own detail: kept up to 512 characters, "..." when cut.
    let detail = |len: usize| {
        let body = serde_json::json!({"detail": "d".repeat(len)}).to_string();
        match classify(expected, 401, None, Ok(body.as_bytes())) {
            LeenOutcome::Unauthorized { detail, .. } => detail,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(detail(512), "d".repeat(512));
    assert_eq!(detail(513), format!("{}...", "d".repeat(512)));
}

#[test]
fn a_body_that_is_only_the_key_is_redacted_and_an_empty_key_redacts_nothing() {
    use leen_operator::leen::{REDACTED, redact};
    assert_eq!(redact(b"s3cr3t".to_vec(), b"s3cr3t"), REDACTED.as_bytes());
    assert_eq!(redact(b"s3cr".to_vec(), b"s3cr3t"), b"s3cr");
    assert_eq!(redact(b"any body".to_vec(), b""), b"any body");
    assert_eq!(redact(Vec::new(), b""), b"");
}
