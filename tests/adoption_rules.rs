//! The adoption rules on the pure plan and decision steps: observe-only management
//! (`spec.managementPolicy: Observe`), the pause annotation (`leen.dev/paused`) and the
//! per-resource sync interval. Each row: (resource, inputs read so far) -> the next step,
//! or (resource, what the plan came to) -> status, Event, finalizer, requeue.

mod support;

use std::time::Duration;

use leen_operator::{
    decision::{
        Binding, DeletionInputs, DeletionPlan, DeletionStep, FinalizerAction, FindLostCreate,
        Freshness, Lookup, Need, Observation, Reason, RetryPolicy, SyncInputs, SyncPlan,
        decide_deletion, decide_sync, plan_deletion, plan_sync,
    },
    leen::{ApiKey, Connection, LeenOutcome},
    resource::{
        CredentialsStatus, DeletionRecord, DesiredState, LeenConnection, ManagementPolicy,
        PAUSED_ANNOTATION, Region, SecretRef, parse_go_duration,
    },
};
use support::{
    decisions::*,
    fixtures::{Fixture, ID, ORG},
};
use uuid::Uuid;

fn binding() -> Binding {
    Binding {
        region: Region::Us,
        organization: Uuid::parse_str(ORG).expect("org"),
        connection: Uuid::parse_str(ID).expect("id"),
    }
}

fn observed(mut obj: LeenConnection) -> LeenConnection {
    obj.spec.management_policy = ManagementPolicy::Observe;
    obj
}

fn paused(mut obj: LeenConnection, value: &str) -> LeenConnection {
    obj.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(PAUSED_ANNOTATION.into(), value.into());
    obj
}

fn every_interval(mut obj: LeenConnection, value: &str) -> LeenConnection {
    obj.spec.sync_interval = Some(value.into());
    obj
}

fn active() -> LeenOutcome {
    LeenOutcome::Success(Box::new(Connection {
        id: Some(ID.into()),
        identifier: Some("prod".into()),
        state: Some("ACTIVE".into()),
        ..Default::default()
    }))
}

/// Sync inputs: the key read (`key`), no credentials read yet, Leen's answer (`seen`).
fn sync_inputs(key: bool, seen: Option<LeenOutcome>, lookup: Option<Lookup>) -> SyncInputs {
    SyncInputs {
        key: key.then(|| Ok(ApiKey::new("k").expect("key"))),
        observed: seen,
        lookup,
        ..Default::default()
    }
}

fn find(identifier: &str) -> SyncPlan {
    SyncPlan::FindLostCreate(FindLostCreate {
        region: Region::Us,
        organization: Uuid::parse_str(ORG).expect("org"),
        identifier: identifier.into(),
        intent: true,
    })
}

/// A resource the operator would create (no connectionId), with spec.identifier `prod`.
fn unbound() -> LeenConnection {
    let mut obj = LeenConnection::to_create("CROWDSTRIKE");
    obj.spec.identifier = Some("prod".into());
    obj
}

/// [`unbound`], with its own create (identifier `identifier`) recorded while it was managed.
fn with_intent_for(identifier: &str) -> LeenConnection {
    let mut obj = unbound();
    obj.status.get_or_insert_with(Default::default).creation =
        Some(leen_operator::resource::CreationRecord {
            identifier: identifier.into(),
            attempts: 1,
            ..Default::default()
        });
    obj
}

/// With a credentials Secret whose contents were never sent (an update would PATCH them).
fn with_unsent_credentials(mut obj: LeenConnection) -> LeenConnection {
    obj.spec.credentials_secret_ref = Some(SecretRef {
        name: "creds".into(),
    });
    obj.status.get_or_insert_with(Default::default).credentials = Some(CredentialsStatus {
        applied_hash: Some("old".into()),
        applied_time: None,
        last_test: None,
    });
    obj
}

