//! The controller's choices, row by row, on the pure plan step: (resource, inputs read so
//! far) -> the one next step (a read, a Leen call, or done with what). One table per
//! path, each row named for what it shows (Crossplane's `cases := map[string]struct`).

mod support;

use std::{collections::BTreeMap, time::Duration};

use chrono::{TimeZone, Utc};
use k8s_openapi::ByteString;
use leen_operator::{
    budget::{BudgetConfig, Verdict},
    credentials::Credentials,
    decision::{
        Binding, DeletionInputs, DeletionPlan, DeletionStep, FindLostCreate, Freshness, Lookup,
        Need, Observation, Reason, SyncInputs, SyncPlan, held_earlier_message, held_message,
        held_retry_message, plan_deletion, plan_sync, validate_binding,
    },
    leen::{ApiKey, Connection, CreateRequest, LeenOutcome, UpdateRequest},
    organization::{OrganizationKind, OrganizationRef},
    resource::{
        CONFIRM_DELETION_ANNOTATION, CreationRecord, CredentialsStatus, CredentialsTest,
        DeletionRecord, DesiredState, LeenConnection, Region, SecretRef,
    },
};
use support::fixtures::{Fixture, ID, ORG};
use uuid::Uuid;

fn binding() -> Binding {
    Binding {
        region: Region::Us,
        organization: Uuid::parse_str(ORG).expect("org"),
        connection: Uuid::parse_str(ID).expect("id"),
    }
}

fn key() -> Option<Result<ApiKey, String>> {
    Some(Ok(ApiKey::new("k").expect("key")))
}

fn no_key() -> Option<Result<ApiKey, String>> {
    Some(Err("Secret security/k not found".to_string()))
}

fn unavailable() -> LeenOutcome {
    LeenOutcome::Unavailable {
        status: Some(503),
        error: "down".into(),
    }
}

fn connection(state: &str) -> LeenOutcome {
    LeenOutcome::Success(Box::new(Connection {
        id: Some(ID.into()),
        state: Some(state.into()),
        ..Default::default()
    }))
}

fn credentials(value: &str) -> Credentials {
    let data = BTreeMap::from([("token".to_string(), ByteString(value.as_bytes().to_vec()))]);
    Credentials::from_secret_data(&data).expect("credentials")
}

fn with_deletion(mut obj: LeenConnection, record: DeletionRecord) -> LeenConnection {
    obj.status.get_or_insert_with(Default::default).deletion = Some(record);
    obj
}

fn outcome(word: &str) -> DeletionRecord {
    DeletionRecord {
        outcome: Some(word.into()),
        ..Default::default()
    }
}

fn with_intent(mut obj: LeenConnection, identifier: &str) -> LeenConnection {
    obj.status.get_or_insert_with(Default::default).creation = Some(CreationRecord {
        identifier: identifier.into(),
        attempts: 1,
        ..Default::default()
    });
    obj
}

/// A create intent whose last POST went out at `at` (its outcome unknown), to `region`
/// and `org`.
fn pending_since(
    obj: LeenConnection,
    identifier: &str,
    at: &str,
    target: Option<(Region, &str)>,
) -> LeenConnection {
    let mut obj = with_intent(obj, identifier);
    if let Some(c) = obj.status.as_mut().and_then(|s| s.creation.as_mut()) {
        c.last_attempt_time = Some(at.into());
        c.region = target.map(|t| t.0);
        c.organization_id = target.map(|t| t.1.to_string());
    }
    obj
}

/// 2026-01-01T00:00:00Z + `secs`.
fn at(secs: i64) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("time")
        + chrono::Duration::seconds(secs)
}

const OTHER_ORG: &str = "6f1c2d4e-0000-4000-8000-000000000009";

fn confirmed(mut obj: LeenConnection, value: &str) -> LeenConnection {
    obj.metadata.annotations = Some(BTreeMap::from([(
        CONFIRM_DELETION_ANNOTATION.to_string(),
        value.to_string(),
    )]));
    obj
}

fn budget(resume_held: bool) -> BudgetConfig {
    BudgetConfig {
        max_deletions: 5,
        window: Duration::from_secs(600),
        resume_held,
        namespace: "leen-system".into(),
        name: "leen-operator-deletion-budget".into(),
    }
}

/// What a deletion held by an unreadable budget record says.
fn unreadable_message() -> String {
    format!(
        "the deletion budget's record cannot be read (not JSON), so connection {ID} was not deleted: the budget fails closed. Fix or remove the annotation leen.dev/deletions-started of Lease leen-system/leen-operator-deletion-budget (the count starts again from it), or confirm this deletion: kubectl annotate leenconn crowdstrike-prod -n security leen.dev/confirm-deletion=true"
    )
}

fn frees_at() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 10, 0)
        .single()
        .expect("time")
}

/// One row of the deletion table.
struct DeletionCase {
    obj: LeenConnection,
    inputs: DeletionInputs,
    budget: Option<BudgetConfig>,
    want: DeletionPlan,
}

impl DeletionCase {
    fn new(obj: LeenConnection, want: DeletionPlan) -> Self {
        // The cache is fresh unless a row says otherwise.
        let inputs = DeletionInputs {
            cache: Some(Freshness::Fresh),
            ..Default::default()
        };
        Self {
            obj,
            inputs,
            budget: None,
            want,
        }
    }
    fn sent_before(mut self) -> Self {
        self.inputs.sent_before = true;
        self
    }
    fn cache(mut self, cache: Option<Freshness>) -> Self {
        self.inputs.cache = cache;
        self
    }
    fn key(mut self, key: Option<Result<ApiKey, String>>) -> Self {
        self.inputs.key = key;
        self
    }
    fn binder(mut self, binder: Option<&str>) -> Self {
        self.inputs.binder = Some(binder.map(str::to_string));
        self
    }
    fn lookup(mut self, lookup: Lookup) -> Self {
        self.inputs.lookup = Some(lookup);
        self
    }
    fn budget(mut self, budget: BudgetConfig) -> Self {
        self.budget = Some(budget);
        self
    }
    fn verdict(mut self, verdict: Verdict) -> Self {
        self.inputs.verdict = Some(verdict);
        self
    }
    fn deleted(mut self, outcome: LeenOutcome) -> Self {
        self.inputs.deleted = Some(outcome);
        self
    }
    fn organization(mut self, answer: Result<(), LeenOutcome>) -> Self {
        self.inputs.organization = Some(answer);
        self
    }
}

fn not_found() -> LeenOutcome {
    LeenOutcome::NotFound {
        detail: "Not Found".into(),
    }
}

fn prove() -> DeletionPlan {
    DeletionPlan::ProveOrganization {
        region: Region::Us,
        organization: Uuid::parse_str(ORG).expect("org"),
    }
}

