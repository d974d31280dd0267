//! Connections declared in Git: created from the spec, found again (never repeated) when a
//! create's answer is lost, paused and resumed through spec.state, credentials rotated from
//! their Secret, and deleted like adopted ones. Real kube-apiserver + etcd, the fake Leen.

mod support;

use std::{collections::BTreeMap, time::Duration};

use fake_leen::{Fault, FaultBody};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use leen_operator::resource::{CONNECTION_LABEL, CREDENTIALS_VALID_CONDITION, LeenConnection};
use rand::{Rng, SeedableRng};
use support::*;
use uuid::Uuid;

/// A LeenConnection that asks the operator to create its connection.
fn to_create(name: &str, org: Uuid, vendor: &str, credentials: Option<&str>) -> LeenConnection {
    let mut spec = serde_json::json!({"organizationId": org.to_string(), "vendor": vendor});
    if let Some(secret) = credentials {
        spec["credentialsSecretRef"] = serde_json::json!({ "name": secret });
    }
    LeenConnection::new(name, serde_json::from_value(spec).expect("spec"))
}

/// Creates or replaces a Secret with these data keys.
async fn put_secret(e: &Scenario, name: &str, data: &[(&str, &str)]) {
    let api: Api<Secret> = Api::namespaced(e.client.clone(), e.ns);
    let s = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                "leen.dev/secret-type".to_string(),
                "credentials".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    match api.get_opt(name).await.expect("read secret") {
        Some(_) => {
            api.replace(name, &PostParams::default(), &s)
                .await
                .expect("secret replaced");
        }
        None => {
            api.create(&PostParams::default(), &s)
                .await
                .expect("secret created");
        }
    }
}

