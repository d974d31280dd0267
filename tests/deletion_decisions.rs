//! The deletion table and the deletion rules, row by row, on the pure decision function:
//! (resource, what Leen answered) -> (status, Event, finalizer, requeue).

mod support;

use std::time::Duration;

use leen_operator::{
    decision::{
        DeletionStep, FinalizerAction, Observation, Reason, RetryPolicy, decide_deletion,
        deletion_shortcut, validate_binding,
    },
    leen::{Expected, LeenOutcome, classify},
    resource::{BoundConnection, DeletionRecord, LeenConnection, LeenConnectionStatus, Region},
};
use support::{
    decisions::*,
    fixtures::{Fixture, ID, ORG},
};

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

/// Whether the finalizer goes.
#[derive(Debug, PartialEq)]
enum Finalizer {
    Removed,
    Kept,
}

/// The kind of the Event.
#[derive(Debug, PartialEq)]
enum EventKind {
    Normal,
    Warning,
}

/// One row of the deletion table.
struct Row {
    /// What the row shows.
    name: &'static str,
    answer: Answer,
    reason: Reason,
    finalizer: Finalizer,
    event: EventKind,
    retry: Retry,
    /// The message says this.
    says: &'static str,
}

/// The whole deletion table of DESIGN.md, one line a row: from what Leen answered (status,
/// headers, body) through the real `classify` and `decide_deletion` to what the controller
/// does.
#[test]
fn deletion_table() {
    use Answer::*;
    use EventKind::*;
    use Finalizer::*;
    use Retry::*;
    let deleted = r#"{"id":"0b9e7a52-0000-4000-8000-000000000002","organization_id":"6f1c2d4e-0000-4000-8000-000000000001","state":"DELETED","health":{"name":"HEALTHY","status":"HEALTHY"}}"#;
    let still_active = r#"{"id":"0b9e7a52-0000-4000-8000-000000000002","state":"ACTIVE"}"#;
    let other_conn = r#"{"id":"0b9e7a52-0000-4000-8000-000000000003","state":"DELETED"}"#;
    let other_org = r#"{"id":"0b9e7a52-0000-4000-8000-000000000002","organization_id":"6f1c2d4e-0000-4000-8000-000000000009","state":"DELETED"}"#;
    let rows = [
        Row {
            name: "Orphan: released, nothing called",
            answer: Orphan,
            reason: Reason::Orphaned,
            finalizer: Removed,
            event: Normal,
            retry: Done,
            says: "left in Leen",
        },
        Row {
            name: "another live resource binds it: released, no DELETE",
            answer: StillReferenced,
            reason: Reason::StillReferenced,
            finalizer: Removed,
            event: Normal,
            retry: Done,
            says: "security/renamed binds the same connection",
        },
        Row {
            name: "200 naming the connection: deleted",
            answer: Http(200, None, deleted),
            reason: Reason::Deleted,
            finalizer: Removed,
            event: Normal,
            retry: Done,
            says: "state DELETED",
        },
        Row {
            name: "200 naming it in another state: deleted, with a warning",
            answer: Http(200, None, still_active),
            reason: Reason::Deleted,
            finalizer: Removed,
            event: Warning,
            retry: Done,
            says: "reports state ACTIVE, not DELETED",
        },
        Row {
            name: "404 with Leen's JSON error: already deleted",
            answer: Http(404, None, r#"{"detail":"Connection Not Found"}"#),
            reason: Reason::AlreadyDeleted,
            finalizer: Removed,
            event: Normal,
            retry: Done,
            says: "Connection Not Found",
        },
        Row {
            name: "200 with {}: proves nothing",
            answer: Http(200, None, "{}"),
            reason: Reason::InvalidResponse,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "without a connection id",
        },
        Row {
            name: "200 with a list: proves nothing",
            answer: Http(200, None, "[]"),
            reason: Reason::InvalidResponse,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "not a JSON object",
        },
        Row {
            name: "200 naming another connection: proves nothing",
            answer: Http(200, None, other_conn),
            reason: Reason::InvalidResponse,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: OTHER_ID,
        },
        Row {
            name: "200 naming another organization: proves nothing",
            answer: Http(200, None, other_org),
            reason: Reason::InvalidResponse,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: OTHER_ORG,
        },
        Row {
            name: "200 with broken JSON: proves nothing",
            answer: Http(200, None, "{not json"),
            reason: Reason::InvalidResponse,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "not JSON",
        },
        Row {
            name: "202: not Leen's confirmation",
            answer: Http(202, None, r#"{"detail":"scheduled"}"#),
            reason: Reason::InvalidResponse,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "answered 202, not 200",
        },
        Row {
            name: "204: not Leen's confirmation",
            answer: Http(204, None, ""),
            reason: Reason::InvalidResponse,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "answered 204, not 200",
        },
        Row {
            name: "404 as an HTML page: proves nothing",
            answer: Http(404, None, "<html><body>404 Not Found</body></html>"),
            reason: Reason::UnexpectedResponse,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "proves nothing",
        },
        Row {
            name: "404 with no body: proves nothing",
            answer: Http(404, None, ""),
            reason: Reason::UnexpectedResponse,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "proves nothing",
        },
        Row {
            name: "401: the key refused, capped backoff",
            answer: Http(401, None, r#"{"detail":"Invalid API Key"}"#),
            reason: Reason::Unauthorized,
            finalizer: Kept,
            event: Warning,
            retry: Unauthorized,
            says: "Invalid API Key",
        },
        Row {
            name: "403: the key refused",
            answer: Http(403, None, ""),
            reason: Reason::Unauthorized,
            finalizer: Kept,
            event: Warning,
            retry: Unauthorized,
            says: "403",
        },
        Row {
            name: "422: rejected, the validation detail shown, slow retry",
            answer: Http(
                422,
                None,
                r#"{"detail":[{"loc":["path","connection_id"],"msg":"value is not a valid uuid","type":"type_error.uuid"}]}"#,
            ),
            reason: Reason::Rejected,
            finalizer: Kept,
            event: Warning,
            retry: Slow,
            says: "path.connection_id: value is not a valid uuid",
        },
        Row {
            name: "429 with Retry-After: waits exactly that",
            answer: Http(429, Some("42"), ""),
            reason: Reason::RateLimited,
            finalizer: Kept,
            event: Warning,
            retry: After(42),
            says: "429",
        },
        Row {
            name: "429 without Retry-After: backoff",
            answer: Http(429, None, ""),
            reason: Reason::RateLimited,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "429",
        },
        Row {
            name: "503: Leen unavailable",
            answer: Http(503, None, "<html>down</html>"),
            reason: Reason::LeenUnavailable,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "503",
        },
        Row {
            name: "500 with Leen's error: unavailable",
            answer: Http(500, None, r#"{"detail":"boom"}"#),
            reason: Reason::LeenUnavailable,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "boom",
        },
        Row {
            name: "no answer: unavailable",
            answer: Silence,
            reason: Reason::LeenUnavailable,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "timed out",
        },
        Row {
            name: "409: unexpected",
            answer: Http(409, None, "conflict"),
            reason: Reason::UnexpectedResponse,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "409",
        },
        Row {
            name: "a redirect: unexpected, not followed",
            answer: Http(302, None, ""),
            reason: Reason::UnexpectedResponse,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "302",
        },
        Row {
            name: "no key: kept, no call",
            answer: NoCredentials,
            reason: Reason::CredentialsMissing,
            finalizer: Kept,
            event: Warning,
            retry: Backoff,
            says: "not found",
        },
        Row {
            name: "region changed: refused, no call",
            answer: RegionChanged,
            reason: Reason::ImmutableFieldChanged,
            finalizer: Kept,
            event: Warning,
            retry: Slow,
            says: "bound to region us",
        },
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
                obj.spec.region = Some(Region::Eu);
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
        let name = row.name;
        let removed = row.finalizer == Finalizer::Removed;
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
            if removed {
                FinalizerAction::Remove
            } else {
                FinalizerAction::Keep
            },
            "{name}"
        );
        let event = d.event.as_ref().expect("every outcome emits an Event");
        assert_eq!(
            (event.reason, event.warning),
            (row.reason, row.event == EventKind::Warning),
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
        assert_eq!(record.next_retry_time.is_some(), !removed, "{name}");
        if !removed {
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
fn slow_retries_spread_by_jitter() {
    let policy = RetryPolicy::default();
    for (jitter, secs) in [(0.0, 810.0), (0.5, 900.0), (1.0, 990.0)] {
        for reason in [
            Reason::Rejected,
            Reason::InvalidSpec,
            Reason::ImmutableFieldChanged,
            Reason::IdentifierInUse,
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

/// A deletion held on a cache that may be behind is looked at again in about 5 s (4 to 6
/// by jitter) however often it was held: the cache catches up by itself, and Leen's
/// backoff would delay the deletion long after it has.
#[test]
fn a_stale_cache_is_looked_at_again_within_seconds() {
    let policy = RetryPolicy::default();
    for attempt in [1, 4, 9] {
        for (jitter, secs) in [(0.0, 4.0), (0.5, 5.0), (1.0, 6.0)] {
            assert_eq!(
                policy.delay(Reason::CacheStale, None, attempt, jitter),
                Duration::from_secs_f64(secs),
                "attempt {attempt} jitter {jitter}"
            );
        }
    }
}

/// A DELETE that went out is remembered in the record whatever comes after it (a look-up
/// failure, a missing Secret, a hold), so that a retry the budget holds waits for the
/// window rather than for a person; a deletion held before any DELETE stays held.
#[test]
fn a_sent_delete_is_remembered_and_its_hold_is_not_durable() {
    let policy = RetryPolicy::default();
    let mut obj = LeenConnection::test();
    let timeout = DeletionStep::Observed(Observation::Leen(LeenOutcome::Unavailable {
        status: None,
        error: "timed out".into(),
    }));
    let mut sending = inputs(&policy);
    sending.delete_sent = true;
    let first = decide_deletion(&obj, &timeout, &sending);
    let record = first.status.deletion.clone().expect("record");
    assert!(record.delete_sent, "{record:?}");
    obj.status = Some(first.status);
    // A later attempt without a DELETE (the key Secret briefly missing) keeps it.
    let missing = DeletionStep::Observed(Observation::CredentialsMissing("Secret gone".into()));
    let second = decide_deletion(&obj, &missing, &inputs(&policy));
    assert!(second.status.deletion.clone().expect("record").delete_sent);
    obj.status = Some(second.status);
    let held = DeletionStep::Observed(Observation::DeletionHeld {
        message: "budget spent".into(),
        resume_at: Some(inputs(&policy).now + chrono::Duration::seconds(30)),
    });
    let d = decide_deletion(&obj, &held, &inputs(&policy));
    let record = d.status.deletion.expect("record");
    assert_eq!(record.outcome.as_deref(), Some("DeletionHeld"));
    assert!(!record.held, "a held retry is not a durable hold");
    assert!(record.delete_sent);
    assert_eq!(d.requeue_after, Some(Duration::from_secs(30)));
    // Held before any DELETE went out: durable.
    let fresh = LeenConnection::test();
    let d = decide_deletion(&fresh, &held, &inputs(&policy));
    let record = d.status.deletion.expect("record");
    assert!(record.held && !record.delete_sent, "{record:?}");
}

/// The first DELETE after an identical failure of a look-up is news: its record is
/// written even within the quiet period.
#[test]
fn the_first_delete_sent_is_recorded_even_when_the_failure_repeats() {
    let policy = RetryPolicy::default();
    let mut obj = LeenConnection::test();
    let step = DeletionStep::Observed(Observation::Leen(LeenOutcome::Unavailable {
        status: Some(503),
        error: "down".into(),
    }));
    let first = decide_deletion(&obj, &step, &inputs(&policy));
    assert!(!first.status.deletion.clone().expect("record").delete_sent);
    obj.status = Some(first.status);
    let mut soon = inputs(&policy);
    soon.now += chrono::Duration::seconds(10);
    soon.delete_sent = true;
    let again = decide_deletion(&obj, &step, &soon);
    assert!(again.status.deletion.expect("record").delete_sent);
    // Once recorded, the same failure again is quiet.
    let mut quiet = soon.clone();
    quiet.now += chrono::Duration::seconds(5);
    obj.status = Some(decide_deletion(&obj, &step, &soon).status);
    assert!(decide_deletion(&obj, &step, &quiet).event.is_none());
}