/// A deletion whose record says a DELETE went out before, with `record`.
fn sent(record: DeletionRecord) -> LeenConnection {
    with_deletion(
        deleting(),
        DeletionRecord {
            delete_sent: true,
            ..record
        },
    )
}

fn deleting() -> LeenConnection {
    LeenConnection::test().deleting()
}

fn creating() -> LeenConnection {
    LeenConnection::to_create("CROWDSTRIKE").deleting()
}

fn done(step: DeletionStep) -> DeletionPlan {
    DeletionPlan::Done(step)
}

fn observed(obs: Observation) -> DeletionPlan {
    DeletionPlan::Done(DeletionStep::Observed(obs))
}

#[test]
fn deletion_plan() {
    let moved = {
        let mut obj = deleting().bound();
        obj.spec.connection_id = Some(Uuid::new_v4().to_string());
        obj
    };
    let moved_error = validate_binding(&moved).expect_err("immutable");
    let not_a_uuid = {
        let mut obj = deleting();
        obj.spec.connection_id = Some("not-a-uuid".into());
        obj
    };
    let not_a_uuid_error = validate_binding(&not_a_uuid).expect_err("invalid");
    let held = |resume: bool| Observation::DeletionHeld {
        message: held_message(&deleting(), &budget(resume), 5, frees_at()),
        resume_at: resume.then(frees_at),
    };
    let held_verdict = Verdict::Held {
        started: 5,
        frees_at: frees_at(),
    };
    let cases: Vec<(&str, DeletionCase)> = vec![
        (
            "Orphan is released with no input and no call",
            DeletionCase::new(deleting().orphan(), done(DeletionStep::Orphan)),
        ),
        (
            "Orphan wins over an earlier confirmation",
            DeletionCase::new(
                with_deletion(deleting().orphan(), outcome("Deleted")),
                done(DeletionStep::Orphan),
            ),
        ),
        (
            "a deletion Leen confirmed earlier only releases the finalizer",
            DeletionCase::new(
                with_deletion(deleting(), outcome("Deleted")),
                done(DeletionStep::AlreadyConfirmed(Reason::Deleted)),
            ),
        ),
        (
            "an earlier 404 confirmation likewise",
            DeletionCase::new(
                with_deletion(deleting(), outcome("AlreadyDeleted")),
                done(DeletionStep::AlreadyConfirmed(Reason::AlreadyDeleted)),
            ),
        ),
        (
            "an earlier failure is no confirmation: the binders are looked at",
            DeletionCase::new(
                with_deletion(deleting(), outcome("LeenUnavailable")),
                DeletionPlan::Read(Need::Binders),
            ),
        ),
        (
            "a create never sent: nothing to delete, no key needed",
            DeletionCase::new(
                creating(),
                done(DeletionStep::NotCreated {
                    identifier: "security/crowdstrike-prod/u-1".into(),
                }),
            ),
        ),
        (
            "a create that may have gone out: the key first",
            DeletionCase::new(
                with_intent(creating(), "lost-1"),
                DeletionPlan::Read(Need::ApiKey),
            ),
        ),
        (
            "a create that may have gone out, no key: kept",
            DeletionCase::new(
                with_intent(creating(), "lost-1"),
                observed(Observation::CredentialsMissing(
                    "Secret security/k not found".into(),
                )),
            )
            .key(no_key()),
        ),
        (
            "a create that may have gone out: looked up by its recorded identifier",
            DeletionCase::new(
                with_intent(creating(), "lost-1"),
                DeletionPlan::FindLostCreate(FindLostCreate {
                    region: Region::Us,
                    organization: Uuid::parse_str(ORG).expect("org"),
                    identifier: "lost-1".into(),
                    intent: true,
                }),
            )
            .key(key()),
        ),
        (
            "the look-up found it: bound (then deleted)",
            DeletionCase::new(
                with_intent(creating(), "lost-1"),
                DeletionPlan::Bind(binding()),
            )
            .key(key())
            .lookup(Lookup::Found(Box::new(Connection {
                id: Some(ID.into()),
                ..Default::default()
            }))),
        ),
        (
            "the look-up found nothing: not created",
            DeletionCase::new(
                with_intent(creating(), "lost-1"),
                done(DeletionStep::NotCreated {
                    identifier: "lost-1".into(),
                }),
            )
            .key(key())
            .lookup(Lookup::Absent),
        ),
        (
            "the look-up failed: kept, retried",
            DeletionCase::new(
                with_intent(creating(), "lost-1"),
                observed(Observation::Leen(unavailable())),
            )
            .key(key())
            .lookup(Lookup::Failed(unavailable())),
        ),
        (
            "bound: who else binds it comes first",
            DeletionCase::new(deleting(), DeletionPlan::Read(Need::Binders)),
        ),
        (
            "bound: whether the cache follows the API server comes before the binders",
            DeletionCase::new(deleting(), DeletionPlan::Read(Need::CacheFreshness)).cache(None),
        ),
        (
            "a cache that may be behind: nothing is decided from it, no call",
            DeletionCase::new(
                deleting(),
                done(DeletionStep::Concluded {
                    reason: Reason::CacheStale,
                    message: format!(
                        "the LeenConnection cache is relisting: whether another resource binds connection {ID} is not known, so nothing is deleted until the cache catches up"
                    ),
                }),
            )
            .cache(Some(Freshness::Stale(
                "the LeenConnection cache is relisting".into(),
            )))
            .binder(None)
            .key(key()),
        ),
        (
            "a cache that may be behind does not release as still referenced either",
            DeletionCase::new(
                deleting(),
                done(DeletionStep::Concluded {
                    reason: Reason::CacheStale,
                    message: format!(
                        "the LeenConnection watch is failing (reset): whether another resource binds connection {ID} is not known, so nothing is deleted until the cache catches up"
                    ),
                }),
            )
            .cache(Some(Freshness::Stale(
                "the LeenConnection watch is failing (reset)".into(),
            )))
            .binder(Some("security/other")),
        ),
        (
            "a lost create found while the cache is behind: bound, then it waits",
            DeletionCase::new(
                with_intent(creating(), "lost-1"),
                DeletionPlan::Bind(binding()),
            )
            .cache(Some(Freshness::Stale("silent".into())))
            .key(key())
            .lookup(Lookup::Found(Box::new(Connection {
                id: Some(ID.into()),
                ..Default::default()
            }))),
        ),
        (
            "another live resource binds it: released without a call",
            DeletionCase::new(
                deleting(),
                done(DeletionStep::StillReferenced {
                    by: "security/other".into(),
                }),
            )
            .binder(Some("security/other")),
        ),
        (
            "another binder counts even when the spec moved (the binding in status decides)",
            DeletionCase::new(
                moved.clone(),
                done(DeletionStep::StillReferenced {
                    by: "security/other".into(),
                }),
            )
            .binder(Some("security/other")),
        ),
        (
            "a spec moved off its binding: no call",
            DeletionCase::new(moved, observed(moved_error)).binder(None),
        ),
        (
            "an id that is not a UUID: no call, no key",
            DeletionCase::new(not_a_uuid, observed(not_a_uuid_error)),
        ),
        (
            "no other binder: the key",
            DeletionCase::new(deleting(), DeletionPlan::Read(Need::ApiKey)).binder(None),
        ),
        (
            "no key: kept",
            DeletionCase::new(
                deleting(),
                observed(Observation::CredentialsMissing(
                    "Secret security/k not found".into(),
                )),
            )
            .binder(None)
            .key(no_key()),
        ),
        (
            "the DELETE answered: decide on it",
            DeletionCase::new(
                deleting(),
                observed(Observation::Leen(connection("DELETED"))),
            )
            .binder(None)
            .key(key())
            .deleted(connection("DELETED")),
        ),
        (
            "the DELETE failed: decide on that",
            DeletionCase::new(deleting(), observed(Observation::Leen(unavailable())))
                .binder(None)
                .key(key())
                .deleted(unavailable()),
        ),
        (
            "a 404: the organization must answer on the same URL with the same key",
            DeletionCase::new(deleting(), prove())
                .binder(None)
                .key(key())
                .deleted(not_found()),
        ),
        (
            "a 404 with the organization shown: already deleted",
            DeletionCase::new(deleting(), observed(Observation::Leen(not_found())))
                .binder(None)
                .key(key())
                .deleted(not_found())
                .organization(Ok(())),
        ),
        (
            "a 404 after a counted DELETE asks for the proof too",
            DeletionCase::new(deleting(), prove())
                .binder(None)
                .key(key())
                .budget(budget(false))
                .verdict(Verdict::Go)
                .deleted(not_found()),
        ),
        (
            "no budget: DELETE",
            DeletionCase::new(deleting(), DeletionPlan::Delete(binding()))
                .binder(None)
                .key(key()),
        ),
        (
            "a budget of 0 is no budget",
            DeletionCase::new(deleting(), DeletionPlan::Delete(binding()))
                .binder(None)
                .key(key())
                .budget(BudgetConfig {
                    max_deletions: 0,
                    ..budget(false)
                }),
        ),
        (
            "with a budget: its verdict first",
            DeletionCase::new(deleting(), DeletionPlan::Read(Need::BudgetVerdict))
                .binder(None)
                .key(key())
                .budget(budget(false)),
        ),
        (
            "the budget allows it: DELETE",
            DeletionCase::new(deleting(), DeletionPlan::Delete(binding()))
                .binder(None)
                .key(key())
                .budget(budget(false))
                .verdict(Verdict::Go),
        ),
        (
            "the budget is spent: held until a person decides",
            DeletionCase::new(deleting(), observed(held(false)))
                .binder(None)
                .key(key())
                .budget(budget(false))
                .verdict(held_verdict.clone()),
        ),
        (
            "the budget is spent, resume set: held until it frees",
            DeletionCase::new(deleting(), observed(held(true)))
                .binder(None)
                .key(key())
                .budget(budget(true))
                .verdict(held_verdict.clone()),
        ),
        (
            "confirmed by a person: not counted",
            DeletionCase::new(
                confirmed(deleting(), " true "),
                DeletionPlan::Delete(binding()),
            )
            .binder(None)
            .key(key())
            .budget(budget(false)),
        ),
        (
            "a confirmation other than true is none",
            DeletionCase::new(
                confirmed(deleting(), "yes"),
                DeletionPlan::Read(Need::BudgetVerdict),
            )
            .binder(None)
            .key(key())
            .budget(budget(false)),
        ),
        (
            "a retry of a DELETE that went out is counted again: every call counts",
            DeletionCase::new(sent(outcome("LeenUnavailable")), DeletionPlan::Read(Need::BudgetVerdict))
                .binder(None)
                .key(key())
                .budget(budget(false)),
        ),
        (
            "a retry the budget admits goes out",
            DeletionCase::new(sent(outcome("LeenUnavailable")), DeletionPlan::Delete(binding()))
                .binder(None)
                .key(key())
                .budget(budget(false))
                .verdict(Verdict::Go),
        ),
        (
            "a retry beyond the budget waits for the window, not for a person",
            DeletionCase::new(
                sent(outcome("LeenUnavailable")),
                observed(Observation::DeletionHeld {
                    message: held_retry_message(&sent(outcome("LeenUnavailable")), &budget(false), 5, frees_at()),
                    resume_at: Some(frees_at()),
                }),
            )
            .binder(None)
            .key(key())
            .budget(budget(false))
            .verdict(held_verdict.clone()),
        ),
        (
            "a DELETE this process sent, whose record write failed, is a retry too",
            DeletionCase::new(
                with_deletion(deleting(), outcome("LeenUnavailable")),
                observed(Observation::DeletionHeld {
                    message: held_retry_message(
                        &with_deletion(deleting(), outcome("LeenUnavailable")),
                        &budget(false),
                        5,
                        frees_at(),
                    ),
                    resume_at: Some(frees_at()),
                }),
            )
            .sent_before()
            .binder(None)
            .key(key())
            .budget(budget(false))
            .verdict(held_verdict.clone()),
        ),
        (
            "a retry held once is still a retry: not held durably",
            DeletionCase::new(
                sent(DeletionRecord {
                    held: false,
                    ..outcome("DeletionHeld")
                }),
                DeletionPlan::Read(Need::BudgetVerdict),
            )
            .binder(None)
            .key(key())
            .budget(budget(false)),
        ),
        (
            "an answer recorded from a look-up is no DELETE sent: counted and held as a first one",
            DeletionCase::new(
                with_deletion(
                    deleting(),
                    DeletionRecord {
                        last_http_status: Some(500),
                        ..outcome("LeenUnavailable")
                    },
                ),
                observed(held(false)),
            )
            .binder(None)
            .key(key())
            .budget(budget(false))
            .verdict(held_verdict.clone()),
        ),
        (
            "a deletion that never reached Leen is counted",
            DeletionCase::new(
                with_deletion(deleting(), outcome("CredentialsMissing")),
                DeletionPlan::Read(Need::BudgetVerdict),
            )
            .binder(None)
            .key(key())
            .budget(budget(false)),
        ),
        (
            "held once, held: the window moving on does not release it",
            DeletionCase::new(
                with_deletion(
                    deleting(),
                    DeletionRecord {
                        last_error: Some("held earlier".into()),
                        ..outcome("DeletionHeld")
                    },
                ),
                observed(Observation::DeletionHeld {
                    message: "held earlier".into(),
                    resume_at: None,
                }),
            )
            .binder(None)
            .key(key())
            .budget(budget(false)),
        ),
        (
            "held once, then another outcome in between: still held",
            DeletionCase::new(
                with_deletion(
                    deleting(),
                    DeletionRecord {
                        held: true,
                        last_error: Some("Secret security/k not found".into()),
                        ..outcome("CredentialsMissing")
                    },
                ),
                observed(Observation::DeletionHeld {
                    message: held_earlier_message(&deleting()),
                    resume_at: None,
                }),
            )
            .binder(None)
            .key(key())
            .budget(budget(false)),
        ),
        (
            "held once, confirmed since: DELETE, not counted",
            DeletionCase::new(
                confirmed(
                    with_deletion(
                        deleting(),
                        DeletionRecord {
                            held: true,
                            ..outcome("CredentialsMissing")
                        },
                    ),
                    "true",
                ),
                DeletionPlan::Delete(binding()),
            )
            .binder(None)
            .key(key())
            .budget(budget(false)),
        ),
        (
            "held once, resume set: the budget is asked again whatever came between",
            DeletionCase::new(
                with_deletion(
                    deleting(),
                    DeletionRecord {
                        held: true,
                        ..outcome("LeenUnavailable")
                    },
                ),
                DeletionPlan::Read(Need::BudgetVerdict),
            )
            .binder(None)
            .key(key())
            .budget(budget(true)),
        ),
        (
            "an unreadable budget record: held, failing closed",
            DeletionCase::new(
                deleting(),
                observed(Observation::DeletionHeld {
                    message: unreadable_message(),
                    resume_at: None,
                }),
            )
            .binder(None)
            .key(key())
            .budget(budget(false))
            .verdict(Verdict::Unreadable("not JSON".into())),
        ),
        (
            "held once without a message: a default one",
            DeletionCase::new(
                with_deletion(deleting(), outcome("DeletionHeld")),
                observed(Observation::DeletionHeld {
                    message: held_earlier_message(&deleting()),
                    resume_at: None,
                }),
            )
            .binder(None)
            .key(key())
            .budget(budget(false)),
        ),
        (
            "held once, resume set: the budget is asked again",
            DeletionCase::new(
                with_deletion(deleting(), outcome("DeletionHeld")),
                DeletionPlan::Read(Need::BudgetVerdict),
            )
            .binder(None)
            .key(key())
            .budget(budget(true)),
        ),
    ];
    // A 404 where the organization does not answer proves nothing: kept, retried.
    for (name, answer, says) in [
        (
            "the organization unknown there",
            not_found(),
            "did not answer",
        ),
        (
            "the organization unreachable",
            unavailable(),
            "Leen is unavailable",
        ),
    ] {
        let plan = plan_deletion(
            &DeletionCase::new(deleting(), prove()).obj,
            &DeletionCase::new(deleting(), prove())
                .binder(None)
                .key(key())
                .deleted(not_found())
                .organization(Err(answer))
                .inputs,
            None,
        );
        let DeletionPlan::Done(DeletionStep::Observed(Observation::Leen(
            LeenOutcome::Unexpected { status, detail },
        ))) = plan
        else {
            panic!("{name}: {plan:?}");
        };
        assert_eq!(status, 404, "{name}");
        assert!(detail.contains(says), "{name}: {detail}");
        assert!(detail.contains("proves nothing"), "{name}: {detail}");
        assert!(
            detail.contains(ORG) && detail.contains(ID),
            "{name}: {detail}"
        );
    }
    for (name, case) in cases {
        assert_eq!(
            plan_deletion(&case.obj, &case.inputs, case.budget.as_ref()),
            case.want,
            "{name}"
        );
    }
}

