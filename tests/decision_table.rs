//! The deletion table of DESIGN.md and the sync rules, row by row, on the pure decision
//! functions: (resource, what Leen answered) -> (status, Event, finalizer, requeue).

use std::time::Duration;

use chrono::{TimeZone, Utc};
use leen_operator::{
    decision::{
        DecisionInputs, DeletionStep, FinalizerAction, Observation, Reason, RetryPolicy,
        decide_deletion, decide_sync, deletion_shortcut, validate_ids,
    },
    leen::{Connection, Health, LeenOutcome},
    resource::{
        BoundConnection, DeletionPolicy, DeletionRecord, LeenConnection, LeenConnectionSpec,
        LeenConnectionStatus,
    },
};

const ORG: &str = "6f1c2d4e-0000-4000-8000-000000000001";
const ID: &str = "0b9e7a52-0000-4000-8000-000000000002";

fn resource(policy: DeletionPolicy) -> LeenConnection {
    let spec: LeenConnectionSpec = serde_json::from_value(serde_json::json!({
        "organizationId": ORG, "connectionId": ID,
        "deletionPolicy": match policy { DeletionPolicy::Delete => "Delete", DeletionPolicy::Orphan => "Orphan" },
    }))
    .expect("spec");
    let mut obj = LeenConnection::new("crowdstrike-prod", spec);
    obj.metadata.namespace = Some("security".into());
    obj.metadata.generation = Some(3);
    obj
}

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
    }
}

struct Row {
    name: &'static str,
    policy: DeletionPolicy,
    leen: Option<LeenOutcome>,
    observation: Option<Observation>,
    reason: Reason,
    finalizer: FinalizerAction,
    warning: bool,
    requeue: Option<Duration>,
}

#[test]
fn deletion_table() {
    let policy = RetryPolicy::default();
    let rows = vec![
        Row {
            name: "Orphan: no call, removed",
            policy: DeletionPolicy::Orphan,
            leen: None,
            observation: None,
            reason: Reason::Orphaned,
            finalizer: FinalizerAction::Remove,
            warning: false,
            requeue: None,
        },
        Row {
            name: "200: Deleted, removed",
            policy: DeletionPolicy::Delete,
            leen: Some(LeenOutcome::Success(Box::new(deleted_connection()))),
            observation: None,
            reason: Reason::Deleted,
            finalizer: FinalizerAction::Remove,
            warning: false,
            requeue: None,
        },
        Row {
            name: "404: AlreadyDeleted, removed",
            policy: DeletionPolicy::Delete,
            leen: Some(LeenOutcome::NotFound {
                detail: "Connection Not Found".into(),
            }),
            observation: None,
            reason: Reason::AlreadyDeleted,
            finalizer: FinalizerAction::Remove,
            warning: false,
            requeue: None,
        },
        Row {
            name: "401: Unauthorized, kept, capped backoff",
            policy: DeletionPolicy::Delete,
            leen: Some(LeenOutcome::Unauthorized {
                status: 401,
                detail: "Invalid API Key".into(),
            }),
            observation: None,
            reason: Reason::Unauthorized,
            finalizer: FinalizerAction::Keep,
            warning: true,
            requeue: Some(policy.unauthorized_base),
        },
        Row {
            name: "403: Unauthorized, kept",
            policy: DeletionPolicy::Delete,
            leen: Some(LeenOutcome::Unauthorized {
                status: 403,
                detail: "forbidden".into(),
            }),
            observation: None,
            reason: Reason::Unauthorized,
            finalizer: FinalizerAction::Keep,
            warning: true,
            requeue: Some(policy.unauthorized_base),
        },
        Row {
            name: "422: Rejected, kept, slow retry",
            policy: DeletionPolicy::Delete,
            leen: Some(LeenOutcome::Rejected {
                detail: "path.connection_id: value is not a valid uuid".into(),
            }),
            observation: None,
            reason: Reason::Rejected,
            finalizer: FinalizerAction::Keep,
            warning: true,
            requeue: Some(policy.slow_retry.mul_f64(1.1)),
        },
        Row {
            name: "429 with Retry-After: RateLimited, kept, retried after it",
            policy: DeletionPolicy::Delete,
            leen: Some(LeenOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(42)),
            }),
            observation: None,
            reason: Reason::RateLimited,
            finalizer: FinalizerAction::Keep,
            warning: true,
            requeue: Some(Duration::from_secs(42)),
        },
        Row {
            name: "429 without Retry-After: backoff",
            policy: DeletionPolicy::Delete,
            leen: Some(LeenOutcome::RateLimited { retry_after: None }),
            observation: None,
            reason: Reason::RateLimited,
            finalizer: FinalizerAction::Keep,
            warning: true,
            requeue: Some(policy.transient_base),
        },
        Row {
            name: "503: LeenUnavailable, kept",
            policy: DeletionPolicy::Delete,
            leen: Some(LeenOutcome::Unavailable {
                status: Some(503),
                error: "Leen answered 503".into(),
            }),
            observation: None,
            reason: Reason::LeenUnavailable,
            finalizer: FinalizerAction::Keep,
            warning: true,
            requeue: Some(policy.transient_base),
        },
        Row {
            name: "timeout: LeenUnavailable, kept",
            policy: DeletionPolicy::Delete,
            leen: Some(LeenOutcome::Unavailable {
                status: None,
                error: "timed out".into(),
            }),
            observation: None,
            reason: Reason::LeenUnavailable,
            finalizer: FinalizerAction::Keep,
            warning: true,
            requeue: Some(policy.transient_base),
        },
        Row {
            name: "unreadable 200 body: InvalidResponse, kept",
            policy: DeletionPolicy::Delete,
            leen: Some(LeenOutcome::InvalidResponse {
                status: 200,
                error: "not JSON".into(),
            }),
            observation: None,
            reason: Reason::InvalidResponse,
            finalizer: FinalizerAction::Keep,
            warning: true,
            requeue: Some(policy.transient_base),
        },
        Row {
            name: "undocumented 409: UnexpectedResponse, kept",
            policy: DeletionPolicy::Delete,
            leen: Some(LeenOutcome::Unexpected {
                status: 409,
                detail: "conflict".into(),
            }),
            observation: None,
            reason: Reason::UnexpectedResponse,
            finalizer: FinalizerAction::Keep,
            warning: true,
            requeue: Some(policy.transient_base),
        },
        Row {
            name: "Secret missing: CredentialsMissing, kept",
            policy: DeletionPolicy::Delete,
            leen: None,
            observation: Some(Observation::CredentialsMissing(
                "Secret security/leen-api-key not found".into(),
            )),
            reason: Reason::CredentialsMissing,
            finalizer: FinalizerAction::Keep,
            warning: true,
            requeue: Some(policy.transient_base),
        },
        Row {
            name: "ids changed: ImmutableFieldChanged, kept",
            policy: DeletionPolicy::Delete,
            leen: None,
            observation: Some(Observation::InvalidSpec {
                reason: Reason::ImmutableFieldChanged,
                message: "ids changed".into(),
            }),
            reason: Reason::ImmutableFieldChanged,
            finalizer: FinalizerAction::Keep,
            warning: true,
            requeue: Some(policy.slow_retry.mul_f64(1.1)),
        },
    ];

    for row in rows {
        let obj = resource(row.policy);
        let step = match (deletion_shortcut(&obj), &row.leen, &row.observation) {
            (Some(step), _, _) => step,
            (None, Some(outcome), _) => DeletionStep::Observed(Observation::Leen(outcome.clone())),
            (None, None, Some(obs)) => DeletionStep::Observed(obs.clone()),
            (None, None, None) => panic!("{}: row needs an answer", row.name),
        };
        let d = decide_deletion(&obj, &step, &inputs(&policy));
        let status = &d.status;
        let ready = status.ready().expect("Ready condition");
        assert_eq!(ready.status, "False", "{}", row.name);
        assert_eq!(ready.reason, row.reason.as_str(), "{}", row.name);
        assert_eq!(ready.observed_generation, Some(3), "{}", row.name);
        assert_eq!(status.observed_generation, Some(3), "{}", row.name);
        assert_eq!(d.finalizer, row.finalizer, "{}", row.name);
        assert_eq!(d.requeue_after, row.requeue, "{}", row.name);
        let event = d.event.as_ref().expect("every outcome emits an Event");
        assert_eq!(event.reason, row.reason, "{}", row.name);
        assert_eq!(event.warning, row.warning, "{}", row.name);
        assert_eq!(event.action, "DeleteConnection");
        let record = status.deletion.as_ref().expect("deletion record");
        assert_eq!(record.attempts, 1, "{}", row.name);
        assert_eq!(record.outcome.as_deref(), Some(row.reason.as_str()));
        assert_eq!(
            record.next_retry_time.is_some(),
            row.finalizer == FinalizerAction::Keep,
            "{}",
            row.name
        );
        if row.finalizer == FinalizerAction::Keep {
            assert!(
                ready.message.contains("deletionPolicy: Orphan"),
                "{}: a kept finalizer says how to release it: {}",
                row.name,
                ready.message
            );
            assert!(record.last_error.is_some(), "{}", row.name);
        }
    }
}

