//! The operator binary against a real kube-apiserver + etcd and the fake Leen: the main
//! job (create, mirror, delete) and every row of the deletion table.

mod support;

use std::time::Duration;

use fake_leen::{FakeLeen, Fault, FaultBody};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use leen_operator::resource::LeenConnection;
use support::*;
use uuid::Uuid;

fn deleting(o: &LeenConnection) -> bool {
    o.metadata.deletion_timestamp.is_some()
}

fn reason_is(reason: &'static str) -> impl Fn(&LeenConnection) -> bool {
    move |o| ready_reason(o).as_deref() == Some(reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_create_mirror_delete() {
    let e = scenario("security", &[]).await;
    let (org, id) = e.seeded();
    e.create(connection("crowdstrike-prod", org, id)).await;

    let obj = wait_for(&e.api, "crowdstrike-prod", "Ready=True", is_ready).await;
    assert!(has_finalizer(&obj), "finalizer added");
    let status = obj.status.clone().expect("status");
    assert_eq!(status.state.as_deref(), Some("ACTIVE"));
    assert_eq!(status.vendor.as_deref(), Some("CrowdStrike"));
    assert_eq!(
        status.health.as_ref().and_then(|h| h.status.as_deref()),
        Some("HEALTHY")
    );
    assert_eq!(status.observed_generation, obj.metadata.generation);
    assert_eq!(
        status.ready().and_then(|c| c.observed_generation),
        obj.metadata.generation
    );
    let table = e.cp.kubectl(&["get", "leenconn", "-n", "security"]);
    assert!(
        table.contains("STATE") && table.contains("HEALTH") && table.contains("READY"),
        "{table}"
    );
    assert!(
        table.contains("ACTIVE") && table.contains("True"),
        "{table}"
    );

    let versions = record_versions(e.api.clone(), "crowdstrike-prod");
    e.cp.kubectl(&["delete", "leenconn", "crowdstrike-prod", "-n", "security"]);
    wait_gone(&e.api, "crowdstrike-prod").await;
    let versions = versions.await.expect("watch task");

    let recorded = versions
        .iter()
        .find(|o| deleting(o) && has_finalizer(o) && reason_is("Deleted")(o))
        .unwrap_or_else(|| {
            panic!("no version with Deleted status and the finalizer: {versions:#?}")
        });
    let status = recorded.status.as_ref().expect("status");
    assert_eq!(status.state.as_deref(), Some("DELETED"));
    assert_eq!(
        status
            .health
            .as_ref()
            .and_then(|h| h.description.as_deref()),
        Some("Connection deleted")
    );
    assert_eq!(
        status.deletion.as_ref().and_then(|d| d.last_http_status),
        Some(200)
    );
    assert_eq!(e.fake.count("DELETE", id), 1, "exactly one DELETE");
    assert!(!e.fake.has_connection(org, id));
    assert!(!e.events("Deleted").await.is_empty(), "a Deleted Event");
    assert_eq!(
        e.op.metric("leen_operator_deletions_total", &["reason=\"Deleted\""])
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_policy_calls_nothing_and_needs_no_credentials() {
    // No default key: Orphan must not need one.
    let cp = ControlPlane::start().await;
    let fake = FakeLeen::start().await.expect("fake");
    cp.namespace("orphans").await;
    let endpoint = fake.base_url();
    let _op = Operator::start(&cp, &[("LEEN_ENDPOINT", endpoint.as_str())]).await;
    let api: Api<LeenConnection> = Api::namespaced(cp.client().await, "orphans");
    let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
    fake.add_connection(org, id, "Snyk");
    let mut obj = connection("keep-me", org, id);
    obj.spec.deletion_policy = leen_operator::resource::DeletionPolicy::Orphan;
    api.create(&PostParams::default(), &obj)
        .await
        .expect("created");
    wait_for(
        &api,
        "keep-me",
        "CredentialsMissing",
        reason_is("CredentialsMissing"),
    )
    .await;

    let versions = record_versions(api.clone(), "keep-me");
    delete(&api, "keep-me").await;
    wait_gone(&api, "keep-me").await;
    let versions = versions.await.expect("watch");
    assert!(
        versions
            .iter()
            .any(|o| has_finalizer(o) && reason_is("Orphaned")(o)),
        "Orphaned written before the finalizer went: {versions:#?}"
    );
    assert_eq!(fake.count("DELETE", id), 0);
    assert!(fake.has_connection(org, id), "connection left in Leen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_on_delete_is_already_deleted() {
    let e = scenario("gone", &[]).await;
    let (_, id) = e.ready_connection("c").await;
    e.fake.push_fault(Fault::status(id, 404).method("DELETE"));
    delete(&e.api, "c").await;
    wait_gone(&e.api, "c").await;
    assert_eq!(e.fake.count("DELETE", id), 1);
    assert!(!e.events("AlreadyDeleted").await.is_empty());
}

/// A failing DELETE keeps the finalizer with `reason`; after the fault clears, the
/// deletion completes.
async fn kept_then_released(ns: &'static str, fault: impl Fn(Uuid) -> Fault, reason: &'static str) {
    kept_then_released_after(ns, fault, reason, None).await;
}

/// As [`kept_then_released`]; `retry_secs`: the exact wait the record must plan.
async fn kept_then_released_after(
    ns: &'static str,
    fault: impl Fn(Uuid) -> Fault,
    reason: &'static str,
    retry_secs: Option<i64>,
) {
    let e = scenario(ns, &[]).await;
    let (org, id) = e.ready_connection("c").await;
    e.fake.push_fault(fault(id));
    delete(&e.api, "c").await;
    let obj = wait_for(&e.api, "c", reason, reason_is(reason)).await;
    assert!(has_finalizer(&obj), "finalizer kept on {reason}");
    let record = obj
        .status
        .and_then(|s| s.deletion)
        .expect("deletion record");
    assert_eq!(record.attempts, 1, "{record:?}");
    let time = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .expect("a time")
    };
    let planned = time(&record.next_retry_time) - time(&record.last_attempt_time);
    if let Some(secs) = retry_secs {
        assert_eq!(planned.num_seconds(), secs, "{record:?}");
    }
    assert!(!e.events(reason).await.is_empty(), "{reason} Event");
    // The fault was for one request: the retry deletes it.
    wait_gone(&e.api, "c").await;
    assert!(!e.fake.has_connection(org, id));
    assert_eq!(e.fake.count("DELETE", id), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_keeps_finalizer_then_retries() {
    kept_then_released(
        "flaky",
        |id| Fault::status(id, 503).method("DELETE"),
        "LeenUnavailable",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_honours_retry_after() {
    // 4 s: longer than the 1-2 s a 429 without Retry-After waits, so only honouring the
    // header plans exactly this.
    kept_then_released_after(
        "limited",
        |id| Fault::status(id, 429).method("DELETE").retry_after("4"),
        "RateLimited",
        Some(4),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_body_keeps_finalizer() {
    kept_then_released(
        "garbled",
        |id| {
            Fault::status(id, 200)
                .method("DELETE")
                .body(FaultBody::Raw("{not json".into()))
        },
        "InvalidResponse",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_keeps_finalizer_until_orphaned() {
    let e = scenario("rejected", &[]).await;
    let (org, id) = e.ready_connection("c").await;
    e.fake.push_fault(
        Fault::status(id, 422)
            .method("DELETE")
            .times(100)
            .body(FaultBody::Json(serde_json::json!({"detail": [{"loc": ["path", "connection_id"], "msg": "connection is locked", "type": "value_error"}]}))),
    );
    delete(&e.api, "c").await;
    let obj = wait_for(&e.api, "c", "Rejected", reason_is("Rejected")).await;
    let message = ready_message(&obj);
    assert!(message.contains("connection is locked"), "{message}");
    assert!(has_finalizer(&obj));
    // The documented way out: Orphan.
    e.set_policy("c", "Orphan").await;
    wait_gone(&e.api, "c").await;
    assert!(e.fake.has_connection(org, id), "orphaned, not deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_unblocks_unauthorized_deletion() {
    let e = scenario("rotate", &[]).await;
    let (org, id) = e.create_with_secret("c", "leen-key", "old-key").await;
    wait_for(&e.api, "c", "Ready=True", is_ready).await;
    assert!(
        e.fake
            .requests()
            .iter()
            .all(|r| r.api_key.as_deref() == Some("old-key")),
        "the Secret's key is sent, not the default"
    );

    e.fake.remove_api_key("old-key");
    delete(&e.api, "c").await;
    let obj = wait_for(&e.api, "c", "an Unauthorized deletion", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.deletion.as_ref())
            .is_some_and(|d| d.outcome.as_deref() == Some("Unauthorized"))
    })
    .await;
    assert!(has_finalizer(&obj));
    let record = obj.status.and_then(|s| s.deletion).expect("record");
    let attempts = record.attempts;
    // Unauthorized retries wait 15-30 s; the rotation must not wait for that.
    let next_retry: chrono::DateTime<chrono::Utc> = record
        .next_retry_time
        .as_deref()
        .and_then(|t| t.parse().ok())
        .expect("next retry time");

    e.fake.add_api_key("new-key");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(e.client.clone(), "rotate");
    secrets
        .patch(
            "leen-key",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"apiKey": "new-key"}})),
        )
        .await
        .expect("secret rotated");
    wait_gone(&e.api, "c").await;
    assert!(!e.fake.has_connection(org, id));
    let deletes: Vec<_> = e
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(
        deletes.last().and_then(|r| r.api_key.as_deref()),
        Some("new-key")
    );
    // Done before the retry the backoff planned: the Secret's change woke it.
    assert!(
        chrono::Utc::now() < next_retry,
        "finished only at the planned retry {next_retry}"
    );
    assert_eq!(deletes.len() as u32, attempts + 1, "{deletes:?}");
    assert!(!e.op.log_text().contains("new-key") && !e.op.log_text().contains("old-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_missing_secret_unblocks_deletion() {
    let e = scenario("creds", &[]).await;
    e.fake.add_api_key("tenant-key");
    let (org, id) = e.seeded();
    let mut obj = connection("c", org, id);
    obj.spec.api_key_secret_ref =
        serde_json::from_value(serde_json::json!({"name": "tenant", "key": "token"})).ok();
    e.create(obj).await;
    wait_for(
        &e.api,
        "c",
        "CredentialsMissing",
        reason_is("CredentialsMissing"),
    )
    .await;
    delete(&e.api, "c").await;
    let obj = wait_for(&e.api, "c", "deletion attempt", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.deletion.as_ref())
            .is_some()
    })
    .await;
    assert_eq!(ready_reason(&obj).as_deref(), Some("CredentialsMissing"));
    assert!(has_finalizer(&obj));
    assert_eq!(e.fake.count("DELETE", id), 0, "no call without a key");
    secret(&e.client, "creds", "tenant", "token", "tenant-key").await;
    wait_gone(&e.api, "c").await;
    assert!(!e.fake.has_connection(org, id));
    assert_eq!(e.fake.count("DELETE", id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_rejects_bad_ids_and_regions() {
    let cp = ControlPlane::start().await;
    cp.namespace("schema").await;
    // Raw objects: the point is what the API server accepts, not what our types can hold.
    let api: Api<DynamicObject> = Api::namespaced_with(
        cp.client().await,
        "schema",
        &ApiResource::erase::<LeenConnection>(&()),
    );
    let id = Uuid::new_v4().to_string();
    for spec in [
        serde_json::json!({"organizationId": "not-a-uuid", "connectionId": id}),
        serde_json::json!({"organizationId": id, "connectionId": "1234"}),
        serde_json::json!({"organizationId": id, "connectionId": id, "region": "mars"}),
        serde_json::json!({"organizationId": id, "connectionId": id, "deletionPolicy": "Later"}),
        // Neither an existing connection to adopt nor a vendor to create one.
        serde_json::json!({"organizationId": id}),
        serde_json::json!({"organizationId": id, "vendor": "crowdstrike"}),
        serde_json::json!({"organizationId": id, "vendor": "QUALYS", "state": "Sleeping"}),
        serde_json::json!({"organizationId": id, "vendor": "QUALYS", "credentialsSecretRef": {"name": "Not_A_Name"}}),
        // No organization at all, or a reference of an unknown kind.
        serde_json::json!({"connectionId": id}),
        serde_json::json!({"organizationRef": {"kind": "Organization", "name": "acme"}, "connectionId": id}),
    ] {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "leen.dev/v1alpha1", "kind": "LeenConnection",
            "metadata": {"name": "bad"}, "spec": spec,
        }))
        .expect("object");
        let err = api
            .create(&PostParams::default(), &obj)
            .await
            .expect_err("rejected");
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 422),
            "{spec}: {err}"
        );
    }
    // And a valid one is accepted, with the defaults filled in.
    let ok: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "leen.dev/v1alpha1", "kind": "LeenConnection",
        "metadata": {"name": "good"}, "spec": {"organizationId": id, "connectionId": id},
    }))
    .expect("object");
    let created = api
        .create(&PostParams::default(), &ok)
        .await
        .expect("valid accepted");
    // No region written: unset means us (or, with organizationRef, the organization's).
    assert!(created.data["spec"].get("region").is_none());
    assert_eq!(created.data["spec"]["deletionPolicy"], "Delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_connection_id_is_refused_and_never_deleted() {
    let e = scenario("immutable", &[]).await;
    let (org, id) = e.ready_connection("c").await;
    let (other_org, other) = e.seeded();
    let patched = e
        .api
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"connectionId": other.to_string()}})),
        )
        .await;
    match (cel_enforced(&e.client).await, patched) {
        // A server enforcing CEL refuses the change itself.
        (true, Err(kube::Error::Api(s))) => assert_eq!(s.code, 422),
        (true, other) => panic!("a CEL server must refuse the change: {other:?}"),
        (false, Err(other)) => panic!("a server without CEL accepts it: {other}"),
        // Before 1.25 the server does not: the controller refuses to act on the new id.
        (false, Ok(_)) => {
            let obj = wait_for(
                &e.api,
                "c",
                "ImmutableFieldChanged",
                reason_is("ImmutableFieldChanged"),
            )
            .await;
            assert!(!is_ready(&obj));
            delete(&e.api, "c").await;
            let obj = wait_for(&e.api, "c", "deletion refused", |o| {
                deleting(o)
                    && o.status
                        .as_ref()
                        .and_then(|s| s.deletion.as_ref())
                        .is_some()
            })
            .await;
            assert!(has_finalizer(&obj));
            assert_eq!(
                e.fake.count("DELETE", other),
                0,
                "never deletes the other connection"
            );
            assert_eq!(e.fake.count("DELETE", id), 0);
            e.set_policy("c", "Orphan").await;
            wait_gone(&e.api, "c").await;
            assert!(e.fake.has_connection(org, id) && e.fake.has_connection(other_org, other));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_all_deletes_every_connection() {
    let e = scenario("bulk", &[]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (org, id) = e.seeded();
        e.create(connection(&format!("c{i}"), org, id)).await;
        ids.push((org, id));
    }
    for i in 0..5 {
        wait_for(&e.api, &format!("c{i}"), "Ready", is_ready).await;
    }
    e.cp.kubectl(&[
        "delete",
        "leenconn",
        "--all",
        "-n",
        "bulk",
        "--wait=true",
        "--timeout=60s",
    ]);
    let left = e
        .api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    assert!(left.is_empty(), "{left:?}");
    for (org, id) in ids {
        assert!(!e.fake.has_connection(org, id));
        assert_eq!(e.fake.count("DELETE", id), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespace_confines_the_controller() {
    let e = scenario("mine", &[("WATCH_NAMESPACE", "mine")]).await;
    let (theirs, id) = e.create_elsewhere("theirs", "other").await;
    // A resource in the watched namespace becoming Ready proves the operator is running;
    // by then the other one has been seen by the watch if it ever would be.
    e.ready_connection("mine").await;
    let other = theirs.get("other").await.expect("get");
    assert!(
        other.status.is_none() && !has_finalizer(&other),
        "{other:?}"
    );
    assert_eq!(e.fake.count("GET", id), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_delete_finishes_after_restart() {
    // Leen answers the DELETE slowly; the operator is killed while it waits, after Leen
    // has deleted. The restarted operator must finish: 404 -> AlreadyDeleted.
    let mut e = scenario("crash", &[]).await;
    let (org, id) = e.ready_connection("c").await;
    e.fake.push_fault(
        Fault::status(id, 200)
            .method("DELETE")
            .body(FaultBody::Normal)
            .delay(Duration::from_secs(3)),
    );
    delete(&e.api, "c").await;
    // Leen has processed the DELETE once it is recorded (the answer is still delayed).
    let deadline = std::time::Instant::now() + WAIT;
    while e.fake.count("DELETE", id) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no DELETE reached Leen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    e.op.kill();
    assert!(!e.fake.has_connection(org, id), "deleted in Leen");
    let obj = e.api.get("c").await.expect("still there");
    assert!(has_finalizer(&obj), "finalizer held across the crash");
    e.op.restart().await;
    wait_gone(&e.api, "c").await;
    assert_eq!(e.fake.count("DELETE", id), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_key_is_limited_to_trusted_namespaces() {
    let e = scenario("trusted", &[("LEEN_DEFAULT_KEY_NAMESPACES", "trusted")]).await;
    let (untrusted, id) = e.create_elsewhere("untrusted", "c").await;
    let obj = wait_for(
        &untrusted,
        "c",
        "CredentialsMissing",
        reason_is("CredentialsMissing"),
    )
    .await;
    let message = ready_message(&obj);
    assert!(message.contains("LEEN_DEFAULT_KEY_NAMESPACES"), "{message}");
    assert_eq!(e.fake.count("GET", id), 0, "the default key was not used");
    e.ready_connection("ok").await;
}
