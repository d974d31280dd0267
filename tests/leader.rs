//! Leader election with two operator replicas against a real API server: only the leader
//! calls Leen, and when it is killed the other takes over within the lease duration and
//! finishes the work.

mod support;

use std::time::{Duration, Instant};

use fake_leen::FakeLeen;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, api::PostParams};
use leen_operator::resource::LeenConnection;
use support::*;
use uuid::Uuid;

const LEASE_SECS: u64 = 3;

/// The environment of replica `name` electing through a Lease in `leen-system`.
fn replica_env(endpoint: &str, name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("LEEN_ENDPOINT", endpoint.to_string()),
        ("LEEN_API_KEY", "k".to_string()),
        ("LEEN_LEADER_ELECTION", "true".to_string()),
        ("LEEN_LEADER_ELECTION_NAMESPACE", "leen-system".to_string()),
        ("LEEN_LEASE_DURATION", format!("{LEASE_SECS}s")),
        ("POD_NAME", name.to_string()),
    ]
}

/// Starts replica `name` (through `kubeconfig` when given).
async fn replica(
    cp: &ControlPlane,
    endpoint: &str,
    name: &str,
    kubeconfig: Option<&std::path::Path>,
) -> Operator {
    let env = replica_env(endpoint, name);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match kubeconfig {
        Some(path) => Operator::start_with_kubeconfig(cp, path, &env).await,
        None => Operator::start(cp, &env).await,
    }
}

/// Waits until the Lease names `name`.
async fn wait_leader(leases: &Api<Lease>, name: &str) {
    eventually(&format!("{name} leads"), async || {
        holder(leases).await.as_deref() == Some(name)
    })
    .await;
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("leen-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_a_standby_takes_over() {
    let cp = ControlPlane::start().await;
    cp.namespace("leen-system").await;
    cp.namespace("apps").await;
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key("k");
    let endpoint = fake.base_url();
    let mut a = replica(&cp, &endpoint, "replica-a", None).await;
    let admin = cp.client().await;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "leen-system");
    // a is alone: it leads once the Lease names it.
    wait_leader(&leases, "replica-a").await;
    let b = replica(&cp, &endpoint, "replica-b", None).await;

    let api: Api<LeenConnection> = Api::namespaced(admin.clone(), "apps");
    let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
    fake.add_connection(org, id, "Wiz");
    api.create(&PostParams::default(), &connection("c", org, id))
        .await
        .expect("created");
    wait_for(&api, "c", "Ready=True", is_ready).await;
    assert_eq!(
        a.metric("leen_operator_leen_requests_total", &[]).await,
        1.0,
        "the leader read the connection once"
    );
    assert_eq!(
        b.metric("leen_operator_leen_requests_total", &[]).await,
        0.0,
        "the standby never calls Leen"
    );
    b.wait_log("standing by").await;

    // Kill the leader without a chance to release the Lease.
    a.kill();
    let killed = Instant::now();
    wait_leader(&leases, "replica-b").await;
    // A figure, not a bound (timing goals live in the benchmark).
    println!(
        "takeover after leader SIGKILL: {:?} (lease {LEASE_SECS}s)",
        killed.elapsed()
    );
    delete(&api, "c").await;
    wait_gone(&api, "c").await;
    assert_eq!(fake.count("DELETE", id), 1);
    assert_eq!(
        b.metric(
            "leen_operator_leen_requests_total",
            &["operation=\"delete\""]
        )
        .await,
        1.0,
        "the new leader deleted it"
    );
}

/// A leader whose API server connection stalls (every renew hangs) stops at its renew
/// deadline, before the standby may take over: never two leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_stops_before_a_standby_acquires() {
    let cp = ControlPlane::start().await;
    cp.namespace("leen-system").await;
    let fake = FakeLeen::start().await.expect("fake");
    let endpoint = fake.base_url();
    let proxy = StallingProxy::start(cp.addr()).await;
    let via_proxy = cp.dir.path().join("proxy.kubeconfig");
    cp.write_kubeconfig_via(&format!("https://{}", proxy.addr), &via_proxy);
    let mut a = replica(&cp, &endpoint, "replica-a", Some(&via_proxy)).await;
    let leases: Api<Lease> = Api::namespaced(cp.client().await, "leen-system");
    wait_leader(&leases, "replica-a").await;
    let _b = replica(&cp, &endpoint, "replica-b", None).await;

    proxy.stall();
    let stalled = Instant::now();
    let (mut a_stopped, mut b_acquired) = (None, None);
    while a_stopped.is_none() || b_acquired.is_none() {
        assert!(
            stalled.elapsed() < WAIT,
            "a stopped: {a_stopped:?}, b acquired: {b_acquired:?}"
        );
        if a_stopped.is_none() && a.exited() {
            a_stopped = Some(stalled.elapsed());
        }
        if b_acquired.is_none() && holder(&leases).await.as_deref() == Some("replica-b") {
            b_acquired = Some(stalled.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (a_stopped, b_acquired) = (
        a_stopped.unwrap_or_default(),
        b_acquired.unwrap_or_default(),
    );
    println!("stalled leader stopped after {a_stopped:?}; standby acquired after {b_acquired:?}");
    assert!(
        a_stopped < b_acquired,
        "the stalled leader stopped at {a_stopped:?}, after the standby acquired at {b_acquired:?}"
    );
    assert!(a.log_text().contains("renew"), "{}", a.log_text());
}

/// A leader whose Lease another holder took (an operator by hand, a replica that judged
/// it expired) stops at once: never two leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_taken_stops() {
    let cp = ControlPlane::start().await;
    cp.namespace("leen-system").await;
    let fake = FakeLeen::start().await.expect("fake");
    let a = replica(&cp, &fake.base_url(), "replica-a", None).await;
    let leases: Api<Lease> = Api::namespaced(cp.client().await, "leen-system");
    wait_leader(&leases, "replica-a").await;
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    );
    leases
        .patch(
            "leen-operator",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {
                "holderIdentity": "intruder",
                "renewTime": now,
                "acquireTime": now,
            }})),
        )
        .await
        .expect("lease taken");
    let a = std::sync::Mutex::new(a);
    eventually("the old leader exits", async || {
        a.lock().expect("operator").exited()
    })
    .await;
    let log = a.lock().expect("operator").log_text();
    assert!(
        log.contains("the Lease was taken by another replica"),
        "{log}"
    );
}
