//! What the deletion rules cost at scale (issue "Exactly once and only with proof"): the
//! deletion budget on (large enough to allow every deletion) beside off, and a mass
//! deletion Leen answers with 404s (each needs the organization's proof, cached), each on a
//! fresh control plane, beside the floor measured in the same run: the same objects
//! deleted with no operator at all.
//!
//!     cargo bench --bench scale -- --rules 1000,5000 --latency-ms 50

use super::*;

/// One contestant's deletion of `n` Ready resources.
pub(crate) struct RuleRun {
    /// `kubectl delete` -> all gone.
    pub(crate) wall: Duration,
    /// DELETE calls Leen received.
    pub(crate) deletes: usize,
    /// GETs of an organization Leen received (the 404 proof).
    pub(crate) organization_gets: usize,
    /// Writes to Leases the API server served (the budget's record).
    pub(crate) lease_writes: f64,
    /// Bytes of the budget's record at the end.
    pub(crate) record_bytes: usize,
    /// Kubernetes writes per deletion the operator counted (status, finalizer; Events not).
    pub(crate) kube_writes_per: f64,
    /// How the resources ended: Ready reason -> count, from the operator's counter.
    pub(crate) outcomes: String,
}

/// How a contestant is set up.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Rule {
    /// No budget; Leen answers 200.
    BudgetOff,
    /// A budget larger than the deletion; Leen answers 200.
    BudgetOn,
    /// No budget; Leen no longer has any of the connections (404 each), all in one
    /// organization, which answers.
    Gone404,
}

/// The operator deleting `n` Ready resources under `rule`.
pub(crate) async fn rule_run(n: usize, latency_ms: u64, rule: Rule) -> RuleRun {
    let (cp, fake) = stage(latency_ms).await;
    cp.namespace("leen-system").await;
    let endpoint = fake.base_url();
    let budget = (n * 2).to_string();
    let mut env = vec![
        ("LEEN_ENDPOINT", endpoint.as_str()),
        ("LEEN_API_KEY", "bench-key"),
        ("LOG_LEVEL", "warn"),
    ];
    if rule == Rule::BudgetOn {
        env.extend([
            ("LEEN_MAX_DELETIONS", budget.as_str()),
            ("LEEN_DELETION_WINDOW", "1h"),
            ("POD_NAMESPACE", "leen-system"),
        ]);
    }
    let op = Operator::start(&cp, &env).await;
    let client = cp.client().await;
    let api: Api<LeenConnection> = Api::namespaced(client.clone(), NS);
    let organization = (rule == Rule::Gone404).then(Uuid::new_v4);
    let file = manifest_in(&cp, n, Some(&fake), false, organization);
    let path = file.to_string_lossy().into_owned();
    let create_args = ["create", "-f", path.as_str()];
    tokio::join!(
        wait_all_ready(&api, n, BENCH_WAIT),
        kubectl(&cp, &create_args)
    );
    if rule == Rule::Gone404 {
        fake.forget_connections();
    }
    let writes_before = kube_writes(&op).await;
    let before = Profile::take(&client, &cp, None).await;
    let (deletes_before, organizations_before) = (
        fake.count_method("DELETE"),
        fake.count_operation("organization"),
    );
    let wall = kubectl_delete_all(&cp, &api, n).await;
    let after = Profile::take(&client, &cp, None).await;
    let lease_writes = ["PUT leases", "POST leases", "PATCH leases"]
        .iter()
        .map(|k| {
            after.requests.get(*k).map_or(0.0, |v| v.0)
                - before.requests.get(*k).map_or(0.0, |v| v.0)
        })
        .sum();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "leen-system");
    let record_bytes = leases
        .get_opt("leen-operator-deletion-budget")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.metadata.annotations)
        .and_then(|a| {
            a.get(leen_operator::budget::STARTED_ANNOTATION)
                .map(String::len)
        })
        .unwrap_or(0);
    let mut outcomes = Vec::new();
    for reason in ["Deleted", "AlreadyDeleted"] {
        let count = metric(
            &op,
            "leen_operator_deletions_total",
            &[&format!("reason=\"{reason}\"")],
        )
        .await;
        if count > 0.0 {
            outcomes.push(format!("{reason} {count}"));
        }
    }
    let run = RuleRun {
        wall,
        deletes: fake.count_method("DELETE") - deletes_before,
        organization_gets: fake.count_operation("organization") - organizations_before,
        lease_writes,
        record_bytes,
        kube_writes_per: (kube_writes(&op).await - writes_before) / n as f64,
        outcomes: outcomes.join(", "),
    };
    drop(op);
    drop(cp);
    run
}

/// The status writes and finalizer removals the operator counted (Events not).
async fn kube_writes(op: &Operator) -> f64 {
    metric(op, "leen_operator_kube_writes_total", &["write=\"status\""]).await
        + metric(
            op,
            "leen_operator_kube_writes_total",
            &["write=\"finalizer_remove\""],
        )
        .await
}

/// The floor: the same `n` objects deleted with no operator (no finalizer to remove).
pub(crate) async fn rule_floor(n: usize) -> Duration {
    let cp = ControlPlane::start().await;
    cp.namespace(NS).await;
    let client = cp.client().await;
    let api: Api<LeenConnection> = Api::namespaced(client, NS);
    let file = manifest(&cp, n, None, false);
    kubectl(&cp, &["create", "-f", &file.to_string_lossy()]).await;
    kubectl_delete_all(&cp, &api, n).await
}

/// One table row per N: the floor, budget off, budget on, and the 404 mass deletion.
pub(crate) async fn rules_bench(n: usize, latency_ms: u64) -> String {
    eprintln!("bench: rules N={n}: floor");
    let floor = rule_floor(n).await;
    eprintln!("bench: rules N={n}: budget off");
    let off = rule_run(n, latency_ms, Rule::BudgetOff).await;
    eprintln!("bench: rules N={n}: budget on");
    let on = rule_run(n, latency_ms, Rule::BudgetOn).await;
    eprintln!("bench: rules N={n}: 404s");
    let gone = rule_run(n, latency_ms, Rule::Gone404).await;
    let s = |d: Duration| d.as_secs_f64();
    format!(
        "| {n} | {latency_ms} | {:.2} | {:.2} ({:.2}x floor) | {:.2} ({:.2}x floor) | **{:.2}x** | {} / {} | {:.0} writes, {} bytes | {:.2} / {:.2} | {:.2} ({:.2}x floor; {}) | {} | {} | {:.2} |",
        s(floor),
        s(off.wall),
        s(off.wall) / s(floor),
        s(on.wall),
        s(on.wall) / s(floor),
        s(on.wall) / s(off.wall),
        off.deletes,
        on.deletes,
        on.lease_writes,
        on.record_bytes,
        off.kube_writes_per,
        on.kube_writes_per,
        s(gone.wall),
        s(gone.wall) / s(floor),
        gone.outcomes,
        gone.deletes,
        gone.organization_gets,
        gone.kube_writes_per,
    )
}

/// The table's header.
pub(crate) const RULES_HEADER: &str = "| N | Leen latency ms | floor: kubectl delete, no operator s | budget off s | budget on s | on / off | DELETE calls off / on | budget record: Lease writes, size | kube writes per deletion off / on | 404s: all gone s | 404s: DELETE calls | 404s: organization GETs | 404s: kube writes per deletion |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";
