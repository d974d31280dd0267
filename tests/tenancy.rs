//! Many teams, one cluster, against a real kube-apiserver + etcd and the fake Leen:
//! organizations as resources (each team's own, and a platform one selected by namespace
//! label), each connection's calls carrying only the key its namespace may use, a
//! deletion of an organization in use that waits, and Secrets read only with their
//! owner's consent (`leen.dev/secret-type`).

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use leen_operator::{
    organization::{ClusterLeenOrganization, LeenOrganization, ORGANIZATION_FINALIZER},
    resource::LeenConnection,
};
use support::*;
use uuid::Uuid;

/// The operator's own namespace in these tests (its POD_NAMESPACE).
const OPERATOR_NS: &str = "leen-system";

/// A LeenConnection that adopts `id` through the organization resource `kind`/`org`.
fn through(name: &str, kind: &str, org: &str, id: Uuid) -> LeenConnection {
    LeenConnection::new(
        name,
        serde_json::from_value(serde_json::json!({
            "organizationRef": {"kind": kind, "name": org},
            "connectionId": id.to_string(),
        }))
        .expect("spec"),
    )
}

/// Creates a LeenOrganization in `ns` for `organization`, its key in Secret `secret`.
async fn team_organization(
    client: &Client,
    ns: &str,
    name: &str,
    organization: Uuid,
    secret: &str,
) {
    let org = LeenOrganization::new(
        name,
        serde_json::from_value(serde_json::json!({
            "organizationId": organization.to_string(),
            "apiKeySecretRef": {"name": secret},
        }))
        .expect("spec"),
    );
    Api::<LeenOrganization>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &org)
        .await
        .expect("LeenOrganization created");
}

/// Creates namespace `name` with these labels.
async fn labelled_namespace(client: &Client, name: &str, labels: &[(&str, &str)]) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
}

/// Waits until the organization resource's status satisfies `pred`.
async fn wait_org<K>(api: &Api<K>, name: &str, what: &str, pred: impl Fn(&K) -> bool)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    eventually(&format!("{name}: {what}"), async || {
        api.get_opt(name)
            .await
            .ok()
            .flatten()
            .is_some_and(|o| pred(&o))
    })
    .await;
}

fn org_ready(status: Option<&leen_operator::organization::OrganizationStatus>) -> Option<String> {
    status
        .and_then(|s| s.ready())
        .map(|c| format!("{}/{}", c.status, c.reason))
}