/// One row of the sync table.
struct SyncCase {
    obj: LeenConnection,
    inputs: SyncInputs,
    want: SyncPlan,
}

impl SyncCase {
    fn new(obj: LeenConnection, want: SyncPlan) -> Self {
        Self {
            obj,
            inputs: SyncInputs::default(),
            want,
        }
    }
    /// Key read, no credentials Secret.
    fn ready(mut self) -> Self {
        self.inputs.key = key();
        self.inputs.credentials = Some(Ok(None));
        self
    }
    fn credentials(mut self, c: Credentials) -> Self {
        self.inputs.credentials = Some(Ok(Some(c)));
        self
    }
    fn observed(mut self, outcome: LeenOutcome) -> Self {
        self.inputs.observed = Some(outcome);
        self
    }
    fn updated(mut self) -> Self {
        self.inputs.updated = true;
        self
    }
    fn lookup(mut self, lookup: Lookup) -> Self {
        self.inputs.lookup = Some(lookup);
        self
    }
    fn tested(mut self) -> Self {
        self.inputs.test = Some(Err("test failed".into()));
        self
    }
}

fn live() -> LeenConnection {
    LeenConnection::test()
}

fn wants_state(mut obj: LeenConnection, state: DesiredState) -> LeenConnection {
    obj.spec.state = Some(state);
    obj
}

