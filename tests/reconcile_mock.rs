//! `reconcile` against a strict scripted Kubernetes API (controller-rs's
//! `ApiServerVerifier`): each test lists the requests it expects, in order, with the answer
//! to give; a missing or an extra request fails the test, and any write (the status, the
//! finalizer patch, the metadata patch) can be made to fail. Events, published in the
//! background, are collected beside the script. Leen is the fake Leen; time and jitter are
//! fixed, so requeue times are exact.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::Parser;
use fake_leen::{FakeLeen, Fault};
use http::{Request, Response, StatusCode};
use kube::{Client, client::Body, runtime::controller::Action};
use leen_operator::{
    config::Cli,
    controller::{Clock, Context, Error, error_policy, reconcile_object, requeue_after},
    decision::RetryPolicy,
    leen::{LeenClient, LeenClientConfig},
    resource::{FINALIZER, LeenConnection},
    telemetry::Metrics,
};
use serde_json::{Value, json};
use support::fixtures::Fixture;
use uuid::Uuid;

const OBJ: &str = "/apis/leen.dev/v1alpha1/namespaces/security/leenconnections/c";

/// Which write a step expects.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Write {
    /// `PATCH .../status`.
    Status,
    /// The finalizer removal: a JSON patch of the object.
    FinalizerRemoval,
    /// A merge patch of the object's metadata (finalizer, labels, annotation).
    Metadata,
}

/// How the mock answers a step.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// 200 with the object, the patch applied.
    Accept,
    /// This status code, with a Kubernetes `Status` body.
    Fail(u16),
}

/// One expected request.
#[derive(Clone, Copy, Debug)]
struct Step(Write, Answer);

/// The scripted API server: the steps still expected, what arrived, what went wrong.
#[derive(Default)]
struct Script {
    steps: Vec<Step>,
    /// The bodies of the requests that arrived (not Events), in order.
    seen: Vec<Value>,
    events: Vec<Value>,
    wrong: Vec<String>,
}

struct Verifier(Arc<Mutex<Script>>);

impl Verifier {
    /// Every expected request arrived, in order, and nothing else.
    fn assert_done(&self) -> Vec<Value> {
        let script = self.0.lock().expect("script");
        assert!(
            script.wrong.is_empty(),
            "unexpected requests: {:?}",
            script.wrong
        );
        assert!(
            script.steps.is_empty(),
            "expected requests that never came: {:?}",
            script.steps
        );
        script.seen.clone()
    }

    /// The Events, waiting (bounded) until `n` arrived; then no more than `n`.
    async fn events(&self, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.0.lock().expect("script").events.clone();
            if events.len() >= n || tokio::time::Instant::now() > deadline {
                assert_eq!(events.len(), n, "{events:?}");
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn classify(method: &str, path: &str, body: &Value) -> Option<Write> {
    match (method, path) {
        ("PATCH", p) if p == format!("{OBJ}/status") => Some(Write::Status),
        ("PATCH", OBJ) if body.is_array() => Some(Write::FinalizerRemoval),
        ("PATCH", OBJ) if body.get("metadata").is_some() => Some(Write::Metadata),
        _ => None,
    }
}

fn failure(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "scripted failure", "reason": "InternalError", "code": code})
}

/// A client whose API server answers exactly `steps`, in order.
fn verifier(obj: &LeenConnection, steps: Vec<Step>) -> (Client, Verifier) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let script = Arc::new(Mutex::new(Script {
        steps: steps.into_iter().rev().collect(),
        ..Default::default()
    }));
    let shared = script.clone();
    let object = serde_json::to_value(obj).expect("object");
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or_default().to_string();
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, answer) = {
                let mut s = shared.lock().expect("script");
                if path.contains("/events") {
                    s.events.push(body.clone());
                    (201, body)
                } else {
                    let write = classify(&method, &path, &body);
                    // Our own writes name their manager (kube's finalizer helper does not).
                    let ours = matches!(write, Some(Write::Status | Write::Metadata));
                    if ours && !query.contains("fieldManager=leen-operator") {
                        s.wrong.push(format!(
                            "{method} {path} without the field manager: {query}"
                        ));
                    }
                    s.seen.push(body.clone());
                    match (s.steps.pop(), write) {
                        (Some(Step(want, answer)), Some(got)) if want == got => match answer {
                            Answer::Accept => {
                                let mut patched = object.clone();
                                if body.is_object() {
                                    merge(&mut patched, &body);
                                }
                                (200, patched)
                            }
                            Answer::Fail(code) => (code, failure(code)),
                        },
                        (expected, _) => {
                            s.wrong.push(format!(
                                "{method} {path} ({write:?}) where {expected:?} was expected"
                            ));
                            if let Some(step) = expected {
                                s.steps.push(step);
                            }
                            (500, failure(500))
                        }
                    }
                }
            };
            let response = Response::builder()
                .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
                .unwrap_or_else(|_| Response::new(Body::empty()));
            send.send_response(response);
        }
    });
    (Client::new(service, "default"), Verifier(script))
}

