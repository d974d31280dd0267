//! Deletion you can trust, against a real kube-apiserver + etcd and the fake Leen: only
//! Leen's real confirmation frees a finalizer, a connection still bound by another
//! resource is never deleted, key Secrets outlive the deletions that need them, the region
//! is bound like the ids, and a 429 pauses every call that shares the limit.

mod support;

use std::time::Duration;

use fake_leen::{Fault, FaultBody};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use leen_operator::resource::{CONNECTION_LABEL, LeenConnection};
use support::*;

fn reason_is(reason: &'static str) -> impl Fn(&LeenConnection) -> bool {
    move |o| ready_reason(o).as_deref() == Some(reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_real_confirmation_frees_the_finalizer() {
    let e = scenario("proof", &[]).await;
    let (org, id) = e.ready_connection("c").await;
    // A proxy's HTML 404, then an empty 200, then a 200 about another connection: none of
    // them proves anything; the fourth answer is Leen's and frees the finalizer.
    e.fake
        .push_fault(Fault::status(id, 404).method("DELETE").body(FaultBody::Raw(
            "<html><body>404 Not Found</body></html>".into(),
        )));
    e.fake.push_fault(
        Fault::status(id, 200)
            .method("DELETE")
            .body(FaultBody::Json(serde_json::json!({}))),
    );
    let other = uuid::Uuid::new_v4();
    e.fake.push_fault(
        Fault::status(id, 200)
            .method("DELETE")
            .body(FaultBody::Json(
                serde_json::json!({"id": other, "state": "DELETED"}),
            )),
    );
    let versions = record_versions(e.api.clone(), "c");
    delete(&e.api, "c").await;
    wait_gone(&e.api, "c").await;
    assert_eq!(
        e.fake.count("DELETE", id),
        4,
        "three unproven answers, then Leen's"
    );
    assert!(!e.fake.has_connection(org, id));
    let seen = versions.await.expect("watch");
    let reasons: Vec<String> = seen.iter().filter_map(ready_reason).collect();
    for reason in ["UnexpectedResponse", "InvalidResponse", "Deleted"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    let about_other = seen
        .iter()
        .filter_map(|o| o.status.as_ref()?.ready().map(|c| c.message.clone()))
        .any(|m| m.contains(&format!("about connection {other}, not {id}")));
    assert!(about_other, "the message names both connections");
    // Every version before the last one kept the finalizer.
    assert!(seen[..seen.len() - 1].iter().all(has_finalizer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_read_is_not_ready() {
    let e = scenario("emptyread", &[]).await;
    let (org, id) = e.seeded();
    e.fake.push_fault(
        Fault::status(id, 200)
            .method("GET")
            .body(FaultBody::Json(serde_json::json!({})))
            .times(1000),
    );
    e.create(connection("c", org, id)).await;
    let obj = wait_for(&e.api, "c", "InvalidResponse", reason_is("InvalidResponse")).await;
    assert!(!is_ready(&obj));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_bound_elsewhere_is_not_deleted() {
    let e = scenario("old", &[]).await;
    let (org, id) = e.ready_connection("c").await;
    // A GitOps move: the same connection declared in another namespace, then the old
    // object pruned.
    e.cp.namespace("new").await;
    let new: Api<LeenConnection> = Api::namespaced(e.client.clone(), "new");
    new.create(&PostParams::default(), &connection("c", org, id))
        .await
        .expect("created");
    // While both live, both say so, neither naming the other's namespace.
    for api in [&new, &e.api] {
        let shared = wait_for(api, "c", "a shared-connection message", |o| {
            o.status.as_ref().and_then(|s| s.ready()).is_some_and(|c| {
                c.message
                    .contains("also bound by a resource in another namespace")
            })
        })
        .await;
        let message = ready_message(&shared);
        assert!(
            !message.contains("old/c") && !message.contains("new/c"),
            "{message}"
        );
    }
    assert!(!e.events("SharedConnection").await.is_empty());

    delete(&e.api, "c").await;
    wait_gone(&e.api, "c").await;
    assert_eq!(
        e.fake.count("DELETE", id),
        0,
        "the connection stays for new/c"
    );
    assert!(e.fake.has_connection(org, id));
    let released = e.events("StillReferenced").await;
    assert!(
        released
            .iter()
            .any(|ev| ev.type_.as_deref() == Some("Normal")
                && ev.note.as_deref().is_some_and(|n| {
                    n.contains("a resource in another namespace") && !n.contains("new/c")
                })),
        "{released:?}"
    );
    // The survivor no longer shares it, and its own deletion deletes the connection.
    wait_for(&new, "c", "no shared-connection message", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.ready())
            .is_some_and(|c| c.status == "True" && !c.message.contains("also bound by"))
    })
    .await;
    new.delete("c", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&new, "c").await;
    assert_eq!(e.fake.count("DELETE", id), 1);
    assert!(!e.fake.has_connection(org, id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_that_prunes_at_once_keeps_the_connection() {
    let e = scenario("rename", &[]).await;
    let (org, id) = e.ready_connection("old-name").await;
    // Create the new name and prune the old one in the same breath, before the controller
    // has read (and labelled) the new object.
    e.create(connection("new-name", org, id)).await;
    delete(&e.api, "old-name").await;
    let fresh = wait_for(&e.api, "new-name", "Ready=True", is_ready).await;
    wait_gone(&e.api, "old-name").await;
    assert_eq!(e.fake.count("DELETE", id), 0);
    assert!(e.fake.has_connection(org, id));
    assert_eq!(
        fresh
            .metadata
            .labels
            .unwrap_or_default()
            .get(CONNECTION_LABEL),
        Some(&id.to_string()),
        "the binding label lets the cache answer next time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_secret_pruned_with_its_resource_outlives_the_deletion() {
    let mut e = scenario("app", &[]).await;
    let (org, id) = e.create_with_secret("c", "leen-key", "tenant-key").await;
    wait_for(&e.api, "c", "Ready=True", is_ready).await;
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), "app");
    wait_protected(&secrets, "leen-key").await;

    // Leen fails the first DELETE; the prune takes the resource and its Secret together.
    e.fake
        .push_fault(Fault::status(id, 503).method("DELETE").times(2));
    delete(&e.api, "c").await;
    secrets
        .delete("leen-key", &DeleteParams::default())
        .await
        .expect("Secret delete accepted");
    wait_for(&e.api, "c", "LeenUnavailable", reason_is("LeenUnavailable")).await;
    // The operator restarts meanwhile; the Secret is still there to read.
    e.op.kill();
    let held = secrets
        .get("leen-key")
        .await
        .expect("Secret still readable");
    assert!(held.metadata.deletion_timestamp.is_some() && secret_protected(&held));
    e.op.restart().await;
    wait_gone(&e.api, "c").await;
    assert!(!e.fake.has_connection(org, id));
    assert!(
        e.fake.requests().iter().any(|r| r.method == "DELETE"
            && r.api_key.as_deref() == Some("tenant-key")
            && r.status == 200),
        "deleted with the pruned Secret's key"
    );
    // And the Secret goes as soon as nobody needs it.
    wait_secret_gone(&secrets, "leen-key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_resource_does_not_hold_its_secret() {
    let e = scenario("orphans", &[]).await;
    e.create_with_secret("c", "leen-key", "tenant-key").await;
    wait_for(&e.api, "c", "Ready=True", is_ready).await;
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), "orphans");
    wait_protected(&secrets, "leen-key").await;
    // Switching to Orphan: the deletion will need no key, so the Secret is released.
    e.set_policy("c", "Orphan").await;
    wait_secret(&secrets, "leen-key", "the finalizer released", |s| {
        !secret_protected(s)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_region_is_refused_and_never_deleted_elsewhere() {
    let e = scenario("regions", &[]).await;
    let (org, id) = e.ready_connection("c").await;
    let patched = e
        .api
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"region": "eu"}})),
        )
        .await;
    if cel_enforced(&e.client).await {
        // The server refuses it; nothing for the controller to see.
        assert!(
            matches!(patched, Err(kube::Error::Api(ref s)) if s.code == 422),
            "{patched:?}"
        );
        return;
    }
    patched.expect("a server without CEL accepts the change");
    let obj = wait_for(
        &e.api,
        "c",
        "ImmutableFieldChanged",
        reason_is("ImmutableFieldChanged"),
    )
    .await;
    let bound = obj.status.and_then(|s| s.bound_connection).expect("bound");
    assert_eq!(bound.region, Some(leen_operator::resource::Region::Us));
    delete(&e.api, "c").await;
    consistently(
        "no DELETE while the region is changed",
        Duration::from_secs(3),
        async || e.fake.count("DELETE", id) == 0,
    )
    .await;
    // Restored, the deletion goes to the bound region.
    e.api
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"region": "us"}})),
        )
        .await
        .expect("restored");
    wait_gone(&e.api, "c").await;
    assert_eq!(e.fake.count("DELETE", id), 1);
    assert!(!e.fake.has_connection(org, id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_every_deletion_sharing_the_key() {
    let e = scenario("limited", &[]).await;
    let items = create_many(&e.api, &e.fake, "c", 20, 10).await;
    for (name, _, _) in &items {
        wait_for(&e.api, name, "Ready=True", is_ready).await;
    }
    e.fake.set_rate_limited(Some("2"));
    let before = e.fake.requests().len();
    e.cp.kubectl(&[
        "delete",
        "leenconn",
        "--all",
        "-n",
        "limited",
        "--wait=false",
    ]);
    // Every resource is held by the one gate: it shows RateLimited.
    for (name, _, _) in &items {
        wait_for(&e.api, name, "RateLimited", reason_is("RateLimited")).await;
    }
    // From now on, one probe per Retry-After, not one request per resource.
    let settled = e.fake.requests().len();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = e.fake.requests().len() - settled;
    println!(
        "429 gate: 20 pending deletions, Retry-After 2 s: {} requests until every resource showed RateLimited, then {during} in 6 s (without the gate: about 20 x 6 / 2 = 60)",
        settled - before
    );
    assert!(
        during <= 6,
        "{during} requests in 6 s of 429 with Retry-After 2 for 20 resources (first wave: {})",
        settled - before
    );
    e.fake.set_rate_limited(None);
    for (name, _, _) in &items {
        wait_gone(&e.api, name).await;
    }
    assert!(e.fake.live_connections().is_empty());
    assert!(
        e.op.metric("leen_operator_leen_requests_held_total", &[])
            .await
            > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_key_is_for_no_namespace_unless_chosen() {
    let e = scenario("untrusted", &[("LEEN_DEFAULT_KEY_NAMESPACES", "")]).await;
    let (org, id) = e.seeded();
    e.create(connection("c", org, id)).await;
    let obj = wait_for(
        &e.api,
        "c",
        "CredentialsMissing",
        reason_is("CredentialsMissing"),
    )
    .await;
    let message = ready_message(&obj);
    assert!(message.contains("LEEN_DEFAULT_KEY_NAMESPACES"), "{message}");
    assert_eq!(e.fake.count("GET", id), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_cannot_be_a_header_is_credentials_missing() {
    let e = scenario("badkey", &[]).await;
    e.create_with_secret("c", "leen-key", "abc\u{1}def").await;
    let obj = wait_for(
        &e.api,
        "c",
        "CredentialsMissing",
        reason_is("CredentialsMissing"),
    )
    .await;
    let message = ready_message(&obj);
    assert!(
        message.contains("HTTP header") && !message.contains("abc"),
        "{message}"
    );
    assert!(e.fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_a_secret_name_that_is_not_a_name() {
    let e = scenario("names", &[]).await;
    let (org, id) = e.seeded();
    let mut obj = connection("c", org, id);
    obj.spec.api_key_secret_ref =
        serde_json::from_value(serde_json::json!({"name": "Not_A/Name"})).ok();
    let refused = e.api.create(&PostParams::default(), &obj).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422),
        "{refused:?}"
    );
}

/// A key rotated into a new Secret while a deletion waits (`apiKeySecretRef` edited): the
/// new Secret is the one kept readable until the deletion is done, and the old one is
/// released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_secret_named_during_a_pending_deletion_stays_protected() {
    let e = scenario("rotate", &[]).await;
    let (org, id) = e.create_with_secret("c", "old-key", "tenant-key").await;
    wait_for(&e.api, "c", "Ready=True", is_ready).await;
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), "rotate");
    wait_protected(&secrets, "old-key").await;
    e.fake
        .push_fault(Fault::status(id, 503).method("DELETE").times(1000));
    delete(&e.api, "c").await;
    wait_for(&e.api, "c", "LeenUnavailable", reason_is("LeenUnavailable")).await;
    // The key is rotated into a new Secret and the resource pointed at it.
    secret(&e.client, "rotate", "new-key", "apiKey", "tenant-key").await;
    e.api
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"apiKeySecretRef": {"name": "new-key"}}})),
        )
        .await
        .expect("patched");
    wait_protected(&secrets, "new-key").await;
    wait_secret(&secrets, "old-key", "the old Secret released", |s| {
        !secret_protected(s)
    })
    .await;
    consistently(
        "the new Secret stays protected",
        Duration::from_secs(3),
        async || {
            secrets
                .get_opt("new-key")
                .await
                .ok()
                .flatten()
                .is_some_and(|s| secret_protected(&s))
        },
    )
    .await;
    e.fake.clear_faults();
    wait_gone(&e.api, "c").await;
    assert!(!e.fake.has_connection(org, id));
    wait_secret(&secrets, "new-key", "released after the deletion", |s| {
        !secret_protected(s)
    })
    .await;
}