#[test]
fn sync_plan_rows() {
    let absent = |obj: &LeenConnection| {
        let SyncPlan::Done(Observation::InvalidSpec { reason, message }) = plan_sync(
            obj,
            &SyncInputs {
                credentials: Some(Ok(None)),
                ..sync_inputs(true, None, Some(Lookup::Absent))
            },
        ) else {
            panic!("nothing created");
        };
        (reason, message)
    };
    let found = Box::new(Connection {
        id: Some(ID.into()),
        identifier: Some("prod".into()),
        ..Default::default()
    });
    let cases: Vec<(&str, LeenConnection, SyncInputs, SyncPlan)> = vec![
        (
            "paused: nothing read, nothing called",
            paused(LeenConnection::test(), "true"),
            SyncInputs::default(),
            SyncPlan::Done(Observation::Paused),
        ),
        (
            "paused wins over everything read so far",
            paused(LeenConnection::test(), " true "),
            sync_inputs(true, Some(active()), None),
            SyncPlan::Done(Observation::Paused),
        ),
        (
            "paused, even an invalid spec (nothing is looked at)",
            paused(
                {
                    let mut obj = LeenConnection::test();
                    obj.spec.organization_id = "nope".into();
                    obj
                },
                "true",
            ),
            SyncInputs::default(),
            SyncPlan::Done(Observation::Paused),
        ),
        (
            "any other value is no pause",
            paused(LeenConnection::test(), "false"),
            SyncInputs::default(),
            SyncPlan::Read(Need::ApiKey),
        ),
        (
            "observe: the key first",
            observed(LeenConnection::test()),
            SyncInputs::default(),
            SyncPlan::Read(Need::ApiKey),
        ),
        (
            "observe: no vendor credentials are read, the GET comes next",
            observed(with_unsent_credentials(LeenConnection::test())),
            sync_inputs(true, None, None),
            SyncPlan::Observe(binding()),
        ),
        (
            "observe: a state the spec does not ask for is not PATCHed",
            observed({
                let mut obj = LeenConnection::test();
                obj.spec.state = Some(DesiredState::Paused);
                obj
            }),
            sync_inputs(true, Some(active()), None),
            SyncPlan::Done(Observation::Leen(active())),
        ),
        (
            "observe: credentials never sent are neither PATCHed nor tested",
            observed(with_unsent_credentials(LeenConnection::test())),
            sync_inputs(true, Some(active()), None),
            SyncPlan::Done(Observation::Leen(active())),
        ),
        (
            "full: credentials sent and never tested are tested (observe skips that too)",
            with_unsent_credentials(LeenConnection::test()),
            SyncInputs {
                credentials: Some(Ok(None)),
                ..sync_inputs(true, Some(active()), None)
            },
            SyncPlan::Test {
                binding: binding(),
                applied_hash: "old".into(),
            },
        ),
        (
            "observe, nothing bound, its own create recorded: looked up, never created again",
            observed(with_intent_for("prod")),
            sync_inputs(true, None, None),
            find("prod"),
        ),
        (
            "observe: the connection its own create (made while managed) led to is bound",
            observed(with_intent_for("prod")),
            sync_inputs(true, None, Some(Lookup::Found(found.clone()))),
            SyncPlan::Bind {
                binding: binding(),
                connection: found.clone(),
                identifier: "prod".into(),
            },
        ),
        (
            "observe: a failed look-up is decided on",
            observed(with_intent_for("prod")),
            sync_inputs(
                true,
                None,
                Some(Lookup::Failed(LeenOutcome::RateLimited {
                    retry_after: None,
                })),
            ),
            SyncPlan::Done(Observation::Leen(LeenOutcome::RateLimited {
                retry_after: None,
            })),
        ),
        (
            "a sync interval that is no duration: no read, no call",
            every_interval(LeenConnection::test(), "soon"),
            SyncInputs::default(),
            SyncPlan::Done(Observation::InvalidSpec {
                reason: Reason::InvalidSpec,
                message: "spec.syncInterval \"soon\" is not a duration such as 30s, 2m or 1h"
                    .into(),
            }),
        ),
        (
            "a sync interval below the floor likewise",
            every_interval(LeenConnection::test(), "4s"),
            SyncInputs::default(),
            SyncPlan::Done(Observation::InvalidSpec {
                reason: Reason::InvalidSpec,
                message: "spec.syncInterval \"4s\" is shorter than 5s".into(),
            }),
        ),
        (
            "the floor itself is fine",
            every_interval(LeenConnection::test(), "5s"),
            SyncInputs::default(),
            SyncPlan::Read(Need::ApiKey),
        ),
    ];
    for (name, obj, inputs, want) in cases {
        assert_eq!(plan_sync(&obj, &inputs), want, "{name}");
    }

    // Observe, found by a spec identifier but made by someone else: not adopted by
    // observing it (Full would then manage and delete it); the message names it.
    let SyncPlan::Done(Observation::InvalidSpec { reason, message }) = plan_sync(
        &observed(unbound()),
        &sync_inputs(true, None, Some(Lookup::Found(found))),
    ) else {
        panic!("not bound");
    };
    assert_eq!(reason, Reason::IdentifierInUse);
    assert!(
        message.contains(&format!("spec.connectionId: {ID}")),
        "{message}"
    );
    assert_eq!(
        plan_sync(&observed(unbound()), &sync_inputs(true, None, None)),
        SyncPlan::FindLostCreate(FindLostCreate {
            region: Region::Us,
            organization: Uuid::parse_str(ORG).expect("org"),
            identifier: "prod".into(),
            intent: false,
        })
    );
    // Observe, nothing found: not created, and it says how to point it at a connection.
    let (reason, message) = absent(&observed(unbound()));
    assert_eq!(reason, Reason::NotFound);
    for says in [
        "Observe",
        "\"prod\"",
        "spec.connectionId",
        "Full to create it",
    ] {
        assert!(message.contains(says), "{says}: {message}");
    }
    // A create intent recorded while it was managed is looked for, never repeated.
    let mut intent = observed(LeenConnection::to_create("CROWDSTRIKE"));
    intent.status.get_or_insert_with(Default::default).creation =
        Some(leen_operator::resource::CreationRecord {
            identifier: "security/c/lost".into(),
            attempts: 1,
            ..Default::default()
        });
    assert_eq!(
        plan_sync(&intent, &sync_inputs(true, None, None)),
        find("security/c/lost")
    );
    let (reason, message) = absent(&intent);
    assert_eq!(reason, Reason::NotFound);
    assert!(!message.contains("Full to create it"), "{message}");
}

