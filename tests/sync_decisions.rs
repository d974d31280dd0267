//! The rules of a live resource, on the pure decision function: (resource, what Leen
//! returned) -> (status and conditions, Event, requeue).

mod support;

use std::time::Duration;

use leen_operator::{
    decision::{
        DeletionStep, FinalizerAction, Observation, Reason, RetryPolicy, decide_deletion,
        decide_sync,
    },
    leen::{Connection, Health, LeenOutcome},
    resource::{BoundConnection, LeenConnection, LeenConnectionStatus, Region},
};
use support::{
    decisions::*,
    fixtures::{Fixture, ID, ORG},
};

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
