//! The README walked as a new user would: each shell block of `README.md` and the chart's
//! README is run as written (placeholders such as `<your Leen API key>` filled in, the
//! endpoint of a fake Leen in the environment), against a real API server, and what the
//! README says it does is checked. A block no test runs fails the sweep.

mod support;

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use kube::{Api, api::PostParams};
use leen_operator::resource::LeenConnection;
use support::{
    readme::{CHART_README, README, blocks, command, fill, run, shell},
    *,
};
use uuid::Uuid;

const KEY: &str = "readme-walk-key";
/// The example's organization and connection (`examples/leenconnection.yaml`).
const ORG: &str = "6f1c2d4e-0000-4000-8000-000000000001";
const CONN: &str = "0b9e7a52-0000-4000-8000-000000000002";

/// Blocks no test here can run, and why. Anything else tagged `run: NAME` must be run by a
/// test as `shell(FILE, "NAME")`.
const NOT_RUN_HERE: &[(&str, &str, &str)] = &[
    (
        README,
        "ci",
        "the test command itself: .ci/run runs it (checked below)",
    ),
    (
        README,
        "mutants",
        "about 70 minutes on two cores: run by hand before a release; the score is in the README",
    ),
    (
        CHART_README,
        "release",
        "needs a published release on ghcr.io and the internet",
    ),
    (
        CHART_README,
        "registry",
        "tests/cluster.rs does each of its steps against the test node's http registry, which \
         needs --plain-http and --dest-tls-verify=false, and with its test endpoint and CA",
    ),
];

fn uuid(s: &str) -> Uuid {
    s.parse().expect("uuid")
}

/// Every shell block carries a `run:` tag and is either run by a test through `shell` or
/// listed in [`NOT_RUN_HERE`] with its reason; the test command is the one `.ci/run` runs.
#[test]
fn every_shell_block_of_the_readmes_is_run_by_a_test() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut sources = String::new();
    for entry in std::fs::read_dir(root.join("tests")).expect("tests/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            sources.push_str(&std::fs::read_to_string(&path).expect("test source"));
        }
    }
    let sources: String = sources.split_whitespace().collect();
    let mut problems = Vec::new();
    for (file, constant) in [(README, "README"), (CHART_README, "CHART_README")] {
        for block in blocks(file) {
            if !block.is_shell() {
                continue;
            }
            let Some(name) = block
                .tag
                .as_deref()
                .and_then(|t| t.strip_prefix("run:"))
                .map(str::trim)
            else {
                problems.push(format!(
                    "{file}:{}: a shell block without <!-- run: NAME -->",
                    block.line
                ));
                continue;
            };
            let called = format!("shell({constant},\"{name}\")");
            let excused = NOT_RUN_HERE
                .iter()
                .any(|(f, n, _)| *f == file && *n == name);
            if !sources.contains(&called) && !excused {
                problems.push(format!(
                    "{file}:{}: block {name:?} is run by no test",
                    block.line
                ));
            }
        }
    }
    for (file, name, _) in NOT_RUN_HERE {
        assert!(
            blocks(file)
                .iter()
                .any(|b| b.tag.as_deref() == Some(&format!("run: {name}"))),
            "{file} no longer has block {name:?}: remove it from NOT_RUN_HERE"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    for line in shell(README, "ci").lines() {
        assert!(
            ci.lines().any(|l| l.trim() == line.trim()),
            ".ci/run does not run the README's test command {line:?}"
        );
    }
}

/// A block that says it shows a file shows it whole.
#[test]
fn blocks_that_show_a_file_show_it_as_it_is() {
    let mut seen = 0;
    for file in [README, CHART_README] {
        for block in blocks(file) {
            let Some(path) = block.tag.as_deref().and_then(|t| t.strip_prefix("file:")) else {
                continue;
            };
            let path = path.trim();
            let text =
                std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path))
                    .unwrap_or_else(|e| panic!("{file}:{}: {path}: {e}", block.line));
            assert_eq!(
                block.text, text,
                "{file}:{}: differs from {path}",
                block.line
            );
            seen += 1;
        }
    }
    assert!(seen >= 1, "the create example is shown whole in the README");
}

