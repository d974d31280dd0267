//! The deletion budget against a real kube-apiserver + etcd and the fake Leen: at most
//! LEEN_MAX_DELETIONS DELETE calls per window across the installation, the rest held until
//! confirmed or orphaned; the count survives a restart and is shared by replicas.

mod support;

use std::time::{Duration, Instant};

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use leen_operator::resource::LeenConnection;
use support::*;

fn held(o: &LeenConnection) -> bool {
    ready_reason(o).as_deref() == Some("DeletionHeld")
}

fn deletes(e: &Scenario) -> usize {
    e.fake.count_method("DELETE")
}

/// Waits until every named resource is either gone or held; returns the held ones.
async fn settle(api: &Api<LeenConnection>, names: &[String]) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut held_now = Vec::new();
        let mut open = 0;
        for name in names {
            match api.get_opt(name).await.expect("get") {
                None => {}
                Some(o) if held(&o) => held_now.push(name.clone()),
                Some(_) => open += 1,
            }
        }
        if open == 0 {
            return held_now;
        }
        assert!(Instant::now() < deadline, "{open} neither gone nor held");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn annotate_confirm(api: &Api<LeenConnection>, name: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({"metadata": {"annotations": {"leen.dev/confirm-deletion": "true"}}}),
        ),
    )
    .await
    .expect("annotated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_budget_deletions_are_held_until_confirmed_or_orphaned() {
    let e = scenario(
        "prune",
        &[("LEEN_MAX_DELETIONS", "3"), ("LEEN_DELETION_WINDOW", "10m")],
    )
    .await;
    let items = create_many(&e.api, &e.fake, "c", 5, 5).await;
    for (name, _, _) in &items {
        wait_for(&e.api, name, "Ready=True", is_ready).await;
    }
    let names: Vec<String> = items.iter().map(|(n, _, _)| n.clone()).collect();
    e.cp.kubectl(&["delete", "leenconn", "--all", "-n", "prune", "--wait=false"]);
    let held_names = settle(&e.api, &names).await;
    assert_eq!(held_names.len(), 2, "{held_names:?}");
    consistently("exactly 3 DELETEs", Duration::from_secs(2), async || {
        deletes(&e) == 3
    })
    .await;
    assert_eq!(e.fake.live_connections().len(), 2);
    let obj = e.api.get(&held_names[0]).await.expect("held");
    assert!(has_finalizer(&obj));
    let message = ready_message(&obj);
    assert!(
        message.contains("leen.dev/confirm-deletion=true") && message.contains("Orphan"),
        "{message}"
    );
    let warnings = e.events("DeletionHeld").await;
    assert!(
        warnings
            .iter()
            .all(|ev| ev.type_.as_deref() == Some("Warning"))
            && !warnings.is_empty()
    );
    assert_eq!(e.op.metric("leen_operator_deletions_held", &[]).await, 2.0);
    // The README's runbook command lists exactly the held ones.
    let listed = e.cp.kubectl(&[
        "get",
        "leenconn",
        "-A",
        "--no-headers",
        "-o",
        "custom-columns=NS:.metadata.namespace,NAME:.metadata.name,REASON:.status.conditions[?(@.type==\"Ready\")].reason",
    ]);
    let mut listed: Vec<&str> = listed
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("DeletionHeld"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    listed.sort();
    let mut expected: Vec<&str> = held_names.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(listed, expected);

    // A person confirms one: it proceeds at once.
    annotate_confirm(&e.api, &held_names[0]).await;
    wait_gone(&e.api, &held_names[0]).await;
    assert_eq!(deletes(&e), 4);
    // The other was a mistake: Orphan releases it without a call.
    e.set_policy(&held_names[1], "Orphan").await;
    wait_gone(&e.api, &held_names[1]).await;
    assert_eq!(deletes(&e), 4);
    assert_eq!(e.fake.live_connections().len(), 1);
    assert_eq!(e.op.metric("leen_operator_deletions_held", &[]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_survives_a_restart() {
    let mut e = scenario("restart", &[("LEEN_MAX_DELETIONS", "2")]).await;
    for name in ["a", "b", "c"] {
        e.ready_connection(name).await;
    }
    delete(&e.api, "a").await;
    delete(&e.api, "b").await;
    wait_gone(&e.api, "a").await;
    wait_gone(&e.api, "b").await;
    e.op.restart().await;
    delete(&e.api, "c").await;
    wait_for(&e.api, "c", "DeletionHeld", held).await;
    assert_eq!(deletes(&e), 2, "a restart does not reset the budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_budget() {
    // Two operators, one namespace each, one installation (the same budget Lease).
    let e = scenario(
        "left",
        &[("LEEN_MAX_DELETIONS", "3"), ("WATCH_NAMESPACE", "left")],
    )
    .await;
    e.cp.namespace("right").await;
    let endpoint = e.fake.base_url();
    let _right = Operator::start(
        &e.cp,
        &[
            ("LEEN_ENDPOINT", endpoint.as_str()),
            ("LEEN_API_KEY", DEFAULT_KEY),
            ("LEEN_MAX_DELETIONS", "3"),
            ("WATCH_NAMESPACE", "right"),
        ],
    )
    .await;
    let right: Api<LeenConnection> = Api::namespaced(e.client.clone(), "right");
    let left_items = create_many(&e.api, &e.fake, "l", 3, 3).await;
    let right_items = create_many(&right, &e.fake, "r", 3, 3).await;
    for (name, _, _) in &left_items {
        wait_for(&e.api, name, "Ready=True", is_ready).await;
    }
    for (name, _, _) in &right_items {
        wait_for(&right, name, "Ready=True", is_ready).await;
    }
    e.cp.kubectl(&["delete", "leenconn", "--all", "-n", "left", "--wait=false"]);
    e.cp.kubectl(&["delete", "leenconn", "--all", "-n", "right", "--wait=false"]);
    let left_names: Vec<String> = left_items.iter().map(|(n, _, _)| n.clone()).collect();
    let right_names: Vec<String> = right_items.iter().map(|(n, _, _)| n.clone()).collect();
    let held_total =
        settle(&e.api, &left_names).await.len() + settle(&right, &right_names).await.len();
    assert_eq!(held_total, 3);
    consistently(
        "exactly 3 DELETEs between both replicas",
        Duration::from_secs(2),
        async || deletes(&e) == 3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_deletions_resume_when_so_chosen() {
    let e = scenario(
        "resume",
        &[
            ("LEEN_MAX_DELETIONS", "1"),
            ("LEEN_DELETION_WINDOW", "3s"),
            ("LEEN_RESUME_HELD_DELETIONS", "true"),
        ],
    )
    .await;
    e.ready_connection("a").await;
    e.ready_connection("b").await;
    e.cp.kubectl(&[
        "delete",
        "leenconn",
        "--all",
        "-n",
        "resume",
        "--wait=false",
    ]);
    let names = ["a".to_string(), "b".to_string()];
    assert_eq!(settle(&e.api, &names).await.len(), 1, "one held");
    // Once the window has moved on, it proceeds by itself.
    wait_gone(&e.api, "a").await;
    wait_gone(&e.api, "b").await;
    assert_eq!(deletes(&e), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_held_deletion_waits_for_a_person_after_the_window() {
    let mut e = scenario(
        "wait",
        &[("LEEN_MAX_DELETIONS", "1"), ("LEEN_DELETION_WINDOW", "2s")],
    )
    .await;
    e.ready_connection("a").await;
    e.ready_connection("b").await;
    e.cp.kubectl(&["delete", "leenconn", "--all", "-n", "wait", "--wait=false"]);
    let names = ["a".to_string(), "b".to_string()];
    let held_names = settle(&e.api, &names).await;
    assert_eq!(held_names.len(), 1);
    // The window moves on, and a restart reconciles every resource again: the held one
    // still waits.
    e.ready_connection("c").await;
    e.op.restart().await;
    consistently(
        "the held deletion waits",
        Duration::from_secs(5),
        async || deletes(&e) == 1,
    )
    .await;
    annotate_confirm(&e.api, &held_names[0]).await;
    wait_gone(&e.api, &held_names[0]).await;
    assert_eq!(deletes(&e), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_turns_the_budget_off() {
    let e = scenario("nobudget", &[("LEEN_MAX_DELETIONS", "0")]).await;
    let items = create_many(&e.api, &e.fake, "c", 30, 10).await;
    for (name, _, _) in &items {
        wait_for(&e.api, name, "Ready=True", is_ready).await;
    }
    e.cp.kubectl(&[
        "delete",
        "leenconn",
        "--all",
        "-n",
        "nobudget",
        "--wait=false",
    ]);
    for (name, _, _) in &items {
        wait_gone(&e.api, name).await;
    }
    assert_eq!(deletes(&e), 30);
}

/// The budget's record stays small however many deletions a window holds (it used to grow
/// by one entry per DELETE until the Lease passed the API server's 256 KiB annotation
/// limit and every further deletion failed), and a mass deletion within a large budget
/// goes through without one Lease write per deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_stays_bounded_at_scale() {
    let e = scenario(
        "bulk",
        &[
            ("LEEN_MAX_DELETIONS", "100000"),
            ("LEEN_DELETION_WINDOW", "1h"),
        ],
    )
    .await;
    let n = 300;
    let items = create_many(&e.api, &e.fake, "c", n, 32).await;
    wait_all_ready(&e.api, n, Duration::from_secs(300)).await;
    let names: Vec<String> = items.iter().map(|(n, _, _)| n.clone()).collect();
    e.cp.kubectl(&["delete", "leenconn", "--all", "-n", "bulk", "--wait=false"]);
    let held_names = settle(&e.api, &names).await;
    assert!(held_names.is_empty(), "{held_names:?}");
    assert_eq!(deletes(&e), n);
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(e.client.clone(), "default");
    let lease = leases
        .get("leen-operator-deletion-budget")
        .await
        .expect("budget lease");
    let record = lease
        .metadata
        .annotations
        .and_then(|a| a.get("leen.dev/deletions-started").cloned())
        .expect("record");
    eprintln!("{n} deletions: budget record {} bytes", record.len());
    assert!(record.len() < 4096, "{} bytes: {record}", record.len());
    let parsed: serde_json::Value = serde_json::from_str(&record).expect("JSON");
    let counted: u64 = parsed["counts"]
        .as_object()
        .expect("counts per bucket")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert!(
        counted >= n as u64,
        "every DELETE counted ({counted} of {n}; reserved starts may exceed)"
    );
}

/// A budget record that cannot be read counts as spent: the deletion is held with a
/// Warning saying why, not let through and not left looking Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_fails_closed() {
    let e = scenario("unreadable", &[("LEEN_MAX_DELETIONS", "10")]).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(e.client.clone(), "default");
    let lease: k8s_openapi::api::coordination::v1::Lease =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "leen-operator-deletion-budget",
                         "annotations": {"leen.dev/deletions-started": "{not a record"}}
        }))
        .expect("lease");
    leases
        .create(&Default::default(), &lease)
        .await
        .expect("lease created");
    let (_, id) = e.ready_connection("c").await;
    delete(&e.api, "c").await;
    let obj = wait_for(&e.api, "c", "DeletionHeld", held).await;
    assert!(
        ready_message(&obj).contains("cannot be read"),
        "{}",
        ready_message(&obj)
    );
    consistently("no DELETE", Duration::from_secs(2), async || {
        e.fake.count("DELETE", id) == 0
    })
    .await;
    assert!(
        e.events("DeletionHeld")
            .await
            .iter()
            .any(|ev| ev.type_.as_deref() == Some("Warning"))
    );
}

/// Every DELETE the operator sends counts, retries included: with a budget of 2 and Leen
/// failing the first DELETE of each of two resources, Leen gets 2 DELETEs in the window,
/// not 4; the retries wait (a `DeletionHeld` that says they were sent before) and go out
/// on their own once the window frees, with no person needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_count_and_a_held_retry_resumes_with_the_window() {
    let e = scenario(
        "retries",
        &[("LEEN_MAX_DELETIONS", "2"), ("LEEN_DELETION_WINDOW", "8s")],
    )
    .await;
    let (_, a) = e.ready_connection("a").await;
    let (_, b) = e.ready_connection("b").await;
    for id in [a, b] {
        e.fake.push_fault(fake_leen::Fault {
            connection_id: id,
            after_effect: false,
            method: Some("DELETE".into()),
            status: 503,
            retry_after: None,
            delay_ms: 0,
            body: fake_leen::FaultBody::Default,
            times: 1,
        });
    }
    e.cp.kubectl(&[
        "delete",
        "leenconn",
        "--all",
        "-n",
        "retries",
        "--wait=false",
    ]);
    for name in ["a", "b"] {
        let held = wait_for(&e.api, name, "a retry held by the budget", |o| {
            ready_reason(o).as_deref() == Some("DeletionHeld")
        })
        .await;
        let message = ready_message(&held);
        assert!(message.contains("retries included"), "{message}");
        assert!(message.contains("retried on its own"), "{message}");
        let record = held.status.and_then(|s| s.deletion).expect("record");
        assert!(record.delete_sent && !record.held, "{record:?}");
    }
    assert_eq!(deletes(&e), 2, "{:?}", e.fake.requests());
    // The window moves on: both retries go out by themselves.
    wait_gone(&e.api, "a").await;
    wait_gone(&e.api, "b").await;
    assert_eq!(deletes(&e), 4);
}

/// The budget writes the Lease as it last wrote it, without reading it first; a Lease a
/// person removed meanwhile (to reset the count) is read again, not taken for an
/// unreadable record: the next deletion goes ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_lease_removed_by_hand_starts_the_count_again() {
    let e = scenario("removed", &[("LEEN_MAX_DELETIONS", "10")]).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(e.client.clone(), "default");
    e.ready_connection("a").await;
    e.ready_connection("b").await;
    delete(&e.api, "a").await;
    wait_gone(&e.api, "a").await;
    leases
        .delete("leen-operator-deletion-budget", &Default::default())
        .await
        .expect("the budget's Lease removed by hand");
    delete(&e.api, "b").await;
    wait_gone(&e.api, "b").await;
    assert_eq!(deletes(&e), 2);
    let lease = leases
        .get("leen-operator-deletion-budget")
        .await
        .expect("written again");
    let record = lease
        .metadata
        .annotations
        .and_then(|a| a.get("leen.dev/deletions-started").cloned())
        .expect("record");
    let record: serde_json::Value = serde_json::from_str(&record).expect("json");
    let counted: u64 = record["counts"]
        .as_object()
        .expect("counts")
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(counted, 1, "the count started again: {record}");
}
