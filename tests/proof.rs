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