/// `hack/demo.sh` (Quick start, Run it locally) runs to its end on this machine and shows
/// what the README says: the resource Ready, then Leen's DELETE answered 200.
#[test]
fn the_demo_runs_as_written() {
    let out = run(&shell(README, "demo"), &[]);
    let ready = out
        .lines()
        .any(|l| l.starts_with("crowdstrike-prod") && l.contains("ACTIVE") && l.contains("True"));
    assert!(ready, "no Ready row in the demo's output:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("\"method\":\"DELETE\"") && l.contains("\"status\":200")),
        "no DELETE answered 200 in the demo's output:\n{out}"
    );
    assert!(out.contains("ready=False/Deleted"), "{out}");
    assert!(!out.contains(KEY) && !out.contains("demo-key"), "{out}");
}

/// A command the README leaves running (the operator from `cargo run`), in its own process
/// group so that everything it started stops with it.
struct Background {
    child: Child,
    log: PathBuf,
}

impl Background {
    fn start(script: &str, env: &[(&str, &str)], log: PathBuf) -> Self {
        use std::os::unix::process::CommandExt;
        let file = std::fs::File::create(&log).expect("log file");
        let child = command(script, env)
            .process_group(0)
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("bash starts");
        Background { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `url` to answer 200 (a release build may come first: minutes).
    async fn wait_ready(&mut self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(1200);
        loop {
            if reqwest::get(url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the block exited ({status}):\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "not ready:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- the block's output\n{}", self.log_text());
        }
    }
}

/// A bare API server and a fake Leen that knows the key and the example's connection, and
/// the environment a block runs in.
async fn walk() -> (ControlPlane, fake_leen::FakeLeen, String) {
    let cp = ControlPlane::start_bare(&[]).await;
    let fake = fake_leen::FakeLeen::start().await.expect("fake Leen");
    fake.add_api_key(KEY);
    fake.add_connection(uuid(ORG), uuid(CONN), "CrowdStrike");
    let kubeconfig = cp.kubeconfig.to_string_lossy().into_owned();
    (cp, fake, kubeconfig)
}

/// Install on a cluster (Helm), as written, on a bare API server of the oldest version the
/// chart claims: the install block succeeds and applies the example. No kubelet runs the
/// chart's pod here, so the operator runs beside it as a process with the chart's settings
/// (the cluster tier runs the pod itself); the example becomes Ready with the key the block
/// stored. Then the Uninstall block, as written: the example is orphaned (it stays in Leen,
/// no DELETE), every LeenConnection goes, the release and the CRD go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_and_uninstall_blocks_work_as_written() {
    let (cp, fake, kubeconfig) = walk().await;
    let env = [("KUBECONFIG", kubeconfig.as_str())];

    let out = run(
        &fill(&shell(README, "install"), &[("<your Leen API key>", KEY)]),
        &env,
    );
    assert!(
        out.contains("crowdstrike-prod"),
        "kubectl get leenconn -A shows the example:\n{out}"
    );
    let status = run("helm status leen-operator -n leen-system", &env);
    assert!(status.contains("STATUS: deployed"), "{status}");

    // What the chart's pod would do, with what the block configured: the key from the
    // Secret it created, trusted for the namespace it named.
    let key = cp.kubectl(&[
        "get",
        "secret",
        "leen-api-key",
        "-n",
        "leen-system",
        "-o",
        "jsonpath={.data.apiKey}",
    ]);
    let endpoint = fake.base_url();
    let namespaces = cp.kubectl(&[
        "get",
        "deployment",
        "leen-operator",
        "-n",
        "leen-system",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"LEEN_DEFAULT_KEY_NAMESPACES\")].value}",
    ]);
    assert_eq!(namespaces, "security", "the chart's setting from --set");
    let decoded = String::from_utf8(
        Command::new("base64")
            .arg("-d")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(key.as_bytes())?;
                c.wait_with_output()
            })
            .expect("base64")
            .stdout,
    )
    .expect("utf-8");
    assert_eq!(decoded, KEY, "the block stored the key in the Secret");
    let op = Operator::start(
        &cp,
        &[
            ("LEEN_ENDPOINT", endpoint.as_str()),
            ("LEEN_API_KEY", decoded.as_str()),
            ("LEEN_DEFAULT_KEY_NAMESPACES", namespaces.as_str()),
        ],
    )
    .await;
    let api: Api<LeenConnection> = Api::namespaced(cp.client().await, "security");
    wait_for(&api, "crowdstrike-prod", "Ready", is_ready).await;

    run(&shell(README, "uninstall"), &env);
    assert_eq!(fake.count_method("DELETE"), 0, "orphaned: nothing deleted");
    assert!(fake.has_connection(uuid(ORG), uuid(CONN)));
    let left = cp.kubectl(&["get", "crd", "-o", "name"]);
    assert!(!left.contains("leenconnections.leen.dev"), "{left}");
    let releases = run("helm list -A -q", &env);
    assert!(!releases.contains("leen-operator"), "{releases}");
    drop(op);
}

