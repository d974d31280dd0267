//! The shipped observability, checked by the real tools: `promtool` checks the alerts as
//! the chart renders them and runs their unit tests, and a real Prometheus server scrapes
//! the operator through a lifecycle against a real API server, so that every dashboard
//! query and every metric an alert names returns data from the operator's real /metrics.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use kube::api::{Patch, PatchParams};

use fake_leen::Fault;
use support::*;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/leen-operator");

/// A binary of the `prometheus` Debian package; panics with the install line when absent.
fn prometheus_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("{name} not found: apt-get install prometheus"))
}

fn helm() -> PathBuf {
    PathBuf::from(
        std::env::var("HELM")
            .unwrap_or_else(|_| panic!("HELM is not set: run `export HELM=$(hack/get-helm.sh)`")),
    )
}

/// The rule groups of the chart's PrometheusRule, as a plain Prometheus rules file.
fn rendered_rules(helm: &Path, dir: &Path) -> PathBuf {
    let out = Command::new(helm)
        .args([
            "template",
            "t",
            CHART,
            "--set",
            "metrics.prometheusRule.enabled=true",
        ])
        .args(["--show-only", "templates/prometheusrule.yaml"])
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rule: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).expect("YAML");
    let path = dir.join("rules.yaml");
    std::fs::write(&path, serde_yaml::to_string(&rule["spec"]).expect("YAML")).expect("write");
    path
}

/// Every expression the chart ships: the alerts' and the dashboard's.
fn shipped_expressions(rules: &Path) -> (Vec<String>, Vec<String>) {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(rules).expect("rules")).expect("YAML");
    let alerts = rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| r["expr"].as_str().map(str::to_string))
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(CHART).join("files/dashboard.json")).expect("dashboard"),
    )
    .expect("JSON");
    let queries = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    (alerts, queries)
}

/// The operator's metric names an expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("leen_operator_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn alerts_pass_promtool_check_and_unit_tests() {
    let promtool = prometheus_tool("promtool");
    let helm = helm();
    let dir = tempfile::tempdir().expect("dir");
    let rules = rendered_rules(&helm, dir.path());
    let check = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/prometheus/alerts_test.yaml"
        ),
        dir.path().join("alerts_test.yaml"),
    )
    .expect("copy tests");
    let test = Command::new(&promtool)
        .args(["test", "rules", "alerts_test.yaml"])
        .current_dir(dir.path())
        .output()
        .expect("promtool runs");
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    // Every alert is unit-tested and has a runbook section in the README.
    let tests = std::fs::read_to_string(dir.path().join("alerts_test.yaml")).expect("tests");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let parsed: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&rules).expect("rules")).expect("YAML");
    for rule in parsed["groups"][0]["rules"].as_sequence().expect("rules") {
        let name = rule["alert"].as_str().expect("alert name");
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has no promtool test"
        );
        assert!(
            readme.contains(&format!("#### {name}")),
            "{name} has no runbook section in the README"
        );
    }
}

async fn query(http: &reqwest::Client, base: &str, expr: &str) -> usize {
    let url = url::Url::parse_with_params(&format!("{base}/api/v1/query"), &[("query", expr)])
        .expect("query URL");
    let Ok(answer) = http.get(url).send().await else {
        return 0;
    };
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    assert_ne!(body["status"], "error", "{expr}: {body}");
    body["data"]["result"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_finds_every_metric_the_chart_uses() {
    let prometheus = prometheus_tool("prometheus");
    let helm = helm();
    let e = scenario("observed", &[]).await;
    // A lifecycle that touches every metric: a healthy and an UNAUTHORIZED connection, a
    // finished deletion, a deletion Leen keeps failing, a 429 that holds another call.
    e.ready_connection("healthy").await;
    let (org, id) = e.seeded();
    e.fake.set_health(
        org,
        id,
        "UNAUTHORIZED",
        "Vendor credentials are invalid",
        "CUSTOMER",
    );
    e.create(connection("unauthorized", org, id)).await;
    wait_for(&e.api, "unauthorized", "Ready=True", is_ready).await;
    e.ready_connection("gone").await;
    delete(&e.api, "gone").await;
    wait_gone(&e.api, "gone").await;
    let (_, failing) = e.ready_connection("failing").await;
    e.fake.push_fault(
        Fault::status(failing, 429)
            .method("DELETE")
            .retry_after("30"),
    );
    e.fake
        .push_fault(Fault::status(failing, 503).method("DELETE").times(1000));
    delete(&e.api, "failing").await;
    wait_for(&e.api, "failing", "RateLimited", |o| {
        ready_reason(o).as_deref() == Some("RateLimited")
    })
    .await;
    // Created during the pause: its read is held by the gate.
    let (org, id) = e.seeded();
    e.create(connection("held", org, id)).await;
    wait_for(&e.api, "held", "RateLimited", |o| {
        ready_reason(o).as_deref() == Some("RateLimited")
    })
    .await;
    e.api
        .patch(
            "healthy",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .expect("patched");

    let dir = tempfile::tempdir().expect("dir");
    let rules = rendered_rules(&helm, dir.path());
    let target = e.op.metrics_url.trim_start_matches("http://").to_string();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{}]\nscrape_configs:\n  - job_name: leen-operator\n    static_configs: [{{targets: ['{target}']}}]\n",
        rules.display()
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let mut server = Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let (alerts, dashboard) = shipped_expressions(&rules);
    let mut wanted: Vec<String> = dashboard.clone();
    for expr in &alerts {
        for name in metric_names(expr) {
            wanted.push(format!("{name}{{job=\"leen-operator\"}}"));
        }
    }
    wanted.sort();
    wanted.dedup();
    // Until every query returns data (rates need two scrapes), bounded.
    let deadline = Instant::now() + WAIT;
    let mut missing = wanted.clone();
    while !missing.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for expr in &missing {
            if query(&http, &base, expr).await == 0 {
                still.push(expr.clone());
            }
        }
        missing = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        missing.is_empty(),
        "no data from the operator's /metrics for: {missing:#?}\nprometheus log: {}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );
    assert!(alerts.len() >= 7 && dashboard.len() >= 10);
}

/// Text logs written to a file or a pipe (a pod's log) carry no terminal colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_carry_no_colour_codes_off_a_terminal() {
    let e = scenario("plainlog", &[("LOG_FORMAT", "text")]).await;
    e.ready_connection("c").await;
    let log = e.op.log_text();
    assert!(log.contains("reconcile"), "the log has lines: {log}");
    assert!(!log.contains('\u{1b}'), "an ANSI escape in: {log}");
}
