//! Exactly once and only with proof, against a real kube-apiserver + etcd and the fake
//! Leen: the situations where an answer looks like a confirmation (or a binder looks like
//! one) but proves nothing.

mod support;

use std::time::Duration;

use kube::Api;
use leen_operator::resource::LeenConnection;
use support::*;

fn reason_is(reason: &'static str) -> impl Fn(&LeenConnection) -> bool {
    move |o| ready_reason(o).as_deref() == Some(reason)
}

/// Behind a proxy that rewrites paths wrongly (or after a Leen route change) every call
/// gets FastAPI's `{"detail": "Not Found"}`: a 404 with Leen's JSON that proves nothing,
/// because the organization does not answer there either. The finalizer stays, the
/// connection stays in Leen, and the resource says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_from_a_wrong_path_proves_nothing() {
    let cp = ControlPlane::start().await;
    let fake = fake_leen::FakeLeen::start().await.expect("fake Leen");
    fake.add_api_key(DEFAULT_KEY);
    cp.namespace("wrongpath").await;
    let endpoint = format!("http://{}/proxy/v1", fake.addr());
    let op = Operator::start(
        &cp,
        &[
            ("LEEN_ENDPOINT", endpoint.as_str()),
            ("LEEN_API_KEY", DEFAULT_KEY),
        ],
    )
    .await;
    let client = cp.client().await;
    let api: Api<LeenConnection> = Api::namespaced(client, "wrongpath");
    let (org, id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    fake.add_connection(org, id, "CrowdStrike");
    api.create(&Default::default(), &connection("c", org, id))
        .await
        .expect("created");
    wait_for(&api, "c", "a first read", |o| {
        has_finalizer(o) && ready_reason(o).is_some()
    })
    .await;
    delete(&api, "c").await;
    let held = wait_for(
        &api,
        "c",
        "an unproven 404",
        reason_is("UnexpectedResponse"),
    )
    .await;
    let message = ready_message(&held);
    assert!(message.contains("proves nothing"), "{message}");
    assert!(message.contains(&org.to_string()), "{message}");
    consistently("the finalizer stays", Duration::from_secs(4), async || {
        api.get_opt("c").await.ok().flatten().is_some_and(|o| {
            has_finalizer(&o) && ready_reason(&o).as_deref() != Some("AlreadyDeleted")
        })
    })
    .await;
    assert!(fake.has_connection(org, id), "nothing was deleted in Leen");
    assert!(
        fake.count_operation("unmatched") >= 2,
        "the DELETE and the organization went to the wrong path: {:?}",
        fake.requests()
    );
    drop(op);
}

/// A mass deletion of connections Leen no longer has: every one is released as
/// `AlreadyDeleted` once the organization answered, and the organization is asked once
/// for all of them, not once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_counts_once_the_organization_answered_and_the_proof_is_shared() {
    let e = scenario("gone404", &[]).await;
    let org = uuid::Uuid::new_v4();
    e.fake.add_organization(org);
    let n = 12;
    for i in 0..n {
        // Connections Leen does not have (deleted by hand in the console, say).
        let obj = connection(&format!("c{i}"), org, uuid::Uuid::new_v4());
        e.create(obj).await;
    }
    for i in 0..n {
        wait_for(&e.api, &format!("c{i}"), "NotFound", reason_is("NotFound")).await;
    }
    for i in 0..n {
        delete(&e.api, &format!("c{i}")).await;
    }
    for i in 0..n {
        wait_gone(&e.api, &format!("c{i}")).await;
    }
    let events = e.events("AlreadyDeleted").await;
    assert_eq!(events.len(), n, "{events:?}");
    let proofs = e.fake.count_operation("organization");
    eprintln!("{n} deletions answered 404: {proofs} organization reads");
    assert!(
        (1..=2).contains(&proofs),
        "the proof is kept per endpoint, key and organization: {proofs} reads for {n}"
    );
}

/// A LeenConnection in another namespace naming the same connection (a copied manifest, a
/// tenant's mistake) with a key Leen refuses has never shown it may act on that
/// connection: it does not keep the owner's deletion from deleting it. Neither resource's
/// status or Events name the other namespace's resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binder_in_another_namespace_that_cannot_read_the_connection_does_not_block_its_deletion()
{
    let e = scenario("owner", &[]).await;
    let (org, id) = e.ready_connection("c").await;
    e.cp.namespace("tenant").await;
    let tenant: Api<LeenConnection> = Api::namespaced(e.client.clone(), "tenant");
    secret(
        &e.client,
        "tenant",
        "wrong-key",
        "apiKey",
        "a-key-leen-refuses",
    )
    .await;
    let mut copy = connection("copy", org, id);
    copy.spec.api_key_secret_ref =
        serde_json::from_value(serde_json::json!({"name": "wrong-key"})).ok();
    tenant
        .create(&Default::default(), &copy)
        .await
        .expect("created");
    let refused = wait_for(&tenant, "copy", "Unauthorized", reason_is("Unauthorized")).await;
    assert!(
        !ready_message(&refused).contains("owner/"),
        "{}",
        ready_message(&refused)
    );
    delete(&e.api, "c").await;
    wait_gone(&e.api, "c").await;
    assert_eq!(
        e.fake.count("DELETE", id),
        1,
        "the owner's deletion deleted it"
    );
    assert!(!e.fake.has_connection(org, id));
    assert_eq!(e.events("Deleted").await.len(), 1);
    // The tenant's resource never shows the owner's namespace or name.
    let still = tenant.get("copy").await.expect("copy");
    let said = serde_json::to_string(&still.status).expect("status");
    assert!(!said.contains("owner/c"), "{said}");
    for ev in all_events(&e.client, "tenant").await {
        assert!(
            !ev.note.as_deref().unwrap_or_default().contains("owner/c"),
            "{ev:?}"
        );
    }
}