/// RFC 7386 merge of `patch` into `target`.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

const JITTER: f64 = 1.0;

/// A context on the scripted client and the fake Leen, with a fixed clock and jitter.
fn context(client: Client, fake: &FakeLeen) -> Arc<Context> {
    leen_operator::install_crypto_provider();
    let metrics = Arc::new(Metrics::default());
    let leen = LeenClient::new(
        LeenClientConfig {
            endpoint: Some(fake.base_url().parse().expect("url")),
            ..Default::default()
        },
        metrics.clone(),
    )
    .expect("client");
    let settings = Cli::try_parse_from([
        "leen-operator",
        "--leen-api-key=mock-key",
        "--default-key-namespaces=*",
        "--max-deletions=0",
    ])
    .expect("flags")
    .run
    .settings()
    .expect("settings");
    let mut ctx = Context::new(client, Arc::new(leen), &settings, metrics);
    ctx.clock = Clock {
        now: || "2026-01-01T00:00:00Z".parse().expect("time"),
        jitter: || JITTER,
    };
    // The cache these reconciles read has listed, as the runtime's watcher would say.
    ctx.watches.connections.relist_done("");
    Arc::new(ctx)
}

/// A fake Leen that knows connection (org, id) and the key.
async fn leen_with_connection() -> (FakeLeen, Uuid, Uuid) {
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key("mock-key");
    let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
    fake.add_connection(org, id, "CrowdStrike");
    (fake, org, id)
}

/// The object under test: `security/c`, being deleted.
fn deleting(org: Uuid, id: Uuid) -> LeenConnection {
    LeenConnection::test()
        .named("security", "c")
        .ids(&org.to_string(), &id.to_string())
        .deleting()
}

/// The cache's view of the object, as the controller hands it to `error_policy`.
fn meta(obj: &LeenConnection) -> Arc<leen_operator::cache::CachedConnection> {
    Arc::new(leen_operator::cache::CachedConnection::of(obj))
}

#[tokio::test]
async fn delete_writes_status_then_removes_only_our_finalizer() {
    let (fake, org, id) = leen_with_connection().await;
    let obj = deleting(org, id);
    let steps = vec![
        Step(Write::Status, Answer::Accept),
        Step(Write::FinalizerRemoval, Answer::Accept),
    ];
    let (client, api) = verifier(&obj, steps);
    let action = reconcile_object(Arc::new(obj), context(client, &fake))
        .await
        .expect("reconciled");
    assert_eq!(action, Action::await_change());
    let seen = api.assert_done();
    let status = &seen[0]["status"];
    assert_eq!(status["state"], "DELETED");
    assert_eq!(status["health"]["description"], "Connection deleted");
    assert_eq!(status["conditions"][0]["reason"], "Deleted");
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(
        status["deletion"]["lastAttemptTime"],
        "2026-01-01T00:00:00Z"
    );
    // The finalizer patch tests that it removes ours, and only ours.
    let ops = seen[1].as_array().expect("JSON patch");
    assert_eq!(ops[0]["op"], "test");
    assert_eq!(ops[0]["value"], FINALIZER);
    assert_eq!(ops[1]["op"], "remove");
    let events = api.events(1).await;
    assert_eq!(events[0]["reason"], "Deleted");
    assert_eq!(events[0]["type"], "Normal");
    assert_eq!(fake.count("DELETE", id), 1);
    assert_eq!(fake.count("GET", id), 0, "no GET during deletion");
}

#[tokio::test]
async fn orphan_calls_nothing_and_needs_no_key() {
    let (fake, org, id) = leen_with_connection().await;
    fake.remove_api_key("mock-key");
    let obj = deleting(org, id).orphan();
    let steps = vec![
        Step(Write::Status, Answer::Accept),
        Step(Write::FinalizerRemoval, Answer::Accept),
    ];
    let (client, api) = verifier(&obj, steps);
    reconcile_object(Arc::new(obj), context(client, &fake))
        .await
        .expect("reconciled");
    let seen = api.assert_done();
    assert_eq!(seen[0]["status"]["conditions"][0]["reason"], "Orphaned");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    assert!(fake.has_connection(org, id));
}

