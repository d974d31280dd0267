//! The adoption journey against a real API server, the operator binary and the fake Leen:
//! an exported organization applied with kubectl is observed and changed by nothing;
//! deleting observed resources sends nothing; switching one to Full takes effect at once;
//! the pause annotation stops every call and its removal restarts them; a paused deletion
//! waits, and Orphan still releases it.

mod support;

use std::{process::Command, time::Duration};

use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::*;
use uuid::Uuid;

/// Calls that change something in Leen.
fn writes(fake: &fake_leen::FakeLeen) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.operation))
        .collect()
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .env("KUBECONFIG", &cp.kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn annotate(s: &Scenario, name: &str, value: Option<&str>) {
    s.api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"leen.dev/paused": value}}})),
        )
        .await
        .expect("annotated");
}

// Two threads: the export blocks one while the fake Leen answers it on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_organization_is_observed_changed_by_nothing_and_released_without_a_call() {
    require_tools();
    let s = scenario("adopt", &[]).await;
    let org = Uuid::new_v4();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for (i, id) in ids.iter().enumerate() {
        s.fake.add_connection(org, *id, "CROWDSTRIKE");
        s.fake.set_identifier(org, *id, &format!("team-{i}"));
    }
    // The team's own key, in a Secret of the namespace: the export reads it there (as
    // kubectl would reach the cluster) and every manifest names it.
    let team_key = "adopt-team-key-77c1";
    s.fake.add_api_key(team_key);
    secret(&s.client, "adopt", "leen-key", "token", team_key).await;
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_leen-operator"))
        .env_remove("LEEN_API_KEY")
        .env("KUBECONFIG", &s.cp.kubeconfig)
        .env("LEEN_ENDPOINT", s.fake.base_url())
        .args(["export", "--organization", &org.to_string()])
        .args(["--namespace", "adopt", "--api-key-secret", "leen-key"])
        .args(["--api-key-secret-key", "token", "--output"])
        .arg(dir.path())
        .output()
        .expect("export runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(team_key));
    kubectl(&s.cp, &["apply", "-f", dir.path().to_str().expect("path")]);
    wait_all_ready(&s.api, 3, WAIT).await;
    // Every call carried the team's key, none the operator's default one.
    let keys: std::collections::BTreeSet<Option<String>> =
        s.fake.requests().into_iter().map(|r| r.api_key).collect();
    assert_eq!(keys, [Some(team_key.to_string())].into_iter().collect());
    let obj = s.api.get("crowdstrike-team-0").await.expect("read");
    assert_eq!(
        obj.spec.api_key_secret_ref.map(|r| (r.name, r.key)),
        Some(("leen-key".to_string(), "token".to_string()))
    );
    let shown = kubectl(&s.cp, &["get", "leenconn", "-n", "adopt"]);
    assert!(shown.contains("POLICY"), "{shown}");
    assert_eq!(shown.matches("Observe").count(), 3, "{shown}");
    assert!(writes(&s.fake).is_empty(), "{:?}", writes(&s.fake));

    // Deleting the observed resources (a prune) sends nothing and releases them all.
    kubectl(
        &s.cp,
        &[
            "delete",
            "-f",
            dir.path().to_str().expect("path"),
            "--wait=false",
        ],
    );
    for name in [
        "crowdstrike-team-0",
        "crowdstrike-team-1",
        "crowdstrike-team-2",
    ] {
        wait_gone(&s.api, name).await;
    }
    assert!(writes(&s.fake).is_empty(), "{:?}", writes(&s.fake));
    for id in &ids {
        assert!(s.fake.has_connection(org, *id));
    }
    assert!(!s.events("ObserveOnly").await.is_empty());
}