/// The namespaced install (Many teams), as written: a Role and RoleBinding in each listed
/// namespace, no ClusterRole, and the list passed to the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespaced_install_block_works_as_written() {
    let cp = ControlPlane::start_bare(&[]).await;
    for ns in ["leen-system", "team-a", "team-b"] {
        cp.namespace(ns).await;
    }
    cp.kubectl(&[
        "create",
        "secret",
        "generic",
        "leen-api-key",
        "-n",
        "leen-system",
        "--from-literal=apiKey=unused-here",
    ]);
    let kubeconfig = cp.kubeconfig.to_string_lossy().into_owned();
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    run(&shell(README, "install-namespaced"), &env);
    for ns in ["team-a", "team-b"] {
        let roles = cp.kubectl(&["get", "role,rolebinding", "-n", ns, "-o", "name"]);
        assert!(
            roles.contains("role.rbac.authorization.k8s.io/leen-operator")
                && roles.contains("rolebinding.rbac.authorization.k8s.io/leen-operator"),
            "{ns}: {roles}"
        );
    }
    let cluster = cp.kubectl(&["get", "clusterrole,clusterrolebinding", "-o", "name"]);
    assert!(!cluster.contains("leen-operator"), "{cluster}");
    let watch = cp.kubectl(&[
        "get",
        "deployment",
        "leen-operator",
        "-n",
        "leen-system",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"WATCH_NAMESPACE\")].value}",
    ]);
    assert_eq!(watch, "team-a,team-b");
}