#[tokio::test]
async fn leen_failure_keeps_the_finalizer_and_requeues_at_the_backoff() {
    let (fake, org, id) = leen_with_connection().await;
    fake.push_fault(Fault::status(id, 503));
    let obj = deleting(org, id);
    let (client, api) = verifier(&obj, vec![Step(Write::Status, Answer::Accept)]);
    let ctx = context(client, &fake);
    // Not finished is not an error: the decision asks for the requeue.
    let action = reconcile_object(Arc::new(obj.clone()), ctx.clone())
        .await
        .expect("deletion pending, requeued");
    let seen = api.assert_done();
    let status = &seen[0]["status"];
    assert_eq!(status["conditions"][0]["reason"], "LeenUnavailable");
    assert_eq!(status["deletion"]["attempts"], 1);
    assert_eq!(status["deletion"]["nextRetryTime"], "2026-01-01T00:00:02Z");
    assert_eq!(api.events(1).await[0]["type"], "Warning");
    // First transient failure, jitter 1: exactly the base delay.
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
}

#[tokio::test]
async fn retry_after_is_the_requeue() {
    let (fake, org, id) = leen_with_connection().await;
    fake.push_fault(Fault::status(id, 429).retry_after("7"));
    let obj = deleting(org, id);
    let (client, api) = verifier(&obj, vec![Step(Write::Status, Answer::Accept)]);
    let ctx = context(client, &fake);
    let action = reconcile_object(Arc::new(obj.clone()), ctx.clone())
        .await
        .expect("rate limited, requeued");
    api.assert_done();
    assert_eq!(action, Action::requeue(Duration::from_secs(7)));
}

#[tokio::test]
async fn refused_status_write_never_removes_the_finalizer() {
    let (fake, org, id) = leen_with_connection().await;
    let obj = deleting(org, id);
    // The first write and its three retries fail; a finalizer patch would be extra.
    let steps = vec![Step(Write::Status, Answer::Fail(500)); 4];
    let (client, api) = verifier(&obj, steps);
    reconcile_object(Arc::new(obj), context(client, &fake))
        .await
        .expect_err("status write failed");
    api.assert_done();
    assert_eq!(fake.count("DELETE", id), 1);
}

