//! The Helm chart, checked with the real helm binary (`$HELM`, or `helm` on PATH; CI gets
//! it with `hack/get-helm.sh`), and its manifests and RBAC against a real API server.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use fake_leen::FakeLeen;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Pod, Secret},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use leen_operator::{organization::LeenOrganization, resource::LeenConnection};
use serde_yaml::Value;
use support::{
    readme::{self, CHART_README},
    *,
};
use uuid::Uuid;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/leen-operator");

/// The real helm binary: `HELM`, else on `PATH`; absent, the test fails saying how to get it.
fn helm_bin() -> PathBuf {
    if let Some(h) = std::env::var_os("HELM") {
        return PathBuf::from(h);
    }
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("helm"))
            .find(|h| h.is_file())
    });
    on_path.unwrap_or_else(|| panic!("helm not found: run `export HELM=$(hack/get-helm.sh)`"))
}

/// `helm template` with `--set` values; Err holds helm's stderr.
fn render(helm: &Path, extra: &[&str]) -> Result<String, String> {
    let out = Command::new(helm)
        .args(["template", "leen", CHART, "--namespace", "leen-system"])
        .args(extra)
        .output()
        .expect("helm runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn set(helm: &Path, sets: &[&str]) -> Vec<Value> {
    let mut args = Vec::new();
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let yaml = render(helm, &args).unwrap_or_else(|e| panic!("render {sets:?}: {e}"));
    docs(&yaml)
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn kinds(objs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objs
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or("").to_string())
        .collect();
    k.sort();
    k
}

fn find<'a>(objs: &'a [Value], kind: &str) -> Option<&'a Value> {
    objs.iter().find(|o| o["kind"].as_str() == Some(kind))
}

fn env_var<'a>(deploy: &'a Value, name: &str) -> Option<&'a Value> {
    deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

#[test]
fn lint_strict_passes() {
    let helm = helm_bin();
    let out = Command::new(&helm)
        .args(["lint", "--strict", CHART])
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn defaults_render_a_restricted_cluster_wide_install() {
    let helm = helm_bin();
    let objs = set(&helm, &[]);
    assert_eq!(
        kinds(&objs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let deploy = find(&objs, "Deployment").expect("deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"],
        Value::Bool(true)
    );
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"],
        Value::Bool(false)
    );
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["image"], "ghcr.io/leen-operator/leen-operator:0.1.0");
    assert!(
        env_var(deploy, "LEEN_API_KEY").is_none(),
        "no key configured"
    );
    assert_eq!(
        env_var(deploy, "LEEN_LEADER_ELECTION").expect("env")["value"],
        "true"
    );
    let sa = find(&objs, "ServiceAccount").expect("sa");
    assert_eq!(sa["automountServiceAccountToken"], Value::Bool(false));
    let crd = find(&objs, "CustomResourceDefinition").expect("crd");
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
}

#[test]
fn chart_crds_are_identical_to_crds_dir() {
    let helm = helm_bin();
    let objs = set(&helm, &[]);
    let rendered: Vec<&Value> = objs
        .iter()
        .filter(|o| o["kind"].as_str() == Some("CustomResourceDefinition"))
        .collect();
    let files = [
        "leenconnection.yaml",
        "leenorganization.yaml",
        "clusterleenorganization.yaml",
    ];
    assert_eq!(rendered.len(), files.len(), "one CRD per file of crds/");
    for (rendered, f) in rendered.into_iter().zip(files) {
        let mut rendered = rendered.clone();
        let path = format!("{}/crds/{f}", env!("CARGO_MANIFEST_DIR"));
        let file: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).expect("crd file")).expect("yaml");
        // The chart adds only its labels and the keep annotation; helm's YAML round trip
        // writes 0.0 as 0, which is the same number.
        if let Some(meta) = rendered["metadata"].as_mapping_mut() {
            meta.remove("labels");
            meta.remove("annotations");
        }
        assert_eq!(normalize(rendered), normalize(file), "{f}");
    }
}

fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && n.as_i64().is_none() && n.as_u64().is_none() => {
                Value::Number((f as i64).into())
            }
            _ => Value::Number(n),
        },
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(normalize).collect()),
        Value::Mapping(m) => {
            Value::Mapping(m.into_iter().map(|(k, v)| (k, normalize(v))).collect())
        }
        other => other,
    }
}