fn deleting() -> LeenConnection {
    LeenConnection::test().deleting()
}

fn deletion_inputs(key: bool) -> DeletionInputs {
    DeletionInputs {
        key: key.then(|| Ok(ApiKey::new("k").expect("key"))),
        cache: Some(Freshness::Fresh),
        binder: Some(None),
        ..Default::default()
    }
}

#[test]
fn deletion_plan_rows() {
    let observe_only = |obj: &LeenConnection| {
        DeletionPlan::Done(DeletionStep::Concluded {
            reason: Reason::ObserveOnly,
            message: format!(
                "managementPolicy is Observe: connection {ID} was left in Leen untouched (deletionPolicy does not apply to an observed connection)"
            ),
        })
        .tap(|_| assert!(obj.observe_only()))
    };
    let confirmed = {
        let mut obj = paused(deleting(), "true");
        obj.status.get_or_insert_with(Default::default).deletion = Some(DeletionRecord {
            outcome: Some("Deleted".into()),
            ..Default::default()
        });
        obj
    };
    let cases: Vec<(&str, LeenConnection, DeletionInputs, DeletionPlan)> = vec![
        (
            "paused: the deletion waits, no key read",
            paused(deleting(), "true"),
            DeletionInputs::default(),
            DeletionPlan::Done(DeletionStep::Observed(Observation::Paused)),
        ),
        (
            "paused: waits even with everything read that a DELETE needs",
            paused(deleting(), "true"),
            deletion_inputs(true),
            DeletionPlan::Done(DeletionStep::Observed(Observation::Paused)),
        ),
        (
            "paused and Orphan: released without a call",
            paused(deleting().orphan(), "true"),
            DeletionInputs::default(),
            DeletionPlan::Done(DeletionStep::Orphan),
        ),
        (
            "paused after Leen confirmed: only the finalizer is left, released",
            confirmed,
            DeletionInputs::default(),
            DeletionPlan::Done(DeletionStep::AlreadyConfirmed(Reason::Deleted)),
        ),
        (
            "paused and observed: paused wins (nothing done until resumed)",
            paused(observed(deleting()), "true"),
            DeletionInputs::default(),
            DeletionPlan::Done(DeletionStep::Observed(Observation::Paused)),
        ),
        (
            "not paused: the DELETE as always",
            paused(deleting(), "no"),
            deletion_inputs(true),
            DeletionPlan::Delete(binding()),
        ),
        (
            "observed, paused and Orphan: Orphan releases it",
            paused(observed(deleting().orphan()), "true"),
            DeletionInputs::default(),
            DeletionPlan::Done(DeletionStep::Orphan),
        ),
    ];
    for (name, obj, inputs, want) in cases {
        assert_eq!(plan_deletion(&obj, &inputs, None), want, "{name}");
    }
    // Observed: released with no input and no call, whatever else was read, and whatever
    // deletionPolicy or an earlier outcome says (its own reason).
    for obj in [observed(deleting()), observed(deleting().orphan()), {
        let mut obj = observed(deleting());
        obj.status.get_or_insert_with(Default::default).deletion = Some(DeletionRecord {
            outcome: Some("LeenUnavailable".into()),
            ..Default::default()
        });
        obj
    }] {
        for inputs in [DeletionInputs::default(), deletion_inputs(true)] {
            assert_eq!(plan_deletion(&obj, &inputs, None), observe_only(&obj));
        }
    }
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&Self)) -> Self {
        f(&self);
        self
    }
}
impl Tap for DeletionPlan {}