/// A LeenConnection watch that stalls (a load balancer holding the connection, an API
/// server that stopped sending) while calls still work: the controller's cache misses a
/// second resource binding the same connection. A deletion meanwhile is held
/// (`CacheStale`, no DELETE); once the watch hears again the cache knows the other binder,
/// and the deletion is released as `StillReferenced`: the connection is never deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_deletion_is_decided_from_a_stalled_watch() {
    stalled_watch(false).await;
}

/// The same behind a proxy that answers each watch with its 200 and then forwards
/// nothing: response headers are no sign that the watch works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_answers_and_then_says_nothing_is_stalled_too() {
    stalled_watch(true).await;
}

async fn stalled_watch(after_headers: bool) {
    let cp = ControlPlane::start().await;
    let fake = fake_leen::FakeLeen::start().await.expect("fake Leen");
    fake.add_api_key(DEFAULT_KEY);
    cp.namespace("stalled").await;
    let proxy = WatchStallingProxy::start(cp.addr()).await;
    let via_proxy = cp.dir.path().join("watch-proxy.kubeconfig");
    cp.write_kubeconfig_via(&format!("http://{}", proxy.addr), &via_proxy);
    let endpoint = fake.base_url();
    let op = Operator::start_with_kubeconfig(
        &cp,
        &via_proxy,
        &[
            ("LEEN_ENDPOINT", endpoint.as_str()),
            ("LEEN_API_KEY", DEFAULT_KEY),
            ("LEEN_DEFAULT_KEY_NAMESPACES", "*"),
            // A watch request lasts 5 s: silent for 12.5 s, it is stuck.
            ("LEEN_WATCH_TIMEOUT", "5s"),
            // The deletion below is seen by the periodic read, not by the stalled watch.
            ("LEEN_SYNC_INTERVAL", "2s"),
        ],
    )
    .await;
    let api: Api<LeenConnection> = Api::namespaced(cp.client().await, "stalled");
    let (org, id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    fake.add_connection(org, id, "CrowdStrike");
    api.create(&Default::default(), &connection("owner", org, id))
        .await
        .expect("created");
    wait_for(&api, "owner", "Ready=True", is_ready).await;
    assert_eq!(op.metric("leen_operator_cache_stale", &[]).await, 0.0);

    if after_headers {
        proxy.stall_watches_after_headers();
    } else {
        proxy.stall_watches();
    }
    // A rename in progress: the new resource binds the same connection. The stalled
    // watch does not bring it to the operator's cache.
    api.create(&Default::default(), &connection("renamed", org, id))
        .await
        .expect("created");
    eventually("the operator sees its cache may be behind", async || {
        op.metric("leen_operator_cache_stale", &[]).await == 1.0
    })
    .await;
    delete(&api, "owner").await;
    let held = wait_for(&api, "owner", "a deletion held", reason_is("CacheStale")).await;
    let message = ready_message(&held);
    assert!(message.contains("heard nothing"), "{message}");
    assert!(message.contains(&id.to_string()), "{message}");
    assert!(has_finalizer(&held), "the finalizer stays");
    assert_eq!(fake.count_operation("delete"), 0, "{:?}", fake.requests());
    let client = cp.client().await;
    assert!(!events(&client, "stalled", "CacheStale").await.is_empty());

    proxy.resume();
    // Released once the cache caught up: it may be gone already when the wait begins.
    let released = tokio::time::timeout(
        WAIT,
        kube::runtime::wait::await_condition(api.clone(), "owner", |o: Option<&LeenConnection>| {
            o.is_none_or(|o| {
                ready_reason(o).as_deref() == Some("StillReferenced") || !has_finalizer(o)
            })
        }),
    )
    .await
    .expect("released once the cache caught up")
    .expect("watch");
    if let Some(reason) = released.as_ref().and_then(ready_reason) {
        assert_eq!(reason, "StillReferenced");
    }
    wait_gone(&api, "owner").await;
    assert_eq!(
        fake.count_operation("delete"),
        0,
        "the connection the renamed resource binds was never deleted: {:?}",
        fake.requests()
    );
    assert!(fake.has_connection(org, id));
    eventually("the cache is fresh again", async || {
        op.metric("leen_operator_cache_stale", &[]).await == 0.0
    })
    .await;
}