#[test]
fn rbac_is_least_privilege() {
    let helm = helm_bin();
    let objs = set(&helm, &[]);
    let role = find(&objs, "ClusterRole").expect("cluster role");
    let rules: Vec<(String, String, String)> = role["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .map(|r| {
            let join = |k: &str| {
                r[k].as_sequence()
                    .map(|s| {
                        s.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default()
            };
            (join("apiGroups"), join("resources"), join("verbs"))
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("leen.dev", "leenconnections", "get,list,watch,patch"),
        ("leen.dev", "leenconnections/status", "patch"),
        ("leen.dev", "leenconnections/finalizers", "update"),
        (
            "leen.dev",
            "leenorganizations,clusterleenorganizations",
            "get,list,watch,patch",
        ),
        (
            "leen.dev",
            "leenorganizations/status,clusterleenorganizations/status",
            "patch",
        ),
        (
            "leen.dev",
            "leenorganizations/finalizers,clusterleenorganizations/finalizers",
            "update",
        ),
        ("", "namespaces", "get"),
        ("", "secrets", "get,list,watch,patch"),
        ("events.k8s.io", "events", "create,patch"),
    ]
    .iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .collect();
    assert_eq!(rules, expected, "exactly what the controller uses");
    let lease_role = objs
        .iter()
        .find(|o| {
            o["kind"] == "Role"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("leader-election"))
        })
        .expect("lease role");
    assert_eq!(lease_role["metadata"]["namespace"], "leen-system");
    let budget_role = objs
        .iter()
        .find(|o| {
            o["kind"] == "Role"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("deletion-budget"))
        })
        .expect("deletion budget role");
    assert_eq!(budget_role["metadata"]["namespace"], "leen-system");
    assert_eq!(
        budget_role["rules"][1]["resourceNames"][0].as_str(),
        Some("leen-leen-operator-deletion-budget")
    );
}

#[test]
fn deletion_budget_values_reach_the_operator() {
    let helm = helm_bin();
    let deploy_env = |sets: &[&str]| {
        let objs = set(&helm, sets);
        let deploy = find(&objs, "Deployment").expect("deployment").clone();
        [
            "LEEN_MAX_DELETIONS",
            "LEEN_DELETION_WINDOW",
            "LEEN_RESUME_HELD_DELETIONS",
        ]
        .map(|n| {
            env_var(&deploy, n).expect("env")["value"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_default()
        })
    };
    assert_eq!(deploy_env(&[]), ["25", "10m", "false"]);
    assert_eq!(
        deploy_env(&[
            "deletionBudget.maxDeletions=5",
            "deletionBudget.window=1h",
            "deletionBudget.resumeHeld=true"
        ]),
        ["5", "1h", "true"]
    );
}

#[test]
fn watch_namespace_uses_a_namespaced_role() {
    let helm = helm_bin();
    let objs = set(&helm, &["watchNamespace=apps"]);
    assert!(find(&objs, "ClusterRole").is_none());
    assert!(find(&objs, "ClusterRoleBinding").is_none());
    let roles: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "Role").collect();
    assert!(roles.iter().any(|r| r["metadata"]["namespace"] == "apps"));
    let deploy = find(&objs, "Deployment").expect("deployment");
    assert_eq!(
        env_var(deploy, "WATCH_NAMESPACE").expect("env")["value"],
        "apps"
    );
}

#[test]
fn api_key_value_creates_a_secret_and_existing_secret_is_referenced() {
    let helm = helm_bin();
    let objs = set(&helm, &["leen.apiKey=s3cr3t"]);
    let secret = find(&objs, "Secret").expect("secret");
    assert_eq!(secret["data"]["apiKey"], "czNjcjN0");
    let deploy = find(&objs, "Deployment").expect("deployment");
    let key = &env_var(deploy, "LEEN_API_KEY").expect("env")["valueFrom"]["secretKeyRef"];
    assert_eq!(key["name"], "leen-leen-operator");
    assert!(
        !serde_yaml::to_string(deploy)
            .expect("yaml")
            .contains("s3cr3t")
    );

    let objs = set(
        &helm,
        &["leen.existingSecret=mine", "leen.existingSecretKey=token"],
    );
    assert!(find(&objs, "Secret").is_none());
    let deploy = find(&objs, "Deployment").expect("deployment");
    let key = &env_var(deploy, "LEEN_API_KEY").expect("env")["valueFrom"]["secretKeyRef"];
    assert_eq!(
        (key["name"].as_str(), key["key"].as_str()),
        (Some("mine"), Some("token"))
    );
}

