//! `reconcile` against a mocked Kubernetes API (tower-test) and the fake Leen: the exact
//! requests, in order. The mock answers each request and records it; the test then
//! checks that the status write comes before the finalizer removal, and that no
//! finalizer is removed when Leen fails or the status write is refused.

use std::{sync::Arc, time::Duration};

use http::{Request, Response, StatusCode};
use kube::{Client, client::Body};
#[path = "support/fixtures.rs"]
mod fixtures;

use clap::Parser;
use fake_leen::{FakeLeen, Fault};
use fixtures::Fixture;
use leen_operator::{
    config::Cli,
    controller::{Context, reconcile_object},
    leen::{LeenClient, LeenClientConfig},
    resource::{FINALIZER, LeenConnection},
    telemetry::Metrics,
};
use tokio::sync::mpsc;
use uuid::Uuid;

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: serde_json::Value,
}

/// How the mock answers a status write.
#[derive(Clone, Copy)]
enum StatusWrites {
    Accept,
    Refuse,
    ConflictOnce,
}

fn mock(
    obj: LeenConnection,
    status_writes: StatusWrites,
) -> (Client, mpsc::UnboundedReceiver<Seen>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut conflicted = false;
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            let _ = tx.send(Seen {
                method: method.clone(),
                path: path.clone(),
                body: body.clone(),
            });
            let (code, answer) = if path.ends_with("/status") {
                match status_writes {
                    StatusWrites::Accept => (
                        StatusCode::OK,
                        serde_json::to_value(&obj).unwrap_or_default(),
                    ),
                    StatusWrites::ConflictOnce if !conflicted => {
                        conflicted = true;
                        (
                            StatusCode::CONFLICT,
                            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "the object has been modified", "reason": "Conflict", "code": 409}),
                        )
                    }
                    StatusWrites::ConflictOnce => (
                        StatusCode::OK,
                        serde_json::to_value(&obj).unwrap_or_default(),
                    ),
                    StatusWrites::Refuse => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd down", "reason": "InternalError", "code": 500}),
                    ),
                }
            } else if path.contains("/events") {
                (StatusCode::CREATED, body)
            } else if method == "PATCH" && body.is_object() {
                // A merge patch of the object: answer with the patched object, as the API
                // server does.
                let mut patched = serde_json::to_value(&obj).unwrap_or_default();
                merge(&mut patched, &body);
                (StatusCode::OK, patched)
            } else {
                (
                    StatusCode::OK,
                    serde_json::to_value(&obj).unwrap_or_default(),
                )
            };
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
                .unwrap_or_else(|_| Response::new(Body::empty()));
            send.send_response(response);
        }
    });
    (Client::new(service, "default"), rx)
}

/// RFC 7386 merge of `patch` into `target`.
fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

async fn context(client: Client, fake: &FakeLeen) -> Arc<Context> {
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
    Arc::new(Context::new(client, leen, &settings, metrics))
}

/// The object under test: `security/c`, being deleted.
fn deleting(org: Uuid, id: Uuid) -> LeenConnection {
    LeenConnection::test()
        .named("security", "c")
        .ids(&org.to_string(), &id.to_string())
        .deleting()
}

/// The first `n` requests (Events are published in the background, so wait for them),
/// then whatever else already arrived.
async fn collect(rx: &mut mpsc::UnboundedReceiver<Seen>, n: usize) -> Vec<Seen> {
    let mut seen = Vec::new();
    while seen.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(s)) => seen.push(s),
            _ => break,
        }
    }
    // Give a stray extra request the chance to show up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    seen.extend(drain(rx));
    seen
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
    let mut seen = Vec::new();
    while let Ok(s) = rx.try_recv() {
        seen.push(s);
    }
    seen
}

const OBJ: &str = "/apis/leen.dev/v1alpha1/namespaces/security/leenconnections/c";

#[tokio::test]
async fn delete_writes_status_before_removing_finalizer() {
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key("mock-key");
    let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
    fake.add_connection(org, id, "CrowdStrike");
    let obj = deleting(org, id);
    let (client, mut rx) = mock(obj.clone(), StatusWrites::Accept);
    let ctx = context(client, &fake).await;

    reconcile_object(Arc::new(obj), ctx)
        .await
        .expect("reconcile succeeds");
    let seen = collect(&mut rx, 3).await;
    let (events, writes): (Vec<&Seen>, Vec<&Seen>) =
        seen.iter().partition(|s| s.path.contains("/events"));
    let summary: Vec<(&str, &str)> = writes
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![("PATCH", format!("{OBJ}/status").as_str()), ("PATCH", OBJ)],
        "the status write, then the finalizer removal, nothing else"
    );
    let status = &writes[0].body["status"];
    assert_eq!(status["state"], "DELETED");
    assert_eq!(status["health"]["description"], "Connection deleted");
    assert_eq!(status["conditions"][0]["reason"], "Deleted");
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(
        status["observedGeneration"], 3,
        "the generation of the object read"
    );
    // The finalizer patch tests that it removes ours, and only ours.
    let ops = writes[1].body.as_array().expect("JSON patch");
    assert_eq!(ops[0]["op"], "test");
    assert_eq!(ops[0]["value"], FINALIZER);
    assert_eq!(ops[1]["op"], "remove");
    assert_eq!(events.len(), 1, "one Event");
    assert_eq!(events[0].method, "POST");
    assert_eq!(events[0].body["reason"], "Deleted");
    assert_eq!(events[0].body["type"], "Normal");
    assert_eq!(fake.count("DELETE", id), 1);
    assert_eq!(fake.count("GET", id), 0, "no GET during deletion");
}