#[test]
fn a_paused_resource_says_so_and_nothing_else() {
    let policy = RetryPolicy::default();
    let mut obj = paused(LeenConnection::test(), "true");
    obj.metadata.generation = Some(4);
    // As last observed: Ready and healthy, generation 3.
    let before = decide_sync(
        &LeenConnection::test(),
        &leen_says("ACTIVE", None),
        &inputs(&policy),
    )
    .status;
    obj.status = Some(before.clone());
    let decision = decide_sync(&obj, &Observation::Paused, &inputs(&policy));
    let status = &decision.status;
    assert_eq!(condition(status, "Ready"), ("False", "ReconcilePaused"));
    assert_eq!(
        condition(status, "Reconciling"),
        ("False", "ReconcilePaused")
    );
    assert_eq!(condition(status, "Stalled"), ("False", "ReconcilePaused"));
    assert_eq!(condition(status, "Healthy"), condition(&before, "Healthy"));
    let ready = status.ready().expect("ready");
    assert!(
        ready.message.contains(PAUSED_ANNOTATION),
        "{}",
        ready.message
    );
    assert_eq!(ready.observed_generation, Some(4));
    // The mirrored connection and observedGeneration stay as they were: the pause is not a
    // read, and the edit of generation 4 is not applied.
    assert_eq!(status.observed_generation, before.observed_generation);
    assert_eq!(status.state, before.state);
    assert_eq!(status.health, before.health);
    assert_eq!(
        decision.requeue_after, None,
        "no periodic work while paused"
    );
    assert_eq!(decision.finalizer, FinalizerAction::Keep);
    let event = decision.event.expect("an Event when the pause begins");
    assert_eq!(event.reason, Reason::ReconcilePaused);
    assert!(!event.warning);
    // Paused again: nothing new to say.
    obj.status = Some(decision.status.clone());
    let again = decide_sync(&obj, &Observation::Paused, &inputs(&policy));
    assert_eq!(again.event, None);
    assert_eq!(again.status, decision.status);
}

#[test]
fn a_paused_deletion_keeps_its_finalizer_and_waits() {
    let policy = RetryPolicy::default();
    let obj = paused(deleting(), "true");
    let decision = decide_deletion(
        &obj,
        &DeletionStep::Observed(Observation::Paused),
        &inputs(&policy),
    );
    assert_eq!(decision.finalizer, FinalizerAction::Keep);
    assert_eq!(decision.requeue_after, None);
    assert_eq!(
        condition(&decision.status, "Ready"),
        ("False", "ReconcilePaused")
    );
    assert_eq!(
        condition(&decision.status, "Stalled"),
        ("False", "ReconcilePaused")
    );
    let message = &decision.status.ready().expect("ready").message;
    for says in ["deletion waits", "Orphan", PAUSED_ANNOTATION] {
        assert!(message.contains(says), "{says}: {message}");
    }
    assert_eq!(decision.status.deletion, None, "no attempt is recorded");
    assert_eq!(
        decision.event.map(|e| (e.reason, e.action)),
        Some((Reason::ReconcilePaused, "DeleteConnection"))
    );
}