#[test]
fn optional_objects_render_when_enabled() {
    let helm = helm_bin();
    let objs = set(
        &helm,
        &[
            "metrics.serviceMonitor.enabled=true",
            "podDisruptionBudget.enabled=true",
            "networkPolicy.enabled=true",
            "replicaCount=2",
        ],
    );
    assert!(find(&objs, "ServiceMonitor").is_some());
    assert_eq!(
        find(&objs, "PodDisruptionBudget").expect("pdb")["apiVersion"],
        "policy/v1"
    );
    let np = find(&objs, "NetworkPolicy").expect("netpol");
    assert_eq!(np["spec"]["egress"].as_sequence().map(Vec::len), Some(3));
    assert_eq!(find(&objs, "Deployment").expect("d")["spec"]["replicas"], 2);
}

#[test]
fn other_options_change_the_output() {
    let helm = helm_bin();
    let objs = set(&helm, &["crds.install=false"]);
    assert!(find(&objs, "CustomResourceDefinition").is_none());
    let objs = set(&helm, &["crds.keep=false"]);
    let crd = find(&objs, "CustomResourceDefinition").expect("crd");
    assert!(
        crd["metadata"]["annotations"]
            .get("helm.sh/resource-policy")
            .is_none()
    );
    let digest = format!("image.digest=sha256:{}", "a".repeat(64));
    let objs = set(&helm, &[&digest]);
    let image = find(&objs, "Deployment").expect("d")["spec"]["template"]["spec"]["containers"][0]
        ["image"]
        .clone();
    assert_eq!(
        image.as_str(),
        Some(
            format!(
                "ghcr.io/leen-operator/leen-operator@sha256:{}",
                "a".repeat(64)
            )
            .as_str()
        )
    );
    let objs = set(&helm, &["leaderElection.enabled=false"]);
    let roles: Vec<&str> = objs
        .iter()
        .filter(|o| o["kind"] == "Role")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    assert_eq!(roles, ["leen-leen-operator-deletion-budget"]);
    let objs = set(
        &helm,
        &[
            "leaderElection.enabled=false",
            "deletionBudget.maxDeletions=0",
        ],
    );
    assert!(!objs.iter().any(|o| o["kind"] == "Role"));
    let objs = set(
        &helm,
        &[
            "leen.endpoint=https://proxy.example.com/v1",
            "leen.defaultKeyNamespaces={apps,security}",
        ],
    );
    let deploy = find(&objs, "Deployment").expect("d");
    assert_eq!(
        env_var(deploy, "LEEN_ENDPOINT").expect("env")["value"],
        "https://proxy.example.com/v1"
    );
    assert_eq!(
        env_var(deploy, "LEEN_DEFAULT_KEY_NAMESPACES").expect("env")["value"],
        "apps,security"
    );
    // Against a 1.20 API server the PDB uses the API that server has.
    let yaml = render(
        &helm,
        &[
            "--set",
            "podDisruptionBudget.enabled=true",
            "--kube-version",
            "v1.20.2",
        ],
    )
    .expect("render");
    assert_eq!(
        find(&docs(&yaml), "PodDisruptionBudget").expect("pdb")["apiVersion"],
        "policy/v1beta1"
    );
}

/// Each of these is refused by values.schema.json (or the chart's own checks).
fn rejected(sets: &[&str], expect: &str) {
    let helm = helm_bin();
    let mut args = Vec::new();
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let err = render(&helm, &args).expect_err("must be rejected");
    assert!(err.contains(expect), "{sets:?}: {err}");
}

#[test]
fn rejects_unknown_top_level_key() {
    rejected(
        &["replicas=2"],
        "additional properties 'replicas' not allowed",
    );
}

#[test]
fn rejects_string_replica_count() {
    rejected(&["replicaCount=two"], "/replicaCount");
}

#[test]
fn rejects_bad_pull_policy() {
    rejected(&["image.pullPolicy=Sometimes"], "/image/pullPolicy");
}