#[tokio::test]
async fn switching_an_observed_resource_to_full_takes_effect_at_once() {
    require_tools();
    let s = scenario("switch", &[]).await;
    let (org, id) = s.seeded();
    let mut obj = connection("edr", org, id);
    obj.spec.management_policy = leen_operator::resource::ManagementPolicy::Observe;
    obj.spec.state = Some(leen_operator::resource::DesiredState::Paused);
    s.create(obj).await;
    // The API server refuses what the operator would refuse.
    for (field, value) in [
        ("managementPolicy", "Sometimes"),
        ("syncInterval", "soon"),
        ("syncInterval", "1s"),
    ] {
        if value == "1s" && !cel_enforced(&s.client).await {
            continue;
        }
        let refused = s
            .api
            .patch(
                "edr",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {field: value}})),
            )
            .await;
        assert!(refused.is_err(), "{field}: {value} was accepted");
    }
    // Observed: Leen's ACTIVE is mirrored, spec.state is not enforced.
    wait_for(&s.api, "edr", "Ready=True", is_ready).await;
    assert!(writes(&s.fake).is_empty(), "{:?}", writes(&s.fake));

    s.api
        .patch(
            "edr",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"managementPolicy": "Full"}})),
        )
        .await
        .expect("switched");
    // The sync interval is an hour: only the spec edit can bring the PATCH this soon.
    wait_for(&s.api, "edr", "Paused as the spec asks", |o| {
        o.status.as_ref().and_then(|s| s.state.as_deref()) == Some("PAUSED")
    })
    .await;
    assert_eq!(writes(&s.fake), ["PATCH update"]);
    delete(&s.api, "edr").await;
    wait_gone(&s.api, "edr").await;
    assert_eq!(s.fake.count("DELETE", id), 1);
    assert!(!s.fake.has_connection(org, id));
}

#[tokio::test]
async fn a_pause_stops_every_call_and_its_end_restarts_them() {
    require_tools();
    let s = scenario("pause", &[("LEEN_SYNC_INTERVAL", "1s")]).await;
    let (_, id) = s.ready_connection("edr").await;
    annotate(&s, "edr", Some("true")).await;
    wait_for(&s.api, "edr", "ReconcilePaused", |o| {
        ready_reason(o).as_deref() == Some("ReconcilePaused")
    })
    .await;
    let obj = s.api.get("edr").await.expect("read");
    let status = obj.status.as_ref().expect("status");
    assert_eq!(status.state.as_deref(), Some("ACTIVE"), "as last observed");
    let calls = s.fake.count("GET", id);
    // Three sync intervals with no call at all.
    consistently(
        "no call to Leen while paused",
        Duration::from_secs(3),
        async || s.fake.count("GET", id) == calls,
    )
    .await;
    let shown = kubectl(
        &s.cp,
        &["get", "leenconn", "edr", "-n", "pause", "-o", "wide"],
    );
    assert!(
        shown.contains("ReconcilePaused") && shown.contains("true"),
        "{shown}"
    );

    annotate(&s, "edr", None).await;
    wait_for(&s.api, "edr", "Ready=True again", is_ready).await;
    eventually("reads again, every interval", async || {
        s.fake.count("GET", id) >= calls + 2
    })
    .await;
}

#[tokio::test]
async fn a_paused_deletion_waits_until_resumed_and_orphan_still_releases() {
    require_tools();
    let s = scenario("paused-delete", &[]).await;
    let (org, waits) = s.ready_connection("waits").await;
    let (_, orphaned) = s.ready_connection("orphaned").await;
    for name in ["waits", "orphaned"] {
        annotate(&s, name, Some("true")).await;
        delete(&s.api, name).await;
    }
    wait_for(&s.api, "waits", "the deletion paused", |o| {
        ready_reason(o).as_deref() == Some("ReconcilePaused") && has_finalizer(o)
    })
    .await;
    consistently(
        "a paused deletion keeps its finalizer and calls nothing",
        Duration::from_secs(3),
        async || {
            s.fake.count("DELETE", waits) == 0
                && s.api
                    .get_opt("waits")
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|o| has_finalizer(&o))
        },
    )
    .await;

    // Orphan releases a paused deletion without a call.
    s.set_policy("orphaned", "Orphan").await;
    wait_gone(&s.api, "orphaned").await;
    assert_eq!(s.fake.count("DELETE", orphaned), 0);

    // Resumed: the deletion goes on, one DELETE.
    annotate(&s, "waits", None).await;
    wait_gone(&s.api, "waits").await;
    assert_eq!(s.fake.count("DELETE", waits), 1);
    assert!(!s.fake.has_connection(org, waits));
}