#[test]
fn an_observed_resource_is_released_and_mirrors_without_enforcing() {
    let policy = RetryPolicy::default();
    let obj = observed(deleting());
    let step = match plan_deletion(&obj, &DeletionInputs::default(), None) {
        DeletionPlan::Done(step) => step,
        other => panic!("{other:?}"),
    };
    let decision = decide_deletion(&obj, &step, &inputs(&policy));
    assert_eq!(decision.finalizer, FinalizerAction::Remove);
    assert_eq!(
        condition(&decision.status, "Ready"),
        ("False", "ObserveOnly")
    );
    let event = decision.event.expect("event");
    assert!(!event.warning, "{event:?}");

    // spec.state is not the operator's to enforce on an observed connection: Leen's PAUSED
    // is mirrored as it is (Ready=False, Paused), not a drift being corrected.
    let mut live = observed(LeenConnection::test());
    live.spec.state = Some(DesiredState::Active);
    let decision = decide_sync(&live, &leen_says("PAUSED", None), &inputs(&policy));
    assert_eq!(condition(&decision.status, "Ready"), ("False", "Paused"));
    assert_eq!(
        condition(&decision.status, "Reconciling"),
        ("False", "Paused")
    );
    let mut managed = live.clone();
    managed.spec.management_policy = ManagementPolicy::Full;
    let decision = decide_sync(&managed, &leen_says("PAUSED", None), &inputs(&policy));
    assert_eq!(
        condition(&decision.status, "Ready"),
        ("False", "StateDrift")
    );
}

#[test]
fn a_resource_sync_interval_sets_its_next_read() {
    let policy = RetryPolicy::default();
    // Jitter 1: the interval spread by 0.9 + 0.2, so 1.1 x.
    let next = |obj: &LeenConnection| {
        decide_sync(obj, &leen_says("ACTIVE", None), &inputs(&policy)).requeue_after
    };
    assert_eq!(
        next(&LeenConnection::test()),
        Some(Duration::from_secs(330))
    );
    assert_eq!(
        next(&every_interval(LeenConnection::test(), "1m")),
        Some(Duration::from_secs(66))
    );
    assert_eq!(
        next(&every_interval(LeenConnection::test(), "1h30m")),
        Some(Duration::from_secs(5940))
    );
    // A failure is retried no later than the resource's own interval.
    let failed = decide_sync(
        &every_interval(LeenConnection::test(), "30s"),
        &Observation::Leen(LeenOutcome::Unauthorized {
            status: 401,
            detail: String::new(),
        }),
        &inputs(&policy),
    );
    assert!(
        failed.requeue_after <= Some(Duration::from_secs(30)),
        "{:?}",
        failed.requeue_after
    );
}

#[test]
fn go_durations_parse_as_cel_reads_them() {
    for (text, secs) in [
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("90m", 5400.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
    ] {
        assert_eq!(
            parse_go_duration(text),
            Some(Duration::from_secs_f64(secs)),
            "{text}"
        );
    }
    assert_eq!(
        parse_go_duration("999999999s"),
        Some(Duration::from_secs(999_999_999))
    );
    let huge = format!("{}s", "9".repeat(400));
    for text in [
        "",
        "30",
        "s",
        "1d",
        "-1m",
        "1m 30s",
        "1.s.",
        "m30",
        "1000000000s",
        "300000h",
        &huge,
    ] {
        assert_eq!(parse_go_duration(text), None, "{text:?}");
    }
}

/// Only a fully managed `Delete` resource's deletion calls Leen (and so needs its key
/// Secret kept): the key Secret's protection follows this.
#[test]
fn only_a_managed_delete_resource_deletes_in_leen() {
    let obj = LeenConnection::test();
    assert!(obj.deletes_in_leen());
    assert!(!obj.clone().orphan().deletes_in_leen());
    assert!(!observed(obj.clone()).deletes_in_leen());
    assert!(!observed(obj.orphan()).deletes_in_leen());
    assert!(!LeenConnection::test().paused());
    assert!(!LeenConnection::test().observe_only());
}

/// A resource paused while live and then deleted says the deletion waits: a new message,
/// so a new Event, though the reason is the same.
#[test]
fn a_pause_that_turns_into_a_paused_deletion_is_told() {
    let policy = RetryPolicy::default();
    let mut obj = paused(LeenConnection::test(), "true");
    obj.status = Some(decide_sync(&obj, &Observation::Paused, &inputs(&policy)).status);
    let obj = obj.deleting();
    let decision = decide_deletion(
        &obj,
        &DeletionStep::Observed(Observation::Paused),
        &inputs(&policy),
    );
    let event = decision.event.expect("the deletion's pause is told");
    assert_eq!(event.action, "DeleteConnection");
    assert!(event.note.contains("deletion waits"), "{}", event.note);
}