#[test]
fn rejects_bad_log_format() {
    rejected(&["logging.format=xml"], "/logging/format");
}

#[test]
fn rejects_plain_http_endpoint() {
    rejected(
        &["leen.endpoint=http://leen.example.com/v1"],
        "/leen/endpoint",
    );
}

#[test]
fn rejects_bad_duration() {
    rejected(&["leen.syncInterval=often"], "/leen/syncInterval");
}

#[test]
fn rejects_bad_watch_namespace() {
    rejected(&["watchNamespace=Not_A_Namespace"], "/watchNamespace");
}

#[test]
fn rejects_unknown_nested_key() {
    rejected(
        &["leen.apikey=typo"],
        "additional properties 'apikey' not allowed",
    );
}

#[test]
fn rejects_replicas_without_leader_election() {
    rejected(
        &["replicaCount=3", "leaderElection.enabled=false"],
        "needs leaderElection.enabled=true",
    );
}

const SA_TOKEN: &str = "leen-operator-sa-token";

/// The token file line of the chart's ServiceAccount (release `leen` in `leen-system`).
fn sa_user() -> String {
    format!(
        "{SA_TOKEN},system:serviceaccount:leen-system:leen-leen-operator,sa-uid,\"system:serviceaccounts,system:serviceaccounts:leen-system,system:authenticated\""
    )
}

/// The chart's objects are accepted by a real API server, and the operator running with
/// only the chart's RBAC (as the chart's ServiceAccount) completes a lifecycle, while a
/// verb the chart does not grant is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_works_with_only_the_chart_rbac() {
    let helm = helm_bin();
    let sa_user = sa_user();
    let cp = ControlPlane::start_with_tokens(&[&sa_user]).await;
    cp.namespace("leen-system").await;
    cp.namespace("apps").await;
    // Everything the chart renders (the CRD is already installed by the harness; the
    // chart's copy is applied over it), as a 1.20 server sees it.
    let yaml = render(
        &helm,
        &[
            "--kube-version",
            "v1.20.2",
            "--set",
            "podDisruptionBudget.enabled=true",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "leen.apiKey=unused-in-this-test",
        ],
    )
    .expect("render");
    let manifest = cp.dir.path().join("chart.yaml");
    std::fs::write(&manifest, &yaml).expect("write");
    // Client-side apply, as helm does: server-side apply on a pre-1.25 server refuses the
    // CRD's x-kubernetes-validations field it does not know.
    let applied = cp.kubectl(&[
        "apply",
        "--validate=false",
        "-f",
        manifest.to_str().expect("path"),
    ]);
    for kind in [
        "deployment.apps",
        "clusterrole",
        "role",
        "networkpolicy",
        "poddisruptionbudget",
        "customresourcedefinition",
    ] {
        assert!(applied.contains(kind), "{kind} not applied: {applied}");
    }

    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key("tenant-key");
    let admin = cp.client().await;
    secret(&admin, "apps", "leen-key", "apiKey", "tenant-key").await;
    let sa_kubeconfig = cp.dir.path().join("sa.kubeconfig");
    cp.write_kubeconfig("leen-operator", SA_TOKEN, &sa_kubeconfig);
    let endpoint = fake.base_url();
    let op = Operator::start_with_kubeconfig(
        &cp,
        &sa_kubeconfig,
        &[
            ("LEEN_ENDPOINT", endpoint.as_str()),
            ("LEEN_LEADER_ELECTION", "true"),
            ("POD_NAMESPACE", "leen-system"),
            ("POD_NAME", "leen-operator-0"),
            ("LEEN_LEASE_NAME", "leen-leen-operator"),
        ],
    )
    .await;

    let api: Api<LeenConnection> = Api::namespaced(admin.clone(), "apps");
    let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
    fake.add_connection(org, id, "Okta");
    let mut obj = connection("c", org, id);
    obj.spec.api_key_secret_ref =
        serde_json::from_value(serde_json::json!({"name": "leen-key"})).ok();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("created");
    wait_for(&api, "c", "Ready=True", is_ready).await;
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), "apps");
    wait_protected(&admin_secrets, "leen-key").await;
    api.delete("c", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&api, "c").await;
    // No one needs the key any more: the chart's RBAC lets the operator release it.
    wait_secret(&admin_secrets, "leen-key", "the finalizer released", |s| {
        !secret_protected(s)
    })
    .await;
    assert!(!fake.has_connection(org, id));
    assert_eq!(fake.count("DELETE", id), 1);
    assert!(
        !events(&admin, "apps", "Deleted").await.is_empty(),
        "the Deleted Event was recorded with the chart's RBAC"
    );
    let lease: Api<Lease> = Api::namespaced(admin.clone(), "leen-system");
    let held = lease.get("leen-leen-operator").await.expect("lease");
    assert_eq!(
        held.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("leen-operator-0")
    );
    assert!(!op.log_text().contains("forbidden"), "{}", op.log_text());

    // Not broader than needed.
    let sa = cp.client_from(&sa_kubeconfig).await;
    let forbidden = |r: Result<(), kube::Error>, what: &str| match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what} should be forbidden, got {other:?}"),
    };
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), "apps");
    forbidden(
        secrets
            .delete("leen-key", &DeleteParams::default())
            .await
            .map(|_| ()),
        "deleting a Secret",
    );
    let sa_conns: Api<LeenConnection> = Api::namespaced(sa.clone(), "apps");
    forbidden(
        sa_conns
            .create(&PostParams::default(), &connection("x", org, id))
            .await
            .map(|_| ()),
        "creating a LeenConnection",
    );
    forbidden(
        sa_conns
            .delete("x", &DeleteParams::default())
            .await
            .map(|_| ()),
        "deleting a LeenConnection",
    );
    let pods: Api<Pod> = Api::namespaced(sa.clone(), "apps");
    forbidden(
        pods.list(&ListParams::default()).await.map(|_| ()),
        "listing Pods",
    );
    let other_lease: Api<Lease> = Api::namespaced(sa.clone(), "leen-system");
    forbidden(
        other_lease.get("someone-else").await.map(|_| ()),
        "reading another Lease",
    );
    forbidden(
        other_lease
            .delete("leen-leen-operator", &DeleteParams::default())
            .await
            .map(|_| ()),
        "deleting the Lease",
    );
}