fn with_credentials(
    mut obj: LeenConnection,
    applied: &str,
    tested: Option<&str>,
) -> LeenConnection {
    obj.spec.credentials_secret_ref = Some(SecretRef {
        name: "creds".into(),
    });
    obj.status.get_or_insert_with(Default::default).credentials = Some(CredentialsStatus {
        applied_hash: Some(applied.into()),
        applied_time: None,
        last_test: tested.map(|hash| CredentialsTest {
            valid: true,
            message: None,
            time: None,
            applied_hash: Some(hash.into()),
        }),
    });
    obj
}

fn create_request(identifier: &str, credentials: Option<Credentials>) -> CreateRequest {
    CreateRequest {
        vendor: "CROWDSTRIKE".into(),
        credentials,
        identifier: identifier.into(),
        options: None,
    }
}

fn create(identifier: &str) -> SyncPlan {
    SyncPlan::Create {
        region: Region::Us,
        organization: Uuid::parse_str(ORG).expect("org"),
        request: create_request(identifier, None),
    }
}

fn find(identifier: &str, intent: bool) -> SyncPlan {
    SyncPlan::FindLostCreate(FindLostCreate {
        region: Region::Us,
        organization: Uuid::parse_str(ORG).expect("org"),
        identifier: identifier.into(),
        intent,
    })
}

fn sync_done(obs: Observation) -> SyncPlan {
    SyncPlan::Done(obs)
}