/// Without Helm (the CRD, then `cargo run --release` with the key and namespaces as
/// written), then every block that acts on resources, in the order a user meets them:
/// create a connection, pause and resume, unstick a deletion Leen refuses, and the
/// runbook of a prune that the deletion budget held (list the held ones, orphan them,
/// confirm the rest, list what was deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocks_that_act_on_resources_work_as_written() {
    let (cp, fake, kubeconfig) = walk().await;
    let third = Uuid::new_v4();
    fake.add_connection(uuid(ORG), third, "Tenable");
    cp.namespace("security").await;
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    let client = cp.client().await;
    let api: Api<LeenConnection> = Api::namespaced(client.clone(), "security");

    // Without Helm. The environment adds what a user's shell would hold beside the
    // README's variables: the endpoint (here the fake's), a free metrics port, and a
    // deletion budget of one DELETE per hour for the runbook below.
    let endpoint = fake.base_url();
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut operator = Background::start(
        &fill(
            &shell(README, "without-helm"),
            &[("LEEN_API_KEY=...", &format!("LEEN_API_KEY={KEY}"))],
        ),
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("LEEN_ENDPOINT", endpoint.as_str()),
            ("METRICS_ADDR", metrics.as_str()),
            ("LEEN_MAX_DELETIONS", "1"),
            ("LEEN_DELETION_WINDOW", "1h"),
            ("LOG_LEVEL", "info"),
        ],
        cp.dir.path().join("without-helm.log"),
    );
    operator
        .wait_ready(&format!("http://{metrics}/readyz"))
        .await;
    cp.kubectl(&["apply", "-f", "examples/leenconnection.yaml"]);
    wait_for(&api, "crowdstrike-prod", "Ready", is_ready).await;
    // The README's first lines: the command and the columns it shows.
    let got = run(&shell(README, "get"), &env);
    let shown = blocks(README)
        .into_iter()
        .find(|b| b.tag.as_deref() == Some("run: get"))
        .expect("the get block")
        .text;
    let header = |text: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.starts_with("NAME"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(header(&got), header(&shown), "{got}");
    let row = got
        .lines()
        .find(|l| l.starts_with("crowdstrike-prod"))
        .unwrap_or_default();
    assert!(
        row.contains("ACTIVE") && row.contains("HEALTHY") && row.contains("True"),
        "{got}"
    );

    // Create a connection.
    let out = run(&shell(README, "create"), &env);
    let created: Uuid = out
        .lines()
        .last()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or_else(|| panic!("the block prints the new connection's id:\n{out}"));
    assert!(fake.has_connection(uuid(ORG), created));
    assert_eq!(fake.count_method("POST"), 1);

    // Pause and resume.
    run(&shell(README, "pause"), &env);
    wait_for(&api, "crowdstrike-prod", "ReconcilePaused", |o| {
        ready_reason(o).as_deref() == Some("ReconcilePaused")
    })
    .await;
    let wide = cp.kubectl(&[
        "get",
        "leenconn",
        "crowdstrike-prod",
        "-n",
        "security",
        "-o",
        "wide",
    ]);
    assert!(
        wide.contains("ReconcilePaused") && wide.contains("true"),
        "{wide}"
    );
    run(&shell(README, "resume"), &env);
    wait_for(&api, "crowdstrike-prod", "Synced again", |o| {
        ready_reason(o).as_deref() == Some("Synced")
    })
    .await;

    // Unsticking a deletion: Leen keeps refusing the DELETE; Orphan lets it go with no
    // further call, and the connection stays.
    fake.push_fault(
        fake_leen::Fault::status(uuid(CONN), 503)
            .method("DELETE")
            .times(1000),
    );
    delete(&api, "crowdstrike-prod").await;
    wait_for(&api, "crowdstrike-prod", "a refused DELETE", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.deletion.as_ref())
            .is_some_and(|d| d.attempts >= 1)
    })
    .await;
    run(&shell(README, "unstick"), &env);
    wait_gone(&api, "crowdstrike-prod").await;
    assert!(fake.has_connection(uuid(ORG), uuid(CONN)));
    fake.clear_faults();
    let refused = fake.count_method("DELETE");
    assert!(refused >= 1);

    // The refused DELETE spent the budget (one per hour): the next deletions are held.
    // The README: a re-created resource with spec.connectionId adopts the same connection.
    cp.kubectl(&["apply", "-f", "examples/leenconnection.yaml"]);
    wait_for(&api, "crowdstrike-prod", "Ready again", is_ready).await;
    let tenable = |name: &str| {
        let mut obj = connection(name, uuid(ORG), third);
        obj.metadata.namespace = Some("security".into());
        obj
    };
    api.create(&PostParams::default(), &tenable("tenable-prod"))
        .await
        .expect("created");
    wait_for(&api, "tenable-prod", "Ready", is_ready).await;
    let held = |o: &LeenConnection| ready_reason(o).as_deref() == Some("DeletionHeld");
    delete(&api, "crowdstrike-spotlight").await;
    delete(&api, "tenable-prod").await;
    wait_for(&api, "crowdstrike-spotlight", "DeletionHeld", held).await;
    wait_for(&api, "tenable-prod", "DeletionHeld", held).await;
    let listed = run(&shell(README, "held"), &env);
    let mut names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    names.sort();
    assert_eq!(names, ["crowdstrike-spotlight", "tenable-prod"], "{listed}");

    // The prune was a mistake: orphan the held ones, no call to Leen.
    run(&shell(README, "orphan-held"), &env);
    wait_gone(&api, "crowdstrike-spotlight").await;
    wait_gone(&api, "tenable-prod").await;
    assert_eq!(fake.count_method("DELETE"), refused);
    assert!(fake.has_connection(uuid(ORG), created) && fake.has_connection(uuid(ORG), third));

    // The deletion was meant: confirm one resource, then a whole namespace.
    api.create(&PostParams::default(), &tenable("tenable-prod"))
        .await
        .expect("re-created");
    wait_for(&api, "tenable-prod", "Ready", is_ready).await;
    delete(&api, "crowdstrike-prod").await;
    delete(&api, "tenable-prod").await;
    wait_for(&api, "crowdstrike-prod", "DeletionHeld", held).await;
    wait_for(&api, "tenable-prod", "DeletionHeld", held).await;
    run(&shell(README, "confirm"), &env);
    wait_gone(&api, "crowdstrike-prod").await;
    wait_gone(&api, "tenable-prod").await;
    assert_eq!(fake.count_method("DELETE"), refused + 2);
    assert!(!fake.has_connection(uuid(ORG), uuid(CONN)) && !fake.has_connection(uuid(ORG), third));

    let deleted = run(&shell(README, "deleted-events"), &env);
    for name in ["crowdstrike-prod", "tenable-prod"] {
        assert!(deleted.contains(name), "{deleted}");
    }
    assert!(
        !deleted.contains("crowdstrike-spotlight"),
        "orphaned, not deleted: {deleted}"
    );
}