/// A namespaced install over a list of two namespaces: the chart renders a Role in each
/// and no ClusterRole; the operator, with only those rights (as the chart's ServiceAccount,
/// WATCH_NAMESPACE as the Deployment sets it), runs a full lifecycle in both with each
/// team's own key, leaves a third namespace's resource alone, and cannot read a Secret
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaced_install_over_two_namespaces_runs_with_roles_only() {
    let helm = helm_bin();
    let sa_user = sa_user();
    let cp = ControlPlane::start_with_tokens(&[&sa_user]).await;
    for ns in ["leen-system", "team-a", "team-b", "team-c"] {
        cp.namespace(ns).await;
    }
    let yaml = render(
        &helm,
        &[
            "--kube-version",
            "v1.20.2",
            "--set",
            "watchNamespace=team-a\\,team-b",
            "--set",
            "leen.apiKey=unused-in-this-test",
        ],
    )
    .expect("render");
    let objs = docs(&yaml);
    assert!(
        find(&objs, "ClusterRole").is_none() && find(&objs, "ClusterRoleBinding").is_none(),
        "no cluster-wide rule: {:?}",
        kinds(&objs)
    );
    let deploy = find(&objs, "Deployment").expect("deployment");
    let watch = env_var(deploy, "WATCH_NAMESPACE").expect("env")["value"]
        .as_str()
        .expect("value")
        .to_string();
    assert_eq!(watch, "team-a,team-b");
    let manifest = cp.dir.path().join("chart.yaml");
    std::fs::write(&manifest, &yaml).expect("write");
    cp.kubectl(&[
        "apply",
        "--validate=false",
        "-f",
        manifest.to_str().expect("path"),
    ]);

    let fake = FakeLeen::start().await.expect("fake");
    let admin = cp.client().await;
    let mut teams = Vec::new();
    for (ns, key) in [
        ("team-a", "key-a"),
        ("team-b", "key-b"),
        ("team-c", "key-c"),
    ] {
        fake.add_api_key(key);
        secret(&admin, ns, "leen-key", "apiKey", key).await;
        let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
        fake.add_connection(org, id, "Okta");
        let mut obj = connection("c", org, id);
        if ns == "team-b" {
            // Team b through its LeenOrganization: the Roles cover organizations too.
            fake.add_organization(org);
            let team: LeenOrganization = serde_json::from_value(serde_json::json!({
                "apiVersion": "leen.dev/v1alpha1",
                "kind": "LeenOrganization",
                "metadata": {"name": "team"},
                "spec": {"organizationId": org.to_string(), "apiKeySecretRef": {"name": "leen-key"}},
            }))
            .expect("organization");
            Api::<LeenOrganization>::namespaced(admin.clone(), ns)
                .create(&PostParams::default(), &team)
                .await
                .expect("organization created");
            obj.spec.organization_id = String::new();
            obj.spec.organization_ref = serde_json::from_value(
                serde_json::json!({"kind": "LeenOrganization", "name": "team"}),
            )
            .ok();
        } else {
            obj.spec.api_key_secret_ref =
                serde_json::from_value(serde_json::json!({"name": "leen-key"})).ok();
        }
        let api: Api<LeenConnection> = Api::namespaced(admin.clone(), ns);
        api.create(&PostParams::default(), &obj)
            .await
            .expect("created");
        teams.push((ns, key, id, api));
    }
    let sa_kubeconfig = cp.dir.path().join("sa.kubeconfig");
    cp.write_kubeconfig("leen-operator", SA_TOKEN, &sa_kubeconfig);
    let endpoint = fake.base_url();
    let op = Operator::start_with_kubeconfig(
        &cp,
        &sa_kubeconfig,
        &[
            ("LEEN_ENDPOINT", endpoint.as_str()),
            ("WATCH_NAMESPACE", watch.as_str()),
            ("POD_NAMESPACE", "leen-system"),
        ],
    )
    .await;
    for (ns, _, _, api) in &teams[..2] {
        wait_for(api, "c", &format!("Ready=True in {ns}"), is_ready).await;
    }
    let orgs: Api<LeenOrganization> = Api::namespaced(admin.clone(), "team-b");
    let org_state = async || {
        let o = orgs.get("team").await.expect("organization");
        let ready = o
            .status
            .as_ref()
            .and_then(|s| s.ready())
            .map(|c| c.status.clone());
        (
            ready,
            o.status.map(|s| s.connections),
            o.metadata.finalizers.unwrap_or_default(),
        )
    };
    eventually(
        "team b's organization Ready, used once, protected",
        async || {
            org_state().await
                == (
                    Some("True".into()),
                    Some(1),
                    vec![leen_operator::organization::ORGANIZATION_FINALIZER.to_string()],
                )
        },
    )
    .await;
    for (_, _, _, api) in &teams[..2] {
        api.delete("c", &DeleteParams::default())
            .await
            .expect("delete");
    }
    for (ns, key, id, api) in &teams[..2] {
        wait_gone(api, "c").await;
        assert_eq!(fake.count("DELETE", *id), 1, "{ns}");
        assert!(
            fake.requests()
                .iter()
                .filter(|r| r.connection_id == id.to_string())
                .all(|r| r.api_key.as_deref() == Some(*key)),
            "{ns}'s calls carry {ns}'s key"
        );
    }
    eventually("team b's organization unused and unprotected", async || {
        org_state().await == (Some("True".into()), Some(0), Vec::new())
    })
    .await;
    // The third namespace is not watched: no finalizer, no status, no call.
    let (_, _, third, api_c) = &teams[2];
    let untouched = api_c.get("c").await.expect("read");
    assert!(untouched.metadata.finalizers.is_none() && untouched.status.is_none());
    assert_eq!(fake.count("GET", *third), 0);
    assert!(!op.log_text().contains("forbidden"), "{}", op.log_text());

    let sa = cp.client_from(&sa_kubeconfig).await;
    let secrets_c: Api<Secret> = Api::namespaced(sa.clone(), "team-c");
    match secrets_c.get("leen-key").await {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("a Secret outside the list must be unreadable, got {other:?}"),
    }
    let all_secrets: Api<Secret> = Api::all(sa);
    match all_secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("listing Secrets cluster-wide must be forbidden, got {other:?}"),
    }
}