#[test]
fn sync_plan() {
    let not_a_uuid = {
        let mut obj = live();
        obj.spec.organization_id = "nope".into();
        obj
    };
    let invalid = validate_binding(&not_a_uuid).expect_err("invalid");
    let to_create = LeenConnection::to_create("CROWDSTRIKE");
    let named = {
        let mut obj = to_create.clone();
        obj.spec.identifier = Some("mine".into());
        obj
    };
    let same = credentials("same");
    let same_hash = same.salted_hash("u-1");
    let listed = Box::new(Connection {
        id: Some(ID.into()),
        identifier: Some("mine".into()),
        ..Default::default()
    });
    let cases: Vec<(&str, SyncCase)> = vec![
        (
            "an invalid spec: no read, no call",
            SyncCase::new(not_a_uuid, sync_done(invalid)),
        ),
        (
            "the key first",
            SyncCase::new(live(), SyncPlan::Read(Need::ApiKey)),
        ),
        (
            "no key: no call",
            SyncCase::new(
                live(),
                sync_done(Observation::CredentialsMissing(
                    "Secret security/k not found".into(),
                )),
            )
            .tap(|c| c.inputs.key = no_key()),
        ),
        (
            "then the vendor credentials",
            SyncCase::new(live(), SyncPlan::Read(Need::Credentials)).tap(|c| c.inputs.key = key()),
        ),
        (
            "credentials that cannot be read: no call",
            SyncCase::new(
                live(),
                sync_done(Observation::CredentialsMissing("creds not found".into())),
            )
            .tap(|c| {
                c.inputs.key = key();
                c.inputs.credentials = Some(Err(Observation::CredentialsMissing(
                    "creds not found".into(),
                )));
            }),
        ),
        (
            "bound: GET",
            SyncCase::new(live(), SyncPlan::Observe(binding())).ready(),
        ),
        (
            "the GET failed: decide on that",
            SyncCase::new(live(), sync_done(Observation::Leen(unavailable())))
                .ready()
                .observed(unavailable()),
        ),
        (
            "as the spec asks: done",
            SyncCase::new(live(), sync_done(Observation::Leen(connection("ACTIVE"))))
                .ready()
                .observed(connection("ACTIVE")),
        ),
        (
            "spec.state Paused, Leen ACTIVE: PATCH the state",
            SyncCase::new(
                wants_state(live(), DesiredState::Paused),
                SyncPlan::Update {
                    binding: binding(),
                    request: UpdateRequest {
                        credentials: None,
                        state: Some("PAUSED"),
                    },
                },
            )
            .ready()
            .observed(connection("ACTIVE")),
        ),
        (
            "patched once: never twice in a reconcile",
            SyncCase::new(
                wants_state(live(), DesiredState::Paused),
                sync_done(Observation::Leen(connection("ACTIVE"))),
            )
            .ready()
            .updated()
            .observed(connection("ACTIVE")),
        ),
        (
            "the PATCH failed: decide on that",
            SyncCase::new(
                wants_state(live(), DesiredState::Paused),
                sync_done(Observation::Leen(unavailable())),
            )
            .ready()
            .updated()
            .observed(unavailable()),
        ),
        (
            "PENDING is not Leen's to toggle",
            SyncCase::new(
                wants_state(live(), DesiredState::Active),
                sync_done(Observation::Leen(connection("PENDING"))),
            )
            .ready()
            .observed(connection("PENDING")),
        ),
        (
            "changed credentials: PATCH them",
            SyncCase::new(
                with_credentials(live(), "old-hash", Some("old-hash")),
                SyncPlan::Update {
                    binding: binding(),
                    request: UpdateRequest {
                        credentials: Some(credentials("new")),
                        state: None,
                    },
                },
            )
            .ready()
            .credentials(credentials("new"))
            .observed(connection("ACTIVE")),
        ),
        (
            "unchanged credentials, tested: done",
            SyncCase::new(
                with_credentials(live(), &same_hash, Some(&same_hash)),
                sync_done(Observation::Leen(connection("ACTIVE"))),
            )
            .ready()
            .credentials(same.clone())
            .observed(connection("ACTIVE")),
        ),
        (
            "credentials sent but not tested: test them",
            SyncCase::new(
                with_credentials(live(), &same_hash, None),
                SyncPlan::Test {
                    binding: binding(),
                    applied_hash: same_hash.clone(),
                },
            )
            .ready()
            .credentials(same.clone())
            .observed(connection("ACTIVE")),
        ),
        (
            "a test of other credentials does not count",
            SyncCase::new(
                with_credentials(live(), &same_hash, Some("older")),
                SyncPlan::Test {
                    binding: binding(),
                    applied_hash: same_hash.clone(),
                },
            )
            .ready()
            .credentials(same.clone())
            .observed(connection("ACTIVE")),
        ),
        (
            "tested in this reconcile: done",
            SyncCase::new(
                with_credentials(live(), &same_hash, None),
                sync_done(Observation::Leen(connection("ACTIVE"))),
            )
            .ready()
            .credentials(same.clone())
            .observed(connection("ACTIVE"))
            .tested(),
        ),
        (
            "no credentials Secret: nothing to test",
            SyncCase::new(
                {
                    let mut obj = with_credentials(live(), &same_hash, None);
                    obj.spec.credentials_secret_ref = None;
                    obj
                },
                sync_done(Observation::Leen(connection("ACTIVE"))),
            )
            .ready()
            .observed(connection("ACTIVE")),
        ),
        (
            "a failed read is not tested",
            SyncCase::new(
                with_credentials(live(), &same_hash, None),
                sync_done(Observation::Leen(unavailable())),
            )
            .ready()
            .credentials(same.clone())
            .observed(unavailable()),
        ),
        (
            "nothing bound, no intent, no spec identifier: POST",
            SyncCase::new(to_create.clone(), create("security/crowdstrike-prod/u-1")).ready(),
        ),
        (
            "the POST carries the credentials",
            SyncCase::new(
                to_create.clone(),
                SyncPlan::Create {
                    region: Region::Us,
                    organization: Uuid::parse_str(ORG).expect("org"),
                    request: create_request("security/crowdstrike-prod/u-1", Some(same.clone())),
                },
            )
            .ready()
            .credentials(same.clone()),
        ),
        (
            "a spec identifier: looked up before the first POST",
            SyncCase::new(named.clone(), find("mine", false)).ready(),
        ),
        (
            "a create intent recorded: looked up by its identifier, never POSTed blindly",
            SyncCase::new(
                with_intent(to_create.clone(), "lost-1"),
                find("lost-1", true),
            )
            .ready(),
        ),
        (
            "its own create found again: bound, no POST",
            SyncCase::new(
                with_intent(to_create.clone(), "lost-1"),
                SyncPlan::Bind {
                    binding: binding(),
                    connection: listed.clone(),
                    identifier: "lost-1".into(),
                },
            )
            .ready()
            .lookup(Lookup::Found(listed.clone())),
        ),
        (
            "looked up, absent: POST",
            SyncCase::new(named.clone(), create("mine"))
                .ready()
                .lookup(Lookup::Absent),
        ),
        (
            "the look-up failed: no POST",
            SyncCase::new(
                with_intent(to_create.clone(), "lost-1"),
                sync_done(Observation::Leen(unavailable())),
            )
            .ready()
            .lookup(Lookup::Failed(unavailable())),
        ),
        (
            "the POST failed: decide on that",
            SyncCase::new(
                with_intent(to_create.clone(), "lost-1"),
                sync_done(Observation::Leen(unavailable())),
            )
            .ready()
            .lookup(Lookup::Absent)
            .observed(unavailable()),
        ),
        (
            "created and bound: on to the update rules",
            SyncCase::new(
                wants_state(to_create.clone().bound_to(ID), DesiredState::Paused),
                SyncPlan::Update {
                    binding: binding(),
                    request: UpdateRequest {
                        credentials: None,
                        state: Some("PAUSED"),
                    },
                },
            )
            .ready()
            .observed(connection("ACTIVE")),
        ),
    ];
    for (name, case) in cases {
        assert_eq!(plan_sync(&case.obj, &case.inputs), case.want, "{name}");
    }
    // A spec identifier that finds a connection this resource did not create: neither
    // adopted nor duplicated.
    let mut inputs = SyncCase::new(named.clone(), create("x")).ready().inputs;
    inputs.lookup = Some(Lookup::Found(listed));
    let SyncPlan::Done(Observation::InvalidSpec { reason, message }) = plan_sync(&named, &inputs)
    else {
        panic!("no adoption, no POST");
    };
    assert_eq!(reason, Reason::IdentifierInUse);
    for says in [ID, "\"mine\"", "spec.connectionId", "did not create it"] {
        assert!(message.contains(says), "{says}: {message}");
    }
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}