#[tokio::test]
async fn leen_failure_keeps_the_finalizer() {
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key("mock-key");
    let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
    fake.add_connection(org, id, "CrowdStrike");
    fake.push_fault(Fault::status(id, 503));
    let obj = deleting(org, id);
    let (client, mut rx) = mock(obj.clone(), StatusWrites::Accept);
    let ctx = context(client, &fake).await;

    let err = reconcile_object(Arc::new(obj), ctx)
        .await
        .expect_err("deletion pending");
    assert!(err.to_string().contains("LeenUnavailable"), "{err}");
    let seen = collect(&mut rx, 2).await;
    let mut paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    paths.sort();
    let status_path = format!("{OBJ}/status");
    assert_eq!(
        paths,
        vec![
            "/apis/events.k8s.io/v1/namespaces/security/events",
            status_path.as_str()
        ],
        "status and Event, no finalizer patch"
    );
    let status = seen
        .iter()
        .find(|s| s.path.ends_with("/status"))
        .expect("status");
    let event = seen
        .iter()
        .find(|s| s.path.contains("/events"))
        .expect("event");
    assert_eq!(
        status.body["status"]["conditions"][0]["reason"],
        "LeenUnavailable"
    );
    assert_eq!(status.body["status"]["deletion"]["attempts"], 1);
    assert_eq!(event.body["type"], "Warning");
}

#[tokio::test]
async fn refused_status_write_keeps_the_finalizer() {
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key("mock-key");
    let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
    fake.add_connection(org, id, "CrowdStrike");
    let obj = deleting(org, id);
    let (client, mut rx) = mock(obj.clone(), StatusWrites::Refuse);
    let ctx = context(client, &fake).await;

    reconcile_object(Arc::new(obj), ctx)
        .await
        .expect_err("status write failed");
    let seen = drain(&mut rx);
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|s| s.path.ends_with("/status")),
        "only (retried) status writes, never the finalizer: {seen:?}"
    );
    assert_eq!(fake.count("DELETE", id), 1);
}

#[tokio::test]
async fn live_resource_without_finalizer_gets_it_first() {
    let fake = FakeLeen::start().await.expect("fake");
    let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
    let obj: LeenConnection = serde_json::from_value(serde_json::json!({
        "apiVersion": "leen.dev/v1alpha1", "kind": "LeenConnection",
        "metadata": {"name": "c", "namespace": "security", "uid": "u-2", "generation": 1},
        "spec": {"organizationId": org.to_string(), "connectionId": id.to_string()}
    }))
    .expect("object");
    let (client, mut rx) = mock(obj.clone(), StatusWrites::Accept);
    let ctx = context(client, &fake).await;
    reconcile_object(Arc::new(obj), ctx)
        .await
        .expect("reconciled");
    let seen = drain(&mut rx);
    // One metadata write puts the finalizer and the binding labels in place; Leen is read
    // on the reconciliation that the finalizer's arrival triggers.
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("PATCH", OBJ)
    );
    let meta = &seen[0].body["metadata"];
    assert_eq!(meta["finalizers"], serde_json::json!([FINALIZER]));
    assert_eq!(meta["labels"]["leen.dev/connection-id"], id.to_string());
    assert_eq!(meta["labels"]["leen.dev/organization-id"], org.to_string());
    assert_eq!(meta["labels"]["leen.dev/region"], "us");
    assert!(
        fake.requests().is_empty(),
        "no Leen call before the finalizer is in place"
    );
}

#[tokio::test]
async fn conflict_on_status_write_is_retried_not_dropped() {
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key("mock-key");
    let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
    fake.add_connection(org, id, "CrowdStrike");
    let obj = deleting(org, id);
    let (client, mut rx) = mock(obj.clone(), StatusWrites::ConflictOnce);
    let ctx = context(client, &fake).await;

    reconcile_object(Arc::new(obj), ctx)
        .await
        .expect("reconcile succeeds after the retry");
    let seen = collect(&mut rx, 4).await;
    let writes: Vec<&str> = seen
        .iter()
        .filter(|s| !s.path.contains("/events"))
        .map(|s| s.path.as_str())
        .collect();
    let status_path = format!("{OBJ}/status");
    assert_eq!(
        writes,
        vec![status_path.as_str(), status_path.as_str(), OBJ],
        "409, status again, then the finalizer"
    );
    assert_eq!(fake.count("DELETE", id), 1, "Leen is not called again");
}