/// `leen.ca.configMap` mounts the bundle read-only and passes it as LEEN_CA_FILE; without
/// it nothing is mounted and the system roots alone are trusted. `extraEnv` carries
/// HTTPS_PROXY / NO_PROXY.
#[test]
fn a_ca_config_map_is_mounted_and_passed_as_leen_ca_file() {
    let helm = helm_bin();
    let objs = set(&helm, &[]);
    let deploy = find(&objs, "Deployment").expect("deployment");
    assert!(env_var(deploy, "LEEN_CA_FILE").is_none());
    assert!(deploy["spec"]["template"]["spec"]["volumes"].is_null());

    let objs = set(
        &helm,
        &[
            "leen.ca.configMap=corp-ca",
            "leen.ca.key=bundle.pem",
            "extraEnv[0].name=HTTPS_PROXY",
            "extraEnv[0].value=http://proxy.corp:3128",
        ],
    );
    let deploy = find(&objs, "Deployment").expect("deployment");
    assert_eq!(
        env_var(deploy, "LEEN_CA_FILE").expect("env")["value"].as_str(),
        Some("/etc/leen-ca/bundle.pem")
    );
    assert_eq!(
        env_var(deploy, "HTTPS_PROXY").expect("env")["value"].as_str(),
        Some("http://proxy.corp:3128")
    );
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["configMap"]["name"].as_str(),
        Some("corp-ca")
    );
    assert_eq!(
        pod["volumes"][0]["configMap"]["items"][0]["key"].as_str(),
        Some("bundle.pem")
    );
    let mount = &pod["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["mountPath"].as_str(), Some("/etc/leen-ca"));
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
}