impl Tap for SyncCase {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

trait BoundTo {
    fn bound_to(self, id: &str) -> Self;
}

impl BoundTo for LeenConnection {
    /// Bound in status to connection `id` (as after a create), the spec naming none.
    fn bound_to(mut self, id: &str) -> Self {
        let org = self.spec.organization_id.clone();
        self.status
            .get_or_insert_with(Default::default)
            .bound_connection = Some(leen_operator::resource::BoundConnection {
            region: Some(Region::Us),
            organization_id: org,
            connection_id: id.into(),
        });
        self
    }
}

/// What the plan concludes without a call is decided by its reason alone: a reason that
/// releases the finalizer removes it, any other keeps it (so a new no-call rule of the
/// deletion table needs only its reason and its plan row).
#[test]
fn a_concluded_deletion_is_decided_by_its_reason() {
    use leen_operator::decision::{FinalizerAction, RetryPolicy, decide_deletion};
    let policy = RetryPolicy::default();
    let inputs = support::decisions::inputs(&policy);
    let cases = [
        (
            "a releasing reason removes the finalizer",
            Reason::NotCreated,
            FinalizerAction::Remove,
        ),
        (
            "any other keeps it",
            Reason::InvalidSpec,
            FinalizerAction::Keep,
        ),
    ];
    for (name, reason, want) in cases {
        let step = DeletionStep::Concluded {
            reason,
            message: "why".into(),
        };
        let d = decide_deletion(&deleting(), &step, &inputs);
        assert_eq!(d.finalizer, want, "{name}");
        let ready = d.status.ready().expect("Ready");
        assert_eq!(ready.reason, reason.as_str(), "{name}");
        assert!(
            ready.message.starts_with("why"),
            "{name}: {}",
            ready.message
        );
        assert_eq!(d.event.expect("an Event").reason, reason, "{name}");
    }
}

/// What the steps record on the way, before the final decision.
#[test]
fn steps_record_intent_binding_and_credentials() {
    use leen_operator::decision::record;
    let now = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("time");
    let later = Utc
        .with_ymd_and_hms(2026, 1, 1, 1, 0, 0)
        .single()
        .expect("time");
    let obj = LeenConnection::to_create("CROWDSTRIKE");

    // The first intent: attempt 1, started now; a second keeps the start, counts on.
    let org = Uuid::parse_str(ORG).expect("org");
    let first = record::create_intent(&obj, Region::Eu, org, "id-1", now);
    let creation = first.creation.clone().expect("intent");
    assert_eq!(
        (creation.identifier.as_str(), creation.attempts),
        ("id-1", 1)
    );
    assert_eq!(creation.started_at.as_deref(), Some("2026-01-01T00:00:00Z"));
    assert_eq!(
        creation.last_attempt_time.as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
    assert_eq!(
        creation.region,
        Some(Region::Eu),
        "where it went is recorded"
    );
    assert_eq!(creation.organization_id.as_deref(), Some(ORG));
    let mut again = obj.clone();
    again.status = Some(first);
    let second = record::create_intent(&again, Region::Eu, org, "id-1", later)
        .creation
        .expect("intent");
    assert_eq!(second.attempts, 2);
    assert_eq!(second.started_at.as_deref(), Some("2026-01-01T00:00:00Z"));
    assert_eq!(
        second.last_attempt_time.as_deref(),
        Some("2026-01-01T01:00:00Z")
    );

    // A create Leen refused made nothing: no wait for proof; an unknown outcome keeps it.
    again.status = Some(record::create_intent(
        &again,
        Region::Eu,
        org,
        "id-1",
        later,
    ));
    for refused in [
        LeenOutcome::Rejected {
            detail: "bad".into(),
        },
        LeenOutcome::Unauthorized {
            status: 401,
            detail: "no".into(),
        },
        LeenOutcome::RateLimited { retry_after: None },
        LeenOutcome::NotFound {
            detail: "org".into(),
        },
        LeenOutcome::Unexpected {
            status: 409,
            detail: "conflict".into(),
        },
    ] {
        let status = record::create_refused(&again, &refused).expect("refused: recorded");
        let creation = status.creation.expect("intent kept");
        assert_eq!(creation.last_attempt_time, None, "{refused:?}");
        assert_eq!(creation.attempts, 2, "{refused:?}");
    }
    for unknown in [
        unavailable(),
        LeenOutcome::InvalidResponse {
            status: 200,
            error: "cut".into(),
        },
        LeenOutcome::Unexpected {
            status: 302,
            detail: "moved".into(),
        },
        LeenOutcome::Unexpected {
            status: 504,
            detail: "gateway".into(),
        },
    ] {
        assert!(
            record::create_refused(&again, &unknown).is_none(),
            "{unknown:?} may have created it"
        );
    }

    // Bound: the binding, the id, no create in progress; the credentials sent with it.
    let sent = credentials("c");
    let status = record::bound(&again, &binding(), Some(&sent), now);
    assert!(status.creation.is_none(), "no create in progress any more");
    assert_eq!(status.connection_id.as_deref(), Some(ID));
    let bound = status.bound_connection.expect("bound");
    assert_eq!(
        (
            bound.region,
            bound.organization_id.as_str(),
            bound.connection_id.as_str()
        ),
        (Some(Region::Us), ORG, ID)
    );
    let applied = status.credentials.expect("credentials recorded");
    assert_eq!(applied.applied_hash, Some(sent.salted_hash("u-1")));
    assert_eq!(
        applied.applied_time.as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
    assert!(
        record::bound(&again, &binding(), None, now)
            .credentials
            .is_none()
    );

    // A connection Leen returned binds by its id.
    let conn = Connection {
        id: Some(ID.into()),
        ..Default::default()
    };
    assert_eq!(
        record::found_binding(Region::Us, Uuid::parse_str(ORG).expect("org"), &conn),
        binding()
    );

    // Found by identifier: the Event says why it was bound.
    let lost = record::recovered_event(&binding(), "id-1");
    assert_eq!(lost.reason, Reason::CreateRecovered);
    assert!(
        lost.note.contains("a create whose answer was lost"),
        "{}",
        lost.note
    );
    assert!(lost.note.contains(ID), "{}", lost.note);
    let created = record::created_event(&binding(), "CROWDSTRIKE", "id-1");
    assert_eq!(created.reason, Reason::Created);
    assert!(!created.warning);
    assert!(
        created.note.contains("created CROWDSTRIKE connection"),
        "{}",
        created.note
    );

    // A PATCH accepted: the state corrected, the credentials recorded, an Event each.
    let mut live = with_credentials(LeenConnection::test(), "old", None);
    live.spec.state = Some(DesiredState::Paused);
    let before = Connection {
        state: Some("ACTIVE".into()),
        ..Default::default()
    };
    let request = UpdateRequest {
        credentials: Some(sent.clone()),
        state: Some("PAUSED"),
    };
    let (status, events) = record::updated(&live, &binding(), &before, &request, now);
    let status = status.expect("credentials recorded");
    assert_eq!(
        status.credentials.and_then(|c| c.applied_hash),
        Some(sent.salted_hash("u-1"))
    );
    let reasons: Vec<Reason> = events.iter().map(|e| e.reason).collect();
    assert_eq!(
        reasons,
        [Reason::StateCorrected, Reason::CredentialsApplied]
    );
    assert!(events[0].note.contains("ACTIVE"), "{}", events[0].note);
    assert!(
        events[1].note.contains("Secret creds"),
        "{}",
        events[1].note
    );
    let state_only = UpdateRequest {
        credentials: None,
        state: Some("PAUSED"),
    };
    let (status, events) = record::updated(&live, &binding(), &before, &state_only, now);
    assert!(status.is_none(), "nothing to record for a state change");
    assert_eq!(events.len(), 1);
}

/// A held deletion's message says what happened and both ways on, with the commands.
#[test]
fn a_held_deletion_says_why_and_how_to_go_on() {
    let waits = held_message(&deleting(), &budget(false), 5, frees_at());
    for says in [
        "deletion budget spent: 5 DELETE calls to Leen started in the last 10m",
        "(LEEN_MAX_DELETIONS=5, LEEN_DELETION_WINDOW=10m)",
        &format!("so connection {ID} was not deleted; it waits for a person"),
        "kubectl annotate leenconn crowdstrike-prod -n security leen.dev/confirm-deletion=true",
        "kubectl patch leenconn crowdstrike-prod -n security --type merge -p '{\"spec\":{\"deletionPolicy\":\"Orphan\"}}'",
    ] {
        assert!(waits.contains(says), "{says:?} in {waits}");
    }
    // Held earlier, the record now saying something else: the same two ways on.
    let earlier = held_earlier_message(&deleting());
    for says in [
        &format!(
            "the deletion budget held this deletion earlier, so connection {ID} was not deleted; it waits for a person"
        ),
        "kubectl annotate leenconn crowdstrike-prod -n security leen.dev/confirm-deletion=true",
        "kubectl patch leenconn crowdstrike-prod -n security --type merge -p '{\"spec\":{\"deletionPolicy\":\"Orphan\"}}' releases it without a call",
    ] {
        assert!(earlier.contains(says), "{says:?} in {earlier}");
    }
    let resumes = held_message(&deleting(), &budget(true), 5, frees_at());
    assert!(
        resumes.contains("it proceeds on its own when the budget frees at 2026-01-01T00:10:00Z"),
        "{resumes}"
    );
    // A retry of a DELETE already sent (and counted): no person needed, it waits for the
    // window.
    let retry = held_retry_message(&deleting(), &budget(false), 5, frees_at());
    for says in [
        "deletion budget spent: 5 DELETE calls to Leen started in the last 10m (LEEN_MAX_DELETIONS=5), retries included",
        &format!("so the DELETE of connection {ID} is not sent again yet; it was sent before"),
        "it is retried on its own when the budget frees at 2026-01-01T00:10:00Z",
    ] {
        assert!(retry.contains(says), "{says:?} in {retry}");
    }
}

/// Never a second POST while the first may still land: a create whose outcome is unknown
/// is proven absent only once LEEN_CREATE_SETTLE has passed after it; a deletion waits
/// for the same proof; the look-up goes where the create went.
#[test]
fn a_create_whose_outcome_is_unknown_settles_before_anything_is_concluded() {
    let settle = Duration::from_secs(60);
    let sync_inputs = |now: i64| SyncInputs {
        now: at(now),
        create_settle: settle,
        key: key(),
        credentials: Some(Ok(None)),
        lookup: Some(Lookup::Absent),
        ..Default::default()
    };
    let pending = pending_since(
        LeenConnection::to_create("CROWDSTRIKE"),
        "lost-1",
        "2026-01-01T00:00:00Z",
        None,
    );
    // Within the settle period: looked up again, no POST.
    match plan_sync(&pending, &sync_inputs(10)) {
        SyncPlan::Done(Observation::CreatePending { message, resume_at }) => {
            assert_eq!(resume_at, at(60));
            assert!(message.contains("\"lost-1\""), "{message}");
            assert!(message.contains("2026-01-01T00:01:00Z"), "{message}");
        }
        other => panic!("pending, not {other:?}"),
    }
    // At its end, absence is proof: POST.
    assert_eq!(plan_sync(&pending, &sync_inputs(60)), create("lost-1"));
    // A create Leen refused (no last attempt recorded) needs no wait.
    let refused = with_intent(LeenConnection::to_create("CROWDSTRIKE"), "lost-1");
    assert_eq!(plan_sync(&refused, &sync_inputs(10)), create("lost-1"));

    // The look-up goes to the region and organization recorded with the intent.
    let moved = pending_since(
        LeenConnection::to_create("CROWDSTRIKE"),
        "lost-1",
        "2026-01-01T00:00:00Z",
        Some((Region::Eu, OTHER_ORG)),
    );
    let there = FindLostCreate {
        region: Region::Eu,
        organization: Uuid::parse_str(OTHER_ORG).expect("org"),
        identifier: "lost-1".into(),
        intent: true,
    };
    let mut first_look = sync_inputs(10);
    first_look.lookup = None;
    assert_eq!(
        plan_sync(&moved, &first_look),
        SyncPlan::FindLostCreate(there.clone())
    );
    let found = Box::new(Connection {
        id: Some(ID.into()),
        ..Default::default()
    });
    let mut found_there = sync_inputs(10);
    found_there.lookup = Some(Lookup::Found(found.clone()));
    let SyncPlan::Bind { binding, .. } = plan_sync(&moved, &found_there) else {
        panic!("bound");
    };
    assert_eq!(
        (binding.region, binding.organization),
        (Region::Eu, there.organization)
    );

    // A deletion: within the settle period, kept; after it, NotCreated.
    let deleting_pending = pending_since(creating(), "lost-1", "2026-01-01T00:00:00Z", None);
    let deletion_inputs = |now: i64| DeletionInputs {
        now: at(now),
        create_settle: settle,
        key: key(),
        lookup: Some(Lookup::Absent),
        ..Default::default()
    };
    match plan_deletion(&deleting_pending, &deletion_inputs(59), None) {
        DeletionPlan::Done(DeletionStep::Observed(Observation::CreatePending {
            resume_at,
            message,
        })) => {
            assert_eq!(resume_at, at(60));
            assert!(message.contains("finalizer stays"), "{message}");
        }
        other => panic!("kept, not {other:?}"),
    }
    assert_eq!(
        plan_deletion(&deleting_pending, &deletion_inputs(60), None),
        done(DeletionStep::NotCreated {
            identifier: "lost-1".into()
        })
    );
    let mut look = deletion_inputs(10);
    look.lookup = None;
    let moved_deleting = pending_since(
        creating(),
        "lost-1",
        "2026-01-01T00:00:00Z",
        Some((Region::Eu, OTHER_ORG)),
    );
    assert_eq!(
        plan_deletion(&moved_deleting, &look, None),
        DeletionPlan::FindLostCreate(there)
    );
}

/// While a create is pending the resource is Reconciling, not Ready, and looks again with
/// backoff, never later than when absence becomes proof.
#[test]
fn a_pending_create_is_reconciling_and_looks_again_before_it_settles() {
    use leen_operator::decision::{DecisionInputs, RetryPolicy, decide_sync};
    let policy = RetryPolicy::default();
    let inputs = |failures: u32| DecisionInputs {
        sync_failures: failures,
        ..support::decisions::inputs(&policy)
    };
    let obs = |until: i64| Observation::CreatePending {
        message: "waiting".into(),
        resume_at: at(until),
    };
    let obj = LeenConnection::to_create("CROWDSTRIKE");
    let d = decide_sync(&obj, &obs(60), &inputs(0));
    let ready = d.status.ready().expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "CreatePending")
    );
    let reconciling = d.status.condition("Reconciling").expect("Reconciling");
    assert_eq!(reconciling.status, "True");
    assert_eq!(
        d.status.condition("Stalled").expect("Stalled").status,
        "False"
    );
    assert_eq!(
        d.requeue_after,
        Some(Duration::from_secs(2)),
        "the first backoff step"
    );
    assert_eq!(
        decide_sync(&obj, &obs(5), &inputs(5)).requeue_after,
        Some(Duration::from_secs(5)),
        "not later than the end of the settle period"
    );
    assert_eq!(
        decide_sync(&obj, &obs(0), &inputs(5)).requeue_after,
        Some(Duration::from_secs(1)),
        "at least a second"
    );
}

fn via_organization(mut obj: LeenConnection) -> LeenConnection {
    obj.spec.organization_ref = Some(OrganizationRef {
        kind: OrganizationKind::LeenOrganization,
        name: "acme".into(),
    });
    obj
}

/// spec.organizationRef is resolved before anything else is read, on both paths; what
/// stops the resolution is the decision, with no call; a deletion with nothing in Leen
/// releases without it, and one that names or holds a connection waits for it.
#[test]
fn an_organization_reference_is_resolved_first() {
    let missing = Observation::CredentialsMissing("LeenOrganization acme not found".into());
    let resolved = |mut inputs: SyncInputs| {
        inputs.organization_ref = Some(Ok(()));
        inputs
    };
    let sync = via_organization(live());
    assert_eq!(
        plan_sync(&sync, &SyncInputs::default()),
        SyncPlan::Read(Need::Organization),
        "the organization first"
    );
    let refused = SyncInputs {
        organization_ref: Some(Err(missing.clone())),
        ..Default::default()
    };
    assert_eq!(plan_sync(&sync, &refused), SyncPlan::Done(missing.clone()));
    assert_eq!(
        plan_sync(&sync, &resolved(SyncInputs::default())),
        SyncPlan::Read(Need::ApiKey),
        "then the key"
    );
    assert_eq!(
        plan_sync(&live(), &SyncInputs::default()),
        SyncPlan::Read(Need::ApiKey),
        "no reference, never asked"
    );
    let paused = {
        let mut obj = via_organization(live());
        obj.metadata.annotations = Some(BTreeMap::from([(
            "leen.dev/paused".to_string(),
            "true".to_string(),
        )]));
        obj
    };
    assert_eq!(
        plan_sync(&paused, &SyncInputs::default()),
        SyncPlan::Done(Observation::Paused),
        "paused: nothing read"
    );

    // Deleting: a connection named in the spec, or bound, waits for the organization.
    let mut adopted = via_organization(deleting());
    adopted.spec.organization_id = String::new();
    assert_eq!(
        plan_deletion(&adopted, &DeletionInputs::default(), None),
        DeletionPlan::Read(Need::Organization)
    );
    let bound = via_organization(deleting().bound());
    assert_eq!(
        plan_deletion(&bound, &DeletionInputs::default(), None),
        DeletionPlan::Read(Need::Organization)
    );
    let refused = DeletionInputs {
        organization_ref: Some(Err(missing.clone())),
        ..Default::default()
    };
    assert_eq!(
        plan_deletion(&bound, &refused, None),
        DeletionPlan::Done(DeletionStep::Observed(missing.clone())),
        "kept, with the reason"
    );
    let resolved = DeletionInputs {
        organization_ref: Some(Ok(())),
        ..Default::default()
    };
    assert_eq!(
        plan_deletion(&bound, &resolved, None),
        DeletionPlan::Read(Need::CacheFreshness),
        "then the usual deletion"
    );
    // Nothing named, bound or sent: nothing in Leen, no organization needed.
    let mut never = via_organization(creating());
    never.spec.organization_id = String::new();
    assert!(matches!(
        plan_deletion(&never, &DeletionInputs::default(), None),
        DeletionPlan::Done(DeletionStep::NotCreated { .. })
    ));
    // A create sent: its organization is needed to look for it.
    let sent = with_intent(never, "mine");
    assert_eq!(
        plan_deletion(&sent, &DeletionInputs::default(), None),
        DeletionPlan::Read(Need::Organization)
    );
    // Orphan needs nothing.
    assert_eq!(
        plan_deletion(
            &via_organization(deleting().orphan()),
            &DeletionInputs::default(),
            None
        ),
        DeletionPlan::Done(DeletionStep::Orphan)
    );
}