#[test]
fn deleted_row_mirrors_state_and_health() {
    let policy = RetryPolicy::default();
    let d = decide_deletion(
        &resource(DeletionPolicy::Delete),
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
        &resource(DeletionPolicy::Delete),
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
    let mut obj = resource(DeletionPolicy::Delete);
    let step = DeletionStep::Observed(Observation::Leen(LeenOutcome::Unavailable {
        status: Some(500),
        error: "boom".into(),
    }));
    let mut delays = Vec::new();
    for _ in 0..12 {
        let d = decide_deletion(&obj, &step, &inputs(&policy));
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
    let mut obj = resource(DeletionPolicy::Delete);
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
    let mut obj = resource(DeletionPolicy::Delete);
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
    let obj = resource(DeletionPolicy::Delete);
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
    let obj = resource(DeletionPolicy::Delete);
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
                organization_id: ORG.into(),
                connection_id: ID.into()
            })
        );
    }
}

#[test]
fn unchanged_sync_writes_nothing_and_emits_nothing() {
    let policy = RetryPolicy::default();
    let mut obj = resource(DeletionPolicy::Delete);
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
fn ids_are_validated_and_bound() {
    let mut obj = resource(DeletionPolicy::Delete);
    assert!(validate_ids(&obj).is_ok());
    obj.spec.connection_id = "not-a-uuid".into();
    assert!(matches!(
        validate_ids(&obj),
        Err(Observation::InvalidSpec {
            reason: Reason::InvalidSpec,
            ..
        })
    ));
    let mut obj = resource(DeletionPolicy::Delete);
    obj.status = Some(LeenConnectionStatus {
        bound_connection: Some(BoundConnection {
            organization_id: ORG.into(),
            connection_id: "11111111-0000-4000-8000-000000000000".into(),
        }),
        ..Default::default()
    });
    assert!(matches!(
        validate_ids(&obj),
        Err(Observation::InvalidSpec {
            reason: Reason::ImmutableFieldChanged,
            ..
        })
    ));
}