#[test]
fn rejects_a_ca_config_map_that_cannot_be_a_name() {
    rejected(&["leen.ca.configMap=Corp_CA"], "configMap");
}

/// The chart README's install block, as written (`helm install` with the chart's CRD), works on the oldest API
/// server `kubeVersion` claims (1.20, which knows no CEL rules: helm's schema validation and
/// server-side apply refuse `x-kubernetes-validations` there, so the chart leaves them out
/// below 1.25; the operator enforces the same rules itself). `helm uninstall` keeps the CRD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_works_on_a_1_20_api_server() {
    let helm = helm_bin();
    let cp = ControlPlane::start_bare(&[]).await;
    let kubeconfig = cp.kubeconfig.to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let out = Command::new(&helm)
            .args(args)
            .args(["--kubeconfig", &kubeconfig])
            .output()
            .expect("helm runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // The chart README's install block, as written (support::readme).
    readme::run(
        &readme::fill(
            &readme::shell(CHART_README, "install"),
            &[("<your Leen API key>", "unused-in-this-test")],
        ),
        &[("KUBECONFIG", kubeconfig.as_str())],
    );
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(cp.client().await);
    let crd = crds
        .get("leenconnections.leen.dev")
        .await
        .expect("the chart installed the CRD");
    let text = serde_json::to_string(&crd.spec).expect("json");
    assert!(!text.contains("x-kubernetes-validations"), "{text}");
    let (ok, out) = run(&["uninstall", "leen-operator", "-n", "leen-system"]);
    assert!(ok, "helm uninstall failed: {out}");
    assert!(
        crds.get_opt("leenconnections.leen.dev")
            .await
            .expect("read")
            .is_some(),
        "the CRD is kept on uninstall"
    );
}

/// CEL rules are rendered for servers that enforce them, and only there.
#[test]
fn cel_rules_are_rendered_from_1_25_on() {
    let helm = helm_bin();
    for (version, cel) in [
        ("v1.20.2", false),
        ("v1.24.9", false),
        ("v1.25.0", true),
        ("v1.33.1", true),
    ] {
        let yaml = render(&helm, &["--kube-version", version]).expect("render");
        assert_eq!(
            yaml.contains("x-kubernetes-validations"),
            cel,
            "Kubernetes {version}"
        );
    }
}

/// Without leader election two pods must never run at once, not even during a rollout:
/// the Deployment recreates. With it, a rolling update is safe (the new pod waits for the
/// Lease).
#[test]
fn without_leader_election_a_rollout_recreates() {
    let helm = helm_bin();
    let objs = set(&helm, &["leaderElection.enabled=false"]);
    let deploy = find(&objs, "Deployment").expect("deployment");
    assert_eq!(
        deploy["spec"]["strategy"]["type"].as_str(),
        Some("Recreate")
    );
    let objs = set(&helm, &["leaderElection.enabled=true", "replicaCount=2"]);
    let deploy = find(&objs, "Deployment").expect("deployment");
    assert!(
        deploy["spec"]["strategy"].is_null(),
        "{:?}",
        deploy["spec"]["strategy"]
    );
}