fn condition(o: &LeenConnection, type_: &str) -> Option<(String, String)> {
    let c = o.status.as_ref()?.condition(type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

fn reason_is(reason: &'static str) -> impl Fn(&LeenConnection) -> bool {
    move |o| ready_reason(o).as_deref() == Some(reason)
}

fn created_id(o: &LeenConnection) -> Uuid {
    o.status
        .as_ref()
        .and_then(|s| s.connection_id.as_deref())
        .and_then(|id| Uuid::parse_str(id).ok())
        .expect("status.connectionId is a UUID")
}

fn default_identifier(o: &LeenConnection) -> String {
    format!(
        "{}/{}/{}",
        o.namespace().unwrap_or_default(),
        o.name_any(),
        o.uid().unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_created_bound_tested_rotated_and_deleted() {
    let e = scenario("create", &[]).await;
    let org = Uuid::new_v4();
    put_secret(
        &e,
        "cs-creds",
        &[
            ("client_id", "cs-client"),
            ("client_secret", "cs-secret-one\n"),
        ],
    )
    .await;
    e.create(to_create(
        "cs",
        org,
        "CROWDSTRIKE_SPOTLIGHT",
        Some("cs-creds"),
    ))
    .await;
    let obj = wait_for(&e.api, "cs", "Ready=True", is_ready).await;
    let id = created_id(&obj);
    assert_eq!(e.fake.count_operation("create"), 1, "one POST");
    assert_eq!(
        e.fake.with_identifier(org, &default_identifier(&obj)),
        vec![id],
        "the identifier names this resource's one connection"
    );
    assert_eq!(
        e.fake.credentials_of(org, id),
        Some(serde_json::json!({"client_id": "cs-client", "client_secret": "cs-secret-one"})),
        "each data key became credentials.<key>; the trailing newline is dropped"
    );
    let obj = wait_for(&e.api, "cs", "CredentialsValid=True", |o| {
        condition(o, CREDENTIALS_VALID_CONDITION).is_some_and(|(s, _)| s == "True")
    })
    .await;
    let bound = obj
        .status
        .as_ref()
        .and_then(|s| s.bound_connection.as_ref())
        .expect("bound");
    assert_eq!(bound.connection_id, id.to_string());
    let labelled = wait_for(&e.api, "cs", "the connection label", |o| {
        o.labels().get(CONNECTION_LABEL) == Some(&id.to_string())
    })
    .await;
    let status_text = serde_json::to_string(&labelled.status).expect("json");
    assert!(!status_text.contains("cs-secret-one") && !status_text.contains("cs-client"));
    let hash = labelled
        .status
        .as_ref()
        .and_then(|s| s.credentials.as_ref())
        .and_then(|c| c.applied_hash.clone())
        .expect("applied hash");
    assert!(hash.starts_with("hmac-sha256:"), "{hash}");
    let created = e.events("Created").await;
    assert_eq!(created.len(), 1);
    assert!(
        created[0]
            .note
            .as_deref()
            .is_some_and(|m| m.contains(&id.to_string()))
    );

    // Rotation: the changed Secret is sent once, then tested; the fake refuses values
    // starting with "invalid".
    put_secret(
        &e,
        "cs-creds",
        &[("client_id", "cs-client"), ("client_secret", "invalid-two")],
    )
    .await;
    wait_for(&e.api, "cs", "CredentialsValid=False", |o| {
        condition(o, CREDENTIALS_VALID_CONDITION)
            .is_some_and(|(s, r)| s == "False" && r == "Invalid")
    })
    .await;
    assert_eq!(e.fake.count_operation("update"), 1, "one PATCH per change");
    assert_eq!(
        e.fake.credentials_of(org, id).expect("credentials")["client_secret"],
        "invalid-two"
    );
    put_secret(
        &e,
        "cs-creds",
        &[
            ("client_id", "cs-client"),
            ("client_secret", "cs-secret-three"),
        ],
    )
    .await;
    wait_for(&e.api, "cs", "CredentialsValid=True again", |o| {
        condition(o, CREDENTIALS_VALID_CONDITION).is_some_and(|(s, _)| s == "True")
    })
    .await;
    assert_eq!(e.fake.count_operation("update"), 2);
    assert_eq!(
        e.fake.count_operation("create"),
        1,
        "rotation never creates"
    );
    let log = e.op.log_text();
    for secret in ["cs-secret-one", "invalid-two", "cs-secret-three"] {
        assert!(!log.contains(secret), "{secret} in the operator log");
    }
    for event in e.events("CredentialsApplied").await {
        assert!(
            !event
                .note
                .as_deref()
                .unwrap_or_default()
                .contains("secret-")
        );
    }

    // Deletion works exactly like an adopted connection's.
    delete(&e.api, "cs").await;
    wait_gone(&e.api, "cs").await;
    assert!(!e.fake.has_connection(org, id));
    assert_eq!(e.fake.count("DELETE", id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_was_lost_is_found_not_repeated() {
    let e = scenario("lostcreate", &[]).await;
    let org = Uuid::new_v4();
    put_secret(&e, "t-creds", &[("client_key", "k"), ("secret_key", "s")]).await;
    // Leen creates the connection, but the operator sees a 500.
    e.fake
        .push_fault(Fault::status(org, 500).method("POST").after_effect());
    e.create(to_create("t", org, "TENABLE", Some("t-creds")))
        .await;
    let obj = wait_for(&e.api, "t", "Ready=True", is_ready).await;
    let id = created_id(&obj);
    assert_eq!(e.fake.count_operation("create"), 1, "not created twice");
    assert_eq!(
        e.fake.with_identifier(org, &default_identifier(&obj)),
        vec![id]
    );
    assert!(
        e.fake.count_operation("list") >= 1,
        "looked up by identifier"
    );
    let recovered = e.events("CreateRecovered").await;
    assert_eq!(recovered.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_creates_leaves_exactly_one_connection_each() {
    let mut e = scenario("crashcreate", &[]).await;
    const N: usize = 16;
    let org = Uuid::new_v4();
    put_secret(&e, "q-creds", &[("username", "u"), ("password", "p")]).await;
    // Slow enough that kills land while creates are in flight: Leen has created the
    // connection, its answer has not arrived.
    e.fake.set_latency(Duration::from_millis(1500));
    for i in 0..N {
        e.create(to_create(&format!("q{i}"), org, "QUALYS", Some("q-creds")))
            .await;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut kills = 0;
    while kills < 6 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..2500))).await;
        e.op.kill();
        kills += 1;
        e.op.restart().await;
    }
    for i in 0..N {
        wait_for(&e.api, &format!("q{i}"), "Ready=True", is_ready).await;
    }
    let live = e.fake.identifiers();
    assert_eq!(
        live.len(),
        N,
        "exactly one connection per resource: {live:?}"
    );
    for i in 0..N {
        let obj = e.api.get(&format!("q{i}")).await.expect("resource");
        assert_eq!(
            e.fake.with_identifier(org, &default_identifier(&obj)),
            vec![created_id(&obj)],
            "q{i}"
        );
    }
    let (posts, lists) = (
        e.fake.count_operation("create"),
        e.fake.count_operation("list"),
    );
    eprintln!("{N} creates, {kills} kills: {posts} POSTs, {lists} lists");
    assert!(
        lists > 0,
        "the kills landed while creates were in flight (else this test proves nothing)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_create_is_stalled_and_not_repeated() {
    let e = scenario("reject", &[]).await;
    let org = Uuid::new_v4();
    put_secret(&e, "x-creds", &[("token", "t")]).await;
    e.create(to_create("x", org, "NOT_A_VENDOR", Some("x-creds")))
        .await;
    let obj = wait_for(&e.api, "x", "Rejected", reason_is("Rejected")).await;
    assert!(
        ready_message(&obj).contains("body.vendor"),
        "Leen's detail: {}",
        ready_message(&obj)
    );
    assert_eq!(
        condition(&obj, "Stalled").map(|(s, _)| s),
        Some("True".into())
    );
    consistently("one create only", Duration::from_secs(3), async || {
        e.fake.count_operation("create") == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_malformed_credentials_send_nothing() {
    let e = scenario("badcreds", &[]).await;
    let org = Uuid::new_v4();
    e.create(to_create("w", org, "WIZ_VMS", Some("w-creds")))
        .await;
    let obj = wait_for(
        &e.api,
        "w",
        "CredentialsMissing",
        reason_is("CredentialsMissing"),
    )
    .await;
    assert!(ready_message(&obj).contains("w-creds"));
    put_secret(&e, "w-creds", &[("credentials.json", "[1, 2]")]).await;
    let obj = wait_for(
        &e.api,
        "w",
        "CredentialsMalformed",
        reason_is("CredentialsMalformed"),
    )
    .await;
    assert!(ready_message(&obj).contains("credentials.json"));
    assert_eq!(
        e.fake.count_operation("create"),
        0,
        "nothing sent while the Secret is unusable"
    );
    put_secret(
        &e,
        "w-creds",
        &[(
            "credentials.json",
            r#"{"client_id": "w", "client_secret": "ws", "nested": {"a": 1}}"#,
        )],
    )
    .await;
    let obj = wait_for(&e.api, "w", "Ready=True", is_ready).await;
    assert_eq!(
        e.fake.credentials_of(org, created_id(&obj)).expect("sent")["nested"]["a"],
        1,
        "credentials.json is the whole object"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_state_pauses_resumes_and_corrects_drift() {
    let e = scenario("pause", &[("LEEN_SYNC_INTERVAL", "2s")]).await;
    let (org, id) = e.seeded();
    let mut obj = connection("p", org, id);
    obj.spec.state = serde_json::from_value(serde_json::json!("Paused")).ok();
    e.create(obj).await;
    let obj = wait_for(&e.api, "p", "Ready=True (Paused)", is_ready).await;
    assert_eq!(ready_reason(&obj).as_deref(), Some("Paused"));
    assert_eq!(e.fake.state_of(org, id).as_deref(), Some("PAUSED"));

    // Someone resumes it in the console: set back at the next sync, with an Event.
    e.fake.set_state(org, id, "ACTIVE");
    let before = e.fake.count_operation("update");
    eventually("the drift is corrected", async || {
        e.fake.count_operation("update") > before
    })
    .await;
    assert_eq!(e.fake.state_of(org, id).as_deref(), Some("PAUSED"));
    assert!(!e.events("StateCorrected").await.is_empty());

    e.api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"state": "Active"}})),
        )
        .await
        .expect("spec patched");
    wait_for(&e.api, "p", "Ready=True (Synced)", |o| {
        is_ready(o) && ready_reason(o).as_deref() == Some("Synced")
    })
    .await;
    assert_eq!(e.fake.state_of(org, id).as_deref(), Some("ACTIVE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_vendor_awaits_authorization() {
    let e = scenario("oauth", &[]).await;
    let org = Uuid::new_v4();
    e.create(to_create("md", org, "MS_DEFENDER_VMS", None))
        .await;
    let obj = wait_for(
        &e.api,
        "md",
        "AwaitingAuthorization",
        reason_is("AwaitingAuthorization"),
    )
    .await;
    let url = obj
        .status
        .as_ref()
        .and_then(|s| s.oauth2_authorize_url.clone())
        .expect("authorize URL in status");
    let id = created_id(&obj);
    assert!(url.contains(&id.to_string()), "{url}");
    e.fake.authorize(org, id);
    wait_for(&e.api, "md", "Ready=True", is_ready).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_during_a_lost_create_deletes_what_was_created() {
    let e = scenario("deletecreate", &[]).await;
    let org = Uuid::new_v4();
    put_secret(&e, "j-creds", &[("token", "j")]).await;
    // Leen creates, but its answer is a 500 after 3 s: the deletion arrives meanwhile.
    e.fake.push_fault(
        Fault::status(org, 500)
            .method("POST")
            .after_effect()
            .delay(Duration::from_secs(3))
            .body(FaultBody::Default),
    );
    e.create(to_create("j", org, "JIRA", Some("j-creds"))).await;
    eventually("a create is sent", async || {
        e.fake.count_operation("create") > 0
    })
    .await;
    delete(&e.api, "j").await;
    wait_gone(&e.api, "j").await;
    assert_eq!(e.fake.count_operation("create"), 1);
    assert!(
        e.fake.identifiers().is_empty(),
        "the connection created for the resource was deleted: {:?}",
        e.fake.identifiers()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_deleted_before_any_create_is_released_without_a_call() {
    let e = scenario("nocreate", &[]).await;
    let org = Uuid::new_v4();
    // The credentials Secret never exists, so no create ever goes out.
    e.create(to_create("n", org, "SNYK", Some("never"))).await;
    wait_for(
        &e.api,
        "n",
        "CredentialsMissing",
        reason_is("CredentialsMissing"),
    )
    .await;
    delete(&e.api, "n").await;
    wait_gone(&e.api, "n").await;
    assert!(e.fake.requests().is_empty(), "{:?}", e.fake.requests());
    assert_eq!(e.events("NotCreated").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_creates_a_connection() {
    let e = scenario("security", &[]).await;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/create-connection.yaml"
    );
    e.cp.kubectl(&["apply", "-f", path]);
    let obj = wait_for(&e.api, "crowdstrike-spotlight", "Ready=True", is_ready).await;
    let id = created_id(&obj);
    let org = Uuid::parse_str(&obj.spec.organization_id).expect("org");
    assert_eq!(
        e.fake.credentials_of(org, id),
        Some(serde_json::json!({"client_id": "0123456789abcdef", "client_secret": "replace-me"}))
    );
    let status = obj.status.expect("status");
    assert_eq!(status.vendor.as_deref(), Some("CROWDSTRIKE_SPOTLIGHT"));
    assert_eq!(status.state.as_deref(), Some("ACTIVE"));
}

/// `spec.identifier` does not adopt a connection this resource did not create: after an
/// Orphan prune and a re-create from the same manifest (or in a second cluster built from
/// the same base, or after someone made one in the console) the new resource neither binds
/// the existing connection nor makes a second one; it says `IdentifierInUse` and how to
/// adopt on purpose, and `spec.connectionId` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identifier_in_use_is_not_adopted_until_asked_by_connection_id() {
    let e = scenario("recreate", &[]).await;
    let org = Uuid::new_v4();
    put_secret(&e, "s-creds", &[("token", "s")]).await;
    let mut obj = to_create("s", org, "SNYK", Some("s-creds"));
    obj.spec.identifier = Some("snyk-prod".into());
    obj.spec.deletion_policy = leen_operator::resource::DeletionPolicy::Orphan;
    e.create(obj.clone()).await;
    let first = created_id(&wait_for(&e.api, "s", "Ready=True", is_ready).await);
    // A prune with Orphan, then GitOps re-creates the same manifest.
    delete(&e.api, "s").await;
    wait_gone(&e.api, "s").await;
    e.create(obj).await;
    let stalled = wait_for(&e.api, "s", "IdentifierInUse", reason_is("IdentifierInUse")).await;
    let message = ready_message(&stalled);
    assert!(message.contains(&first.to_string()), "{message}");
    assert!(message.contains("spec.connectionId"), "{message}");
    assert!(
        stalled
            .status
            .as_ref()
            .is_some_and(|s| s.bound_connection.is_none()),
        "not bound"
    );
    consistently("no second POST", Duration::from_secs(3), async || {
        e.fake.count_operation("create") == 1
    })
    .await;
    // Adopting on purpose: the id the message names.
    e.api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"connectionId": first.to_string()}})),
        )
        .await
        .expect("patched");
    let adopted = wait_for(&e.api, "s", "Ready=True", is_ready).await;
    assert_eq!(created_id(&adopted), first, "bound to the named connection");
    assert_eq!(e.fake.count_operation("create"), 1);
    assert_eq!(e.fake.with_identifier(org, "snyk-prod"), vec![first]);
}

/// A scenario whose creates Leen commits 4 s after the POST, while the operator waits 1 s
/// for an answer (and 60 s for proof of absence), with resource `slow` being created.
async fn creating_slowly(ns: &'static str) -> (Scenario, Uuid) {
    let e = scenario(
        ns,
        &[
            ("LEEN_REQUEST_TIMEOUT", "1s"),
            ("LEEN_CREATE_SETTLE", "60s"),
        ],
    )
    .await;
    e.fake.set_create_delay(Duration::from_secs(4));
    let org = Uuid::new_v4();
    put_secret(&e, "creds", &[("token", "t")]).await;
    e.create(to_create("slow", org, "SNYK", Some("creds")))
        .await;
    (e, org)
}

/// Leen checks a vendor's credentials before it commits a create, which can take longer
/// than the operator waits for the answer. The operator must not POST again while the
/// first create may still land: it looks the connection up until it appears, and binds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_leen_commits_late_is_found_not_repeated() {
    let (e, org) = creating_slowly("slowcreate").await;
    let obj = wait_for(&e.api, "slow", "Ready=True", is_ready).await;
    let id = created_id(&obj);
    assert_eq!(
        e.fake.with_identifier(org, &default_identifier(&obj)),
        vec![id],
        "exactly one connection in Leen"
    );
    assert_eq!(e.fake.count_operation("create"), 1, "one POST");
    assert!(
        !e.events("CreatePending").await.is_empty(),
        "it said what it waited for"
    );
}

/// Deleting a resource while its create may still land at Leen waits for the same proof
/// before it says `NotCreated`, and deletes the connection that appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_during_a_pending_create_deletes_what_appears() {
    let (e, org) = creating_slowly("slowdelete").await;
    // The POST went out and its answer did not come in time.
    let obj = wait_for(&e.api, "slow", "the create's answer lost", |o| {
        o.status.as_ref().is_some_and(|s| s.creation.is_some())
            && ready_reason(o).is_some_and(|r| r == "LeenUnavailable" || r == "CreatePending")
    })
    .await;
    let identifier = default_identifier(&obj);
    delete(&e.api, "slow").await;
    wait_gone(&e.api, "slow").await;
    eventually("Leen committed the create", async || {
        e.fake.count_operation("create") == 1
    })
    .await;
    assert!(
        e.fake.with_identifier(org, &identifier).is_empty(),
        "the connection that appeared was deleted: {:?}",
        e.fake.identifiers()
    );
    assert_eq!(e.events("Deleted").await.len(), 1);
    // A NotCreated would have released the resource before any DELETE: none was emitted.
    let reasons: Vec<String> = all_events(&e.client, e.ns)
        .await
        .into_iter()
        .filter_map(|ev| ev.reason)
        .collect();
    assert!(
        !reasons.iter().any(|r| r == "NotCreated"),
        "never NotCreated: {reasons:?}"
    );
}