/// The keys the fake Leen saw on calls about connection `id`.
fn keys_for(e: &Scenario, id: Uuid) -> Vec<String> {
    let mut keys: Vec<String> = e
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.connection_id == id.to_string())
        .filter_map(|r| r.api_key)
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_teams_and_a_shared_organization_each_use_only_their_own_key() {
    let e = scenario("team-a", &[("POD_NAMESPACE", OPERATOR_NS)]).await;
    for ns in ["team-b", OPERATOR_NS] {
        e.cp.namespace(ns).await;
    }
    labelled_namespace(&e.client, "team-c", &[("leen.dev/tenant", "shared")]).await;
    labelled_namespace(&e.client, "team-d", &[("leen.dev/tenant", "other")]).await;
    let (org_a, org_b, org_s) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (conn_a, conn_b, conn_c, conn_d) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    for (org, conn) in [
        (org_a, conn_a),
        (org_b, conn_b),
        (org_s, conn_c),
        (org_s, conn_d),
    ] {
        e.fake.add_connection(org, conn, "CrowdStrike");
    }
    for key in ["key-team-a", "key-team-b", "key-shared"] {
        e.fake.add_api_key(key);
    }
    secret(&e.client, "team-a", "a-key", "apiKey", "key-team-a").await;
    secret(&e.client, "team-b", "b-key", "apiKey", "key-team-b").await;
    secret(&e.client, OPERATOR_NS, "shared-key", "apiKey", "key-shared").await;
    team_organization(&e.client, "team-a", "acme", org_a, "a-key").await;
    team_organization(&e.client, "team-b", "beta", org_b, "b-key").await;
    let shared = ClusterLeenOrganization::new(
        "shared",
        serde_json::from_value(serde_json::json!({
            "organizationId": org_s.to_string(),
            "apiKeySecretRef": {"name": "shared-key"},
            "namespaceSelector": {"matchLabels": {"leen.dev/tenant": "shared"}},
        }))
        .expect("spec"),
    );
    let clusters: Api<ClusterLeenOrganization> = Api::all(e.client.clone());
    clusters
        .create(&PostParams::default(), &shared)
        .await
        .expect("ClusterLeenOrganization created");

    let api = |ns: &str| Api::<LeenConnection>::namespaced(e.client.clone(), ns);
    let plan = [
        ("team-a", "LeenOrganization", "acme", conn_a),
        ("team-b", "LeenOrganization", "beta", conn_b),
        ("team-c", "ClusterLeenOrganization", "shared", conn_c),
        ("team-d", "ClusterLeenOrganization", "shared", conn_d),
        // Team b names team a's organization: a LeenOrganization is its namespace's only.
        ("team-b", "LeenOrganization", "acme", conn_a),
    ];
    for (i, (ns, kind, org, id)) in plan.iter().enumerate() {
        api(ns)
            .create(
                &PostParams::default(),
                &through(&format!("web{i}"), kind, org, *id),
            )
            .await
            .expect("LeenConnection created");
    }
    for (i, ns) in ["team-a", "team-b", "team-c"].into_iter().enumerate() {
        wait_for(&api(ns), &format!("web{i}"), "Ready=True", is_ready).await;
    }
    let refused = wait_for(&api("team-d"), "web3", "CredentialsMissing", |o| {
        ready_reason(o).as_deref() == Some("CredentialsMissing")
    })
    .await;
    assert!(
        ready_message(&refused)
            .contains("ClusterLeenOrganization shared does not select namespace team-d"),
        "{}",
        ready_message(&refused)
    );
    let borrowed = wait_for(&api("team-b"), "web4", "CredentialsMissing", |o| {
        ready_reason(o).as_deref() == Some("CredentialsMissing")
    })
    .await;
    assert!(
        ready_message(&borrowed).contains("LeenOrganization acme not found in namespace team-b"),
        "{}",
        ready_message(&borrowed)
    );

    // Each connection's calls carried its own organization's key, and only that.
    assert_eq!(keys_for(&e, conn_a), ["key-team-a"]);
    assert_eq!(keys_for(&e, conn_b), ["key-team-b"]);
    assert_eq!(keys_for(&e, conn_c), ["key-shared"]);
    assert!(keys_for(&e, conn_d).is_empty(), "nothing sent for team-d");
    assert!(
        e.fake
            .requests()
            .iter()
            .all(|r| r.api_key.as_deref() != Some(DEFAULT_KEY)),
        "the default key is used by none of them"
    );

    // The organizations say that their keys work, and who uses them.
    let team_orgs: Api<LeenOrganization> = Api::namespaced(e.client.clone(), "team-a");
    wait_org(&team_orgs, "acme", "Ready, one connection", |o| {
        org_ready(o.status.as_ref()).as_deref() == Some("True/Synced")
            && o.status.as_ref().is_some_and(|s| s.connections == 1)
            && o.finalizers().iter().any(|f| f == ORGANIZATION_FINALIZER)
    })
    .await;
    let acme = team_orgs.get("acme").await.expect("acme");
    let name = acme.status.and_then(|s| s.organization_name);
    assert_eq!(
        name,
        Some(format!("Organization {}", &org_a.to_string()[..8]))
    );
    wait_org(&clusters, "shared", "Ready, used by team-c only", |o| {
        org_ready(o.status.as_ref()).as_deref() == Some("True/Synced")
            && o.status
                .as_ref()
                .is_some_and(|s| s.connections == 1 && s.namespaces == ["team-c"])
    })
    .await;
    let listed = e.cp.kubectl(&["get", "leenorg", "-A"]);
    for column in ["ORGANIZATION", "REGION", "READY", "CONNECTIONS"] {
        assert!(listed.contains(column), "{listed}");
    }
    assert!(listed.contains(&org_a.to_string()), "{listed}");

    // Labelling team-d's namespace lets it in, at its next look.
    Api::<Namespace>::all(e.client.clone())
        .patch(
            "team-d",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"labels": {"leen.dev/tenant": "shared"}}}),
            ),
        )
        .await
        .expect("namespace labelled");
    // The selector is read at each look: a spec touch brings one now.
    api("team-d")
        .patch(
            "web3",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"syncInterval": "5s"}})),
        )
        .await
        .expect("touched");
    wait_for(&api("team-d"), "web3", "Ready=True", is_ready).await;
    assert_eq!(keys_for(&e, conn_d), ["key-shared"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_organization_in_use_waits_for_its_connections() {
    let e = scenario("orgdel", &[]).await;
    let (org, id) = e.seeded();
    e.fake.add_api_key("team-key");
    secret(&e.client, "orgdel", "team-key", "apiKey", "team-key").await;
    team_organization(&e.client, "orgdel", "acme", org, "team-key").await;
    e.create(through("web", "LeenOrganization", "acme", id))
        .await;
    wait_for(&e.api, "web", "Ready=True", is_ready).await;
    let orgs: Api<LeenOrganization> = Api::namespaced(e.client.clone(), "orgdel");
    wait_org(&orgs, "acme", "the in-use finalizer", |o| {
        o.finalizers().iter().any(|f| f == ORGANIZATION_FINALIZER)
    })
    .await;

    // Its key Secret is protected while the organization has users.
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), "orgdel");
    wait_protected(&secrets, "team-key").await;

    // A prune takes the organization and its Secret along.
    orgs.delete("acme", &DeleteParams::default())
        .await
        .expect("delete accepted");
    secrets
        .delete("team-key", &DeleteParams::default())
        .await
        .expect("delete accepted");
    wait_org(&orgs, "acme", "InUse, naming its user", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.ready())
            .is_some_and(|c| c.reason == "InUse" && c.message.contains("orgdel/web"))
    })
    .await;
    consistently(
        "the organization waits while its connection lives",
        std::time::Duration::from_secs(2),
        async || orgs.get_opt("acme").await.ok().flatten().is_some(),
    )
    .await;

    // A newcomer does not start on an organization being deleted.
    let (_, late) = e.seeded();
    e.create(through("late", "LeenOrganization", "acme", late))
        .await;
    let refused = wait_for(&e.api, "late", "refused", |o| {
        ready_reason(o).as_deref() == Some("CredentialsMissing")
    })
    .await;
    assert!(
        ready_message(&refused).contains("LeenOrganization acme is being deleted"),
        "{}",
        ready_message(&refused)
    );
    assert_eq!(e.fake.count("GET", late), 0);
    e.set_policy("late", "Orphan").await;
    delete(&e.api, "late").await;
    wait_gone(&e.api, "late").await;

    // The connection's deletion still has its key; then the organization goes.
    delete(&e.api, "web").await;
    wait_gone(&e.api, "web").await;
    assert!(!e.fake.has_connection(org, id));
    let deletes: Vec<_> = e
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.connection_id == id.to_string())
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].api_key.as_deref(), Some("team-key"));
    eventually("the organization is gone", async || {
        matches!(orgs.get_opt("acme").await, Ok(None))
    })
    .await;
    wait_secret_gone(&secrets, "team-key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_its_owner_did_not_mark_is_never_read() {
    let e = scenario("consent", &[]).await;
    let (org, id) = e.seeded();
    e.fake.add_api_key("team-key");
    // An API key Secret without the label, and a credentials Secret marked for credentials
    // named as the key: neither is used.
    typed_secret(&e.client, "consent", "plain", "apiKey", "team-key", None).await;
    credentials_secret(&e.client, "consent", "creds", "apiKey", "team-key").await;
    let mut obj = connection("c", org, id);
    obj.spec.api_key_secret_ref = serde_json::from_value(serde_json::json!({"name": "plain"})).ok();
    e.create(obj).await;
    let held = wait_for(&e.api, "c", "CredentialsMissing", |o| {
        ready_reason(o).as_deref() == Some("CredentialsMissing")
    })
    .await;
    let message = ready_message(&held);
    assert!(
        message.contains("is not marked for the operator"),
        "{message}"
    );
    assert!(
        message.contains("kubectl label secret -n consent plain leen.dev/secret-type=api-key"),
        "{message}"
    );
    e.api
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"apiKeySecretRef": {"name": "creds"}}})),
        )
        .await
        .expect("spec patched");
    let wrong = wait_for(&e.api, "c", "the wrong use refused", |o| {
        ready_message(o).contains("not api-key")
    })
    .await;
    assert_eq!(ready_reason(&wrong).as_deref(), Some("CredentialsMissing"));
    assert!(keys_for(&e, id).is_empty(), "no call carried the key");

    // The owner's label is the consent: the Secret is read at once.
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), "consent");
    secrets
        .patch(
            "plain",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"labels": {"leen.dev/secret-type": "api-key"}}}),
            ),
        )
        .await
        .expect("labelled");
    e.api
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"apiKeySecretRef": {"name": "plain"}}})),
        )
        .await
        .expect("spec patched");
    wait_for(&e.api, "c", "Ready=True", is_ready).await;
    assert_eq!(keys_for(&e, id), ["team-key"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_of_listed_namespaces_serves_no_cluster_organization() {
    let e = scenario("team-x", &[("WATCH_NAMESPACE", "team-x,team-y")]).await;
    e.cp.namespace("team-y").await;
    let (org, id) = e.seeded();
    e.fake.add_api_key("x-key");
    secret(&e.client, "team-x", "x-key", "apiKey", "x-key").await;
    team_organization(&e.client, "team-x", "acme", org, "x-key").await;
    e.create(through("own", "LeenOrganization", "acme", id))
        .await;
    wait_for(&e.api, "own", "Ready=True", is_ready).await;
    let (_, other) = e.seeded();
    e.create(through(
        "platform",
        "ClusterLeenOrganization",
        "shared",
        other,
    ))
    .await;
    let refused = wait_for(&e.api, "platform", "CredentialsMissing", |o| {
        ready_reason(o).as_deref() == Some("CredentialsMissing")
    })
    .await;
    assert!(
        ready_message(&refused).contains("serves no ClusterLeenOrganization"),
        "{}",
        ready_message(&refused)
    );
    assert!(keys_for(&e, other).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_pointed_at_another_organization_is_refused_and_never_called_there() {
    let e = scenario("moved", &[]).await;
    let (org, id) = e.seeded();
    let other = Uuid::new_v4();
    e.fake.add_organization(other);
    e.fake.add_api_key("team-key");
    secret(&e.client, "moved", "team-key", "apiKey", "team-key").await;
    team_organization(&e.client, "moved", "first", org, "team-key").await;
    team_organization(&e.client, "moved", "second", other, "team-key").await;
    e.create(through("web", "LeenOrganization", "first", id))
        .await;
    wait_for(&e.api, "web", "Ready=True", is_ready).await;
    e.api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"organizationRef": {"kind": "LeenOrganization", "name": "second"}}})),
        )
        .await
        .expect("spec patched");
    let refused = wait_for(&e.api, "web", "ImmutableFieldChanged", |o| {
        ready_reason(o).as_deref() == Some("ImmutableFieldChanged")
    })
    .await;
    assert!(
        ready_message(&refused).contains(&other.to_string()),
        "{}",
        ready_message(&refused)
    );
    // Deleting it now deletes nothing anywhere: the organization it resolves to is not
    // the one it is bound to.
    delete(&e.api, "web").await;
    let held = wait_for(&e.api, "web", "the deletion refused", |o| {
        o.metadata.deletion_timestamp.is_some()
            && ready_reason(o).as_deref() == Some("ImmutableFieldChanged")
    })
    .await;
    assert!(has_finalizer(&held));
    assert!(
        e.fake
            .requests()
            .iter()
            .all(|r| r.organization_id != other.to_string() || r.operation == "organization"),
        "no connection call went to the other organization"
    );
    assert!(e.fake.has_connection(org, id), "nor was it deleted");
}