/// A PodDisruptionBudget never blocks a node drain: with as many replicas as minAvailable
/// asks for, it allows one pod to go instead.
#[test]
fn a_pdb_never_blocks_a_drain() {
    let helm = helm_bin();
    let objs = set(&helm, &["podDisruptionBudget.enabled=true"]);
    let pdb = find(&objs, "PodDisruptionBudget").expect("pdb");
    assert!(pdb["spec"]["minAvailable"].is_null(), "{:?}", pdb["spec"]);
    assert_eq!(pdb["spec"]["maxUnavailable"].as_i64(), Some(1));
    let objs = set(
        &helm,
        &[
            "podDisruptionBudget.enabled=true",
            "replicaCount=2",
            "leaderElection.enabled=true",
        ],
    );
    let pdb = find(&objs, "PodDisruptionBudget").expect("pdb");
    assert_eq!(pdb["spec"]["minAvailable"].as_i64(), Some(1));
}

/// The chart refuses at `helm install` what the binary would refuse at start, so that a
/// bad value never reaches a crash-looping pod: one row per setting, both checked.
#[test]
fn the_chart_refuses_what_the_binary_refuses() {
    let helm = helm_bin();
    for (value, env, bad) in [
        (
            "leen.endpoint",
            "LEEN_ENDPOINT",
            "https://proxy.example.com",
        ),
        (
            "leen.endpoint",
            "LEEN_ENDPOINT",
            "https://proxy.example.com/api",
        ),
        (
            "leen.endpoint",
            "LEEN_ENDPOINT",
            "http://leen.example.com/v1",
        ),
        ("leen.syncInterval", "LEEN_SYNC_INTERVAL", "5x"),
        ("leen.requestTimeout", "LEEN_REQUEST_TIMEOUT", "10"),
        ("leen.watchTimeout", "LEEN_WATCH_TIMEOUT", "one minute"),
        ("deletionBudget.window", "LEEN_DELETION_WINDOW", "ten"),
        ("watchNamespace", "WATCH_NAMESPACE", "team-a\\,Team_B"),
        (
            "watchNamespace",
            "WATCH_NAMESPACE",
            "team-a\\,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
    ] {
        let set = format!("{value}={bad}");
        assert!(
            render(&helm, &["--set", &set]).is_err(),
            "the chart accepts {set}"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_leen-operator"))
            .env_clear()
            .env(env, bad.replace("\\,", ","))
            .output()
            .expect("binary runs");
        assert_eq!(out.status.code(), Some(2), "the binary accepts {env}={bad}");
    }
    // And both accept what is right.
    for good in [
        "https://proxy.example.com/v1",
        "https://proxy.example.com/leen/v1/",
        "http://127.0.0.1:8080/v1",
    ] {
        render(&helm, &["--set", &format!("leen.endpoint={good}")])
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

/// The NetworkPolicy lets DNS reach a node-local cache (no selector on port 53) and
/// allows IPv6 as well as IPv4 by default.
#[test]
fn the_network_policy_allows_node_local_dns_and_ipv6() {
    let helm = helm_bin();
    let objs = set(&helm, &["networkPolicy.enabled=true"]);
    let policy = find(&objs, "NetworkPolicy").expect("policy");
    let egress = policy["spec"]["egress"].as_sequence().expect("egress");
    let dns = egress
        .iter()
        .find(|rule| {
            rule["ports"]
                .as_sequence()
                .is_some_and(|ports| ports.iter().any(|p| p["port"].as_i64() == Some(53)))
        })
        .expect("a DNS rule");
    assert!(dns["to"].is_null(), "DNS to any address: {dns:?}");
    let cidrs: Vec<&str> = egress
        .iter()
        .filter_map(|rule| rule["to"].as_sequence())
        .flatten()
        .filter_map(|to| to["ipBlock"]["cidr"].as_str())
        .collect();
    assert!(cidrs.contains(&"::/0"), "{cidrs:?}");
    assert!(cidrs.contains(&"0.0.0.0/0"), "{cidrs:?}");
}
