//! The cluster tier: the operator the way users run it. The image `hack/image.sh` builds
//! is imported into a real node's containerd (`../shared/envtest/node`), the chart is
//! installed with `helm install` as the README says (CRD included), its pods become Ready
//! through the chart's own probes and run with the chart's service account and RBAC, and
//! they reach a fake Leen over https, trusting its test CA through `leen.ca.configMap`.
//! Needs root; about a minute.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use leen_operator::resource::LeenConnection;
use support::{
    node::*,
    readme::{self, README},
    *,
};

const KEY: &str = "cluster-key";

fn helm() -> String {
    std::env::var("HELM").unwrap_or_else(|_| "helm".into())
}

/// Waits until `n` operator pods are Ready, and returns their names.
async fn ready_pods(pods: &Api<Pod>, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=leen-operator"))
            .await
            .expect("pods list");
        let ready: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        if ready.len() == n {
            return ready;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} operator pods Ready: {:?}",
            ready.len(),
            list.items
                .iter()
                .map(|p| (
                    p.metadata.name.clone(),
                    p.status.as_ref().and_then(|s| s.phase.clone())
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Two replicas of the chart's pods on a real node: Ready through their probes, one leader;
/// a LeenConnection is read over https and deleted through the pod with exactly one DELETE
/// and its status recorded before the finalizer goes; deleting the leader pod while
/// deletions are pending hands over to the other pod with nothing lost or done twice;
/// `helm upgrade` to a new tag (a rolling update) with deletions and a slow create pending
/// sends one DELETE each and one POST;
/// `kubectl delete namespace` with the key Secret inside finishes through the real
/// namespace controller after every connection is deleted in Leen; and `helm uninstall`
/// keeps the CRD and the LeenConnections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_pods_run_the_operator_on_a_real_node() {
    let (image, built) = operator_image();
    let node = Node::up();
    // Both come from a registry, as for users elsewhere: the image pushed there and
    // pulled by the node's containerd (not imported), the chart packaged, pushed as an
    // OCI artifact and installed from it.
    let registry = node.registry();
    let (repository, tag) = built.rsplit_once(':').expect("image reference");
    let repository = repository.split_once('/').map_or(repository, |(_, r)| r);
    let reference = registry.push_image(&image, repository, tag);
    let leen = node.fake_leen();
    leen.fake.add_api_key(KEY);
    let client = node.client().await;

    node.run("kubectl", &["create", "namespace", "leen-system"]);
    let ca_file = node.dir().join("leen-ca.pem");
    std::fs::write(&ca_file, &leen.ca_pem).expect("CA written");
    let from_file = format!("--from-file=ca.crt={}", ca_file.to_string_lossy());
    node.run(
        "kubectl",
        &[
            "create",
            "configmap",
            "leen-ca",
            "-n",
            "leen-system",
            &from_file,
        ],
    );
    let (repository, tag) = reference.rsplit_once(':').expect("image reference");
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/leen-operator");
    let packaged = node.dir().join("charts");
    let out = node.run(
        &helm(),
        &["package", chart, "-d", packaged.to_str().expect("path")],
    );
    let package = out
        .split_whitespace()
        .last()
        .expect("helm package names the file")
        .to_string();
    let charts = format!("oci://{}/charts", registry.pushed_to);
    node.run(&helm(), &["push", &package, &charts, "--plain-http"]);
    let version = package
        .rsplit_once("leen-operator-")
        .and_then(|(_, v)| v.strip_suffix(".tgz"))
        .expect("the package's version")
        .to_string();
    let started = Instant::now();
    node.run(
        &helm(),
        &[
            "install",
            "leen-operator",
            &format!("{charts}/leen-operator"),
            "--version",
            &version,
            "--plain-http",
            "-n",
            "leen-system",
            "--set",
            &format!("image.repository={repository}"),
            "--set",
            &format!("image.tag={tag}"),
            "--set",
            &format!("leen.endpoint={}", leen.endpoint),
            "--set",
            "leen.ca.configMap=leen-ca",
            "--set",
            &format!("leen.apiKey={KEY}"),
            "--set",
            "leen.defaultKeyNamespaces={apps}",
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=true",
            "--wait",
            "--timeout",
            "3m",
        ],
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "leen-system");
    let names = ready_pods(&pods, 2).await;
    println!("helm install -> 2 pods Ready: {:?}", started.elapsed());

    node.run("kubectl", &["create", "namespace", "apps"]);
    let api: Api<LeenConnection> = Api::namespaced(client.clone(), "apps");
    let (org, id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    leen.fake.add_connection(org, id, "CrowdStrike");
    api.create(&PostParams::default(), &connection("one", org, id))
        .await
        .expect("created");
    wait_for(&api, "one", "Ready=True over https from the pod", is_ready).await;
    let versions = record_versions(api.clone(), "one");
    delete(&api, "one").await;
    wait_gone(&api, "one").await;
    let versions = versions.await.expect("watch");
    assert_eq!(
        leen.fake.count_method("DELETE"),
        1,
        "{:?}",
        leen.fake.requests()
    );
    assert!(
        versions.iter().any(|o| has_finalizer(o)
            && o.status
                .as_ref()
                .and_then(|s| s.deletion.as_ref())
                .and_then(|d| d.outcome.as_deref())
                == Some("Deleted")),
        "the status said Deleted while the finalizer was still there"
    );

    // The leader goes while deletions are pending (Leen answers slowly): the other pod
    // takes over, every connection is deleted exactly once.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "leen-system");
    let leader = leases
        .get("leen-operator")
        .await
        .expect("leader Lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a leader");
    assert!(names.contains(&leader), "{leader} is one of {names:?}");
    let mut ids = Vec::new();
    for i in 0..6 {
        let (org, id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        leen.fake.add_connection(org, id, "CrowdStrike");
        api.create(
            &PostParams::default(),
            &connection(&format!("c{i}"), org, id),
        )
        .await
        .expect("created");
        ids.push((org, id));
    }
    for i in 0..6 {
        wait_for(&api, &format!("c{i}"), "Ready=True", is_ready).await;
    }
    leen.fake.set_latency(Duration::from_millis(1500));
    for i in 0..6 {
        delete(&api, &format!("c{i}")).await;
    }
    pods.delete(&leader, &DeleteParams::default())
        .await
        .expect("leader pod deleted");
    for i in 0..6 {
        wait_gone(&api, &format!("c{i}")).await;
    }
    for (org, id) in &ids {
        assert!(!leen.fake.has_connection(*org, *id), "{id} deleted in Leen");
    }
    let deletes = leen.fake.count_method("DELETE");
    assert_eq!(
        deletes,
        7,
        "one DELETE per connection across the handover: {:?}",
        leen.fake.requests()
    );
    leen.fake.set_latency(Duration::ZERO);

    // `helm upgrade` to a new image tag, a rolling update (leader election on), while
    // deletions and a slow create are pending: one DELETE each, one POST.
    let next = format!("{repository}:next");
    node.ctr_images(&["tag", &reference, &next]);
    let mut pending = Vec::new();
    for i in 0..4 {
        let (org, id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        leen.fake.add_connection(org, id, "CrowdStrike");
        api.create(
            &PostParams::default(),
            &connection(&format!("u{i}"), org, id),
        )
        .await
        .expect("created");
        pending.push((org, id));
    }
    for i in 0..4 {
        wait_for(&api, &format!("u{i}"), "Ready=True", is_ready).await;
    }
    credentials_secret(&client, "apps", "creds", "token", "t").await;
    let created_org = uuid::Uuid::new_v4();
    let slow: LeenConnection = LeenConnection::new(
        "slow",
        serde_json::from_value(serde_json::json!({
            "organizationId": created_org.to_string(),
            "vendor": "SNYK",
            "credentialsSecretRef": {"name": "creds"},
        }))
        .expect("spec"),
    );
    let deletes_before = leen.fake.count_method("DELETE");
    leen.fake.set_latency(Duration::from_millis(1500));
    leen.fake.set_create_delay(Duration::from_secs(4));
    api.create(&PostParams::default(), &slow)
        .await
        .expect("created");
    for i in 0..4 {
        delete(&api, &format!("u{i}")).await;
    }
    node.run(
        &helm(),
        &[
            "upgrade",
            "leen-operator",
            chart,
            "-n",
            "leen-system",
            "--reuse-values",
            "--set",
            "image.tag=next",
            "--wait",
            "--timeout",
            "3m",
        ],
    );
    for i in 0..4 {
        wait_gone(&api, &format!("u{i}")).await;
    }
    let slow = wait_for(&api, "slow", "the slow create Ready", is_ready).await;
    leen.fake.set_latency(Duration::ZERO);
    leen.fake.set_create_delay(Duration::ZERO);
    for (org, id) in &pending {
        assert!(!leen.fake.has_connection(*org, *id), "{id} deleted in Leen");
    }
    assert_eq!(
        leen.fake.count_method("DELETE") - deletes_before,
        4,
        "one DELETE each across the rollout: {:?}",
        leen.fake.requests()
    );
    assert_eq!(leen.fake.count_operation("create"), 1, "one POST");
    let identifier = format!(
        "apps/slow/{}",
        slow.metadata.uid.clone().unwrap_or_default()
    );
    assert_eq!(
        leen.fake.with_identifier(created_org, &identifier).len(),
        1,
        "one connection for the created resource"
    );
    let images: Vec<String> = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=leen-operator"))
        .await
        .expect("pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
        .collect();
    assert!(images.iter().all(|i| i == &next), "{images:?}");
    // Delete the created one while the operator still runs.
    delete(&api, "slow").await;
    wait_gone(&api, "slow").await;

    // `kubectl delete namespace` of a namespace holding LeenConnections and their key
    // Secret: the real namespace controller deletes both at once; every connection is
    // deleted in Leen (the Secret stays readable until then) before the namespace goes.
    node.run("kubectl", &["create", "namespace", "team"]);
    let team_key = "team-key-value";
    leen.fake.add_api_key(team_key);
    secret(&client, "team", "team-key", "apiKey", team_key).await;
    let team: Api<LeenConnection> = Api::namespaced(client.clone(), "team");
    let mut team_ids = Vec::new();
    for i in 0..3 {
        let (org, id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        leen.fake.add_connection(org, id, "CrowdStrike");
        let mut obj = connection(&format!("t{i}"), org, id);
        obj.spec.api_key_secret_ref =
            serde_json::from_value(serde_json::json!({ "name": "team-key" })).ok();
        team.create(&PostParams::default(), &obj)
            .await
            .expect("created");
        team_ids.push((org, id));
    }
    for i in 0..3 {
        wait_for(
            &team,
            &format!("t{i}"),
            "Ready=True with the team's key",
            is_ready,
        )
        .await;
    }
    let deletes_before = leen.fake.count_method("DELETE");
    node.run("kubectl", &["delete", "namespace", "team", "--wait=false"]);
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    eventually(
        "the namespace controller finishes the namespace",
        async || namespaces.get_opt("team").await.ok().flatten().is_none(),
    )
    .await;
    for (org, id) in &team_ids {
        assert!(!leen.fake.has_connection(*org, *id), "{id} deleted in Leen");
    }
    assert_eq!(
        leen.fake.count_method("DELETE") - deletes_before,
        3,
        "{:?}",
        leen.fake.requests()
    );

    // The operator's RBAC is the chart's own, through the pod's real service-account
    // token: a permission taken away shows as a clear error in the pods' logs (naming
    // the verb and the resource), not as silence, and the resource waits, finalizer on,
    // until the permission is back.
    let role = node.run(
        "kubectl",
        &[
            "get",
            "clusterrole",
            "-l",
            "app.kubernetes.io/instance=leen-operator",
            "-o",
            "name",
        ],
    );
    let role = role.trim().to_string();
    assert!(role.starts_with("clusterrole"), "{role}");
    let status_rule =
        r#"{"apiGroups":["leen.dev"],"resources":["leenconnections/status"],"verbs":["patch"]}"#;
    let patch_role =
        |ops: &str| node.run("kubectl", &["patch", &role, "--type", "json", "-p", ops]);
    patch_role(
        r#"[{"op":"test","path":"/rules/1/resources/0","value":"leenconnections/status"},{"op":"remove","path":"/rules/1"}]"#,
    );
    let (org, id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    leen.fake.add_connection(org, id, "CrowdStrike");
    api.create(&PostParams::default(), &connection("denied", org, id))
        .await
        .expect("created");
    // The leader's log (the pod that reconciles; an old pod of the rollout may be gone).
    let leader = leases
        .get("leen-operator")
        .await
        .expect("leader Lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a leader");
    let logs = || node.run("kubectl", &["logs", "-n", "leen-system", &leader]);
    // (JSON logs: the API server's quotes arrive escaped.)
    let deadline = Instant::now() + WAIT;
    loop {
        let text = logs();
        if text.contains("forbidden")
            && text.contains("cannot patch resource")
            && text.contains("leenconnections/status")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no forbidden status write in the pods' logs:\n{}",
            text.lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let denied = api.get("denied").await.expect("read");
    assert!(
        has_finalizer(&denied),
        "the finalizer went on before the status write"
    );
    patch_role(&format!(
        r#"[{{"op":"add","path":"/rules/1","value":{status_rule}}}]"#
    ));
    wait_for(
        &api,
        "denied",
        "Ready=True once the permission is back",
        is_ready,
    )
    .await;
    delete(&api, "denied").await;
    wait_gone(&api, "denied").await;

    // helm uninstall keeps the CRD and every LeenConnection.
    let (org, id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    leen.fake.add_connection(org, id, "CrowdStrike");
    api.create(&PostParams::default(), &connection("kept", org, id))
        .await
        .expect("created");
    wait_for(&api, "kept", "Ready=True", is_ready).await;
    node.run(
        &helm(),
        &["uninstall", "leen-operator", "-n", "leen-system", "--wait"],
    );
    let kept = api.get("kept").await.expect("the LeenConnection is kept");
    assert!(has_finalizer(&kept));
    assert!(leen.fake.has_connection(org, id));
}

/// `hack/demo-cluster.sh` (README, "Run it locally"), as written: its own node, the image,
/// the chart's pod, the fake Leen over https; it shows the pod Running, the example Ready,
/// the `Deleted` Event and Leen's DELETE answered 200.
#[test]
fn the_cluster_demo_runs_as_written() {
    let out = readme::run(&readme::shell(README, "demo-cluster"), &[]);
    let has = |pred: &dyn Fn(&str) -> bool, what: &str| {
        assert!(
            out.lines().any(pred),
            "no {what} in the demo's output:\n{out}"
        );
    };
    has(
        &|l| l.starts_with("leen-operator-") && l.contains("1/1") && l.contains("Running"),
        "Running operator pod",
    );
    has(
        &|l| l.starts_with("crowdstrike-prod") && l.contains("True") && l.contains("Synced"),
        "Ready row",
    );
    has(&|l| l.starts_with("Normal\tDeleted\t"), "Deleted Event");
    has(
        &|l| l.contains("\"method\":\"DELETE\"") && l.contains("\"status\":200"),
        "DELETE answered 200",
    );
    assert!(!out.contains("demo-key"), "the key is never shown:\n{out}");
}