#[tokio::test]
async fn a_failed_finalizer_patch_is_retried_without_calling_leen_again() {
    let (fake, org, id) = leen_with_connection().await;
    let obj = deleting(org, id);
    let steps = vec![
        Step(Write::Status, Answer::Accept),
        Step(Write::FinalizerRemoval, Answer::Fail(500)),
    ];
    let (client, api) = verifier(&obj, steps);
    let ctx = context(client, &fake);
    let err = reconcile_object(Arc::new(obj.clone()), ctx.clone())
        .await
        .expect_err("finalizer patch failed");
    assert!(matches!(err, Error::FinalizerPatch(_)), "{err}");
    // A failed reconcile: the transient backoff, first failure, jitter 1: the base delay.
    assert_eq!(
        error_policy(meta(&obj), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );
    let seen = api.assert_done();
    // Next time the status says Deleted: only the finalizer is left to remove.
    let mut written = obj.clone();
    written.status = serde_json::from_value(seen[0]["status"].clone()).ok();
    let (client, api) = verifier(
        &written,
        vec![Step(Write::FinalizerRemoval, Answer::Accept)],
    );
    let ctx = context(client, &fake);
    reconcile_object(Arc::new(written), ctx)
        .await
        .expect("released");
    api.assert_done();
    assert_eq!(fake.count("DELETE", id), 1, "Leen was not called again");
}

#[tokio::test]
async fn a_conflict_on_the_status_write_is_retried_not_dropped() {
    let (fake, org, id) = leen_with_connection().await;
    let obj = deleting(org, id);
    let steps = vec![
        Step(Write::Status, Answer::Fail(409)),
        Step(Write::Status, Answer::Accept),
        Step(Write::FinalizerRemoval, Answer::Accept),
    ];
    let (client, api) = verifier(&obj, steps);
    reconcile_object(Arc::new(obj), context(client, &fake))
        .await
        .expect("reconciled after the retry");
    api.assert_done();
    assert_eq!(fake.count("DELETE", id), 1, "Leen is not called again");
}

#[tokio::test]
async fn a_new_resource_gets_finalizer_and_labels_before_any_call() {
    let (fake, org, id) = leen_with_connection().await;
    let mut obj = LeenConnection::test()
        .named("security", "c")
        .ids(&org.to_string(), &id.to_string());
    obj.metadata.finalizers = None;
    let (client, api) = verifier(&obj, vec![Step(Write::Metadata, Answer::Accept)]);
    let action = reconcile_object(Arc::new(obj), context(client, &fake))
        .await
        .expect("reconciled");
    // The finalizer's arrival brings the object back: Leen is read then, once.
    assert_eq!(action, Action::await_change());
    let seen = api.assert_done();
    let meta = &seen[0]["metadata"];
    assert_eq!(meta["finalizers"], json!([FINALIZER]));
    assert_eq!(meta["resourceVersion"], "10");
    assert_eq!(meta["labels"]["leen.dev/connection-id"], id.to_string());
    assert_eq!(meta["labels"]["leen.dev/organization-id"], org.to_string());
    assert_eq!(meta["labels"]["leen.dev/region"], "us");
    assert!(
        fake.requests().is_empty(),
        "no Leen call before the finalizer"
    );
}

#[tokio::test]
async fn a_failed_metadata_patch_calls_nothing() {
    let (fake, org, id) = leen_with_connection().await;
    let mut obj = LeenConnection::test()
        .named("security", "c")
        .ids(&org.to_string(), &id.to_string());
    obj.metadata.finalizers = None;
    let (client, api) = verifier(&obj, vec![Step(Write::Metadata, Answer::Fail(500))]);
    reconcile_object(Arc::new(obj), context(client, &fake))
        .await
        .expect_err("metadata patch failed");
    api.assert_done();
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_live_read_requeues_at_the_sync_interval() {
    let (fake, org, id) = leen_with_connection().await;
    let obj = LeenConnection::test()
        .named("security", "c")
        .ids(&org.to_string(), &id.to_string());
    // The labels first (the fixture has none), then the status of the read.
    let steps = vec![
        Step(Write::Metadata, Answer::Accept),
        Step(Write::Status, Answer::Accept),
    ];
    let (client, api) = verifier(&obj, steps);
    let action = reconcile_object(Arc::new(obj), context(client, &fake))
        .await
        .expect("reconciled");
    // Sync interval 5 min, spread by 0.9 + 0.2 x jitter: with jitter 1, 330 s exactly.
    assert_eq!(action, Action::requeue(Duration::from_secs(330)));
    let seen = api.assert_done();
    assert_eq!(seen[1]["status"]["conditions"][0]["reason"], "Synced");
    assert_eq!(fake.count("GET", id), 1);
    assert_eq!(fake.count("DELETE", id), 0);
}

#[test]
fn requeue_after_a_failed_reconcile_is_the_transient_backoff() {
    let policy = RetryPolicy::default();
    // Backoff: attempt 1 is the base, each further attempt doubles it, capped; jitter
    // draws from [d/2, d].
    for (attempt, jitter, secs) in [
        (1, 1.0, 2.0),
        (1, 0.0, 1.0),
        (2, 1.0, 4.0),
        (3, 0.5, 6.0),
        (20, 1.0, 300.0),
    ] {
        assert_eq!(
            requeue_after(attempt, jitter, &policy),
            Duration::from_secs_f64(secs),
            "attempt {attempt}, jitter {jitter}"
        );
    }
}

/// A deletion whose create may have gone out (an intent, no connection bound) and that
/// Leen lists nothing for: `min_ago` minutes after the last POST, against the default
/// LEEN_CREATE_SETTLE of 2 minutes and the fixed clock.
fn lost_create(min_ago: i64) -> LeenConnection {
    lost_create_live(min_ago).deleting()
}

/// [`lost_create`], not being deleted.
fn lost_create_live(min_ago: i64) -> LeenConnection {
    let mut obj = LeenConnection::to_create("CROWDSTRIKE").named("security", "c");
    let at = "2026-01-01T00:00:00Z"
        .parse::<chrono::DateTime<chrono::Utc>>()
        .expect("time")
        - chrono::Duration::minutes(min_ago);
    obj.status.get_or_insert_with(Default::default).creation =
        Some(leen_operator::resource::CreationRecord {
            identifier: "security/c/lost".into(),
            attempts: 1,
            last_attempt_time: Some(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            ..Default::default()
        });
    obj
}

/// Past the settle period, Leen's empty list is proof: `NotCreated`, the finalizer goes.
/// (Decided with the reconcile's clock: a plan that saw another time would wait.)
#[tokio::test]
async fn a_lost_create_long_settled_is_not_created() {
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key("mock-key");
    let obj = lost_create(5);
    let steps = vec![
        Step(Write::Status, Answer::Accept),
        Step(Write::FinalizerRemoval, Answer::Accept),
    ];
    let (client, api) = verifier(&obj, steps);
    reconcile_object(Arc::new(obj), context(client, &fake))
        .await
        .expect("reconciled");
    let seen = api.assert_done();
    assert_eq!(seen[0]["status"]["conditions"][0]["reason"], "NotCreated");
    assert_eq!(fake.count_operation("list"), 1, "{:?}", fake.requests());
}

/// Within the settle period the same empty list proves nothing: `CreatePending`, the
/// finalizer stays, and the requeue is no later than when absence becomes proof.
#[tokio::test]
async fn a_lost_create_within_the_settle_period_waits() {
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key("mock-key");
    let obj = lost_create(1);
    let (client, api) = verifier(&obj, vec![Step(Write::Status, Answer::Accept)]);
    let action = reconcile_object(Arc::new(obj), context(client, &fake))
        .await
        .expect("reconciled");
    let seen = api.assert_done();
    assert_eq!(
        seen[0]["status"]["conditions"][0]["reason"],
        "CreatePending"
    );
    assert!(
        action != Action::await_change(),
        "requeued until the settle period ends"
    );
}

/// Not being deleted, the same lost create long settled is retried: one create goes out,
/// under the recorded identifier, decided with the reconcile's clock and settle period.
#[tokio::test]
async fn a_live_lost_create_long_settled_is_created_again() {
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key("mock-key");
    // No credentials: Leen refuses the create (422), which is enough here; that it went out
    // at all is the decision under test.
    let obj = lost_create_live(5);
    let steps = vec![
        Step(Write::Status, Answer::Accept),
        Step(Write::Status, Answer::Accept),
        Step(Write::Status, Answer::Accept),
    ];
    let (client, api) = verifier(&obj, steps);
    reconcile_object(Arc::new(obj), context(client, &fake))
        .await
        .expect("reconciled");
    let seen = api.assert_done();
    assert_eq!(fake.count_operation("list"), 1, "{:?}", fake.requests());
    assert_eq!(fake.count_operation("create"), 1, "{:?}", fake.requests());
    assert_eq!(seen[0]["status"]["creation"]["attempts"], 2, "{seen:?}");
    assert_eq!(seen[2]["status"]["conditions"][0]["reason"], "Rejected");
}

/// Within the settle period a live lost create waits too: `CreatePending`, no second
/// create while the first may still land.
#[tokio::test]
async fn a_live_lost_create_within_the_settle_period_is_not_created_again() {
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key("mock-key");
    let obj = lost_create_live(1);
    let (client, api) = verifier(&obj, vec![Step(Write::Status, Answer::Accept)]);
    let action = reconcile_object(Arc::new(obj), context(client, &fake))
        .await
        .expect("reconciled");
    let seen = api.assert_done();
    assert_eq!(
        seen[0]["status"]["conditions"][0]["reason"],
        "CreatePending"
    );
    assert_eq!(fake.count_operation("create"), 0, "{:?}", fake.requests());
    assert!(action != Action::await_change(), "requeued to look again");
}

/// A DELETE whose status write failed is remembered by the process: the next attempt's
/// record says that a DELETE went out (the budget counts it as a retry), even when that
/// attempt ends before any call because the cache is behind.
#[tokio::test]
async fn a_delete_sent_before_a_failed_status_write_is_remembered() {
    let (fake, org, id) = leen_with_connection().await;
    let obj = deleting(org, id).bound();
    // The status write before the finalizer goes is tried four times.
    let mut steps = vec![Step(Write::Status, Answer::Fail(500)); 4];
    steps.push(Step(Write::Status, Answer::Accept));
    let (client, api) = verifier(&obj, steps);
    let ctx = context(client, &fake);
    reconcile_object(Arc::new(obj.clone()), ctx.clone())
        .await
        .expect_err("the status write failed");
    assert_eq!(fake.count("DELETE", id), 1);
    // The cache relists: nothing is decided, no call; the record still says "sent".
    ctx.watches.connections.relist_started("");
    reconcile_object(Arc::new(obj), ctx)
        .await
        .expect("reconciled");
    let seen = api.assert_done();
    assert_eq!(seen[4]["status"]["conditions"][0]["reason"], "CacheStale");
    assert_eq!(
        seen[4]["status"]["deletion"]["deleteSent"], true,
        "{seen:?}"
    );
    assert_eq!(fake.count("DELETE", id), 1, "not sent again");
}