/// The multi-tenant setup, as written: a resource of an earlier release whose key Secret
/// carries no `leen.dev/secret-type` waits (`CredentialsMissing`) until the migration block
/// marks it; then the setup block creates the teams' namespaces, Secrets and the example's
/// organizations and connections, and each connection becomes Ready with its own
/// organization's key (the fake Leen sees which).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_multi_tenant_setup_and_the_secret_migration_work_as_written() {
    let cp = ControlPlane::start().await;
    let fake = fake_leen::FakeLeen::start().await.expect("fake Leen");
    let teams = [
        ("team-a", "crowdstrike", "a", "key-of-team-a"),
        ("team-b", "tenable", "b", "key-of-team-b"),
        ("team-c", "qualys", "c", "key-of-the-platform"),
    ];
    for (_, _, n, key) in teams {
        fake.add_connection(
            uuid(&format!("6f1c2d4e-0000-4000-8000-00000000000{n}")),
            uuid(&format!("0b9e7a52-0000-4000-8000-00000000000{n}")),
            "CrowdStrike",
        );
        fake.add_api_key(key);
    }
    cp.namespace("leen-system").await;
    cp.namespace("legacy").await;
    let client = cp.client().await;
    let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
    fake.add_connection(org, id, "Tenable");
    fake.add_api_key("legacy-key");
    typed_secret(&client, "legacy", "old-key", "apiKey", "legacy-key", None).await;
    let legacy: Api<LeenConnection> = Api::namespaced(client.clone(), "legacy");
    let mut obj = connection("old", org, id);
    obj.spec.api_key_secret_ref =
        serde_json::from_value(serde_json::json!({"name": "old-key"})).ok();
    legacy
        .create(&PostParams::default(), &obj)
        .await
        .expect("created");
    let endpoint = fake.base_url();
    let _op = Operator::start(
        &cp,
        &[
            ("LEEN_ENDPOINT", endpoint.as_str()),
            ("POD_NAMESPACE", "leen-system"),
        ],
    )
    .await;
    wait_for(&legacy, "old", "waiting for its Secret's mark", |o| {
        ready_message(o).contains("is not marked for the operator")
    })
    .await;
    let kubeconfig = cp.kubeconfig.to_string_lossy().into_owned();
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    run(&shell(README, "mark-secrets"), &env);
    wait_for(&legacy, "old", "Ready once marked", is_ready).await;

    let out = run(
        &fill(
            &shell(README, "multi-tenant"),
            &[
                ("<team a's key>", "key-of-team-a"),
                ("<team b's key>", "key-of-team-b"),
                ("<the platform's key>", "key-of-the-platform"),
            ],
        ),
        &env,
    );
    for needle in ["acme", "beta", "platform", "CONNECTIONS"] {
        assert!(out.contains(needle), "{needle} in:\n{out}");
    }
    for (ns, name, n, key) in teams {
        let api: Api<LeenConnection> = Api::namespaced(client.clone(), ns);
        wait_for(&api, name, "Ready", is_ready).await;
        let id = format!("0b9e7a52-0000-4000-8000-00000000000{n}");
        let keys: std::collections::BTreeSet<String> = fake
            .requests()
            .into_iter()
            .filter(|r| r.connection_id == id)
            .filter_map(|r| r.api_key)
            .collect();
        assert_eq!(keys.into_iter().collect::<Vec<_>>(), [key], "{ns}/{name}");
    }
    let row = |ns: &str| {
        out.lines()
            .find(|l| l.starts_with(ns))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("team-a")[1..6],
        [
            "acme",
            "6f1c2d4e-0000-4000-8000-00000000000a",
            "us",
            "True",
            "1"
        ],
        "{out}"
    );
}
