//! The Argo CD health check (charts/leen-operator/argocd/health.lua) run by a real Lua 5.4
//! interpreter on LeenConnections in each state. Argo CD runs the script with the object
//! as the global `obj` and reads the returned table's `status`.

use std::process::Command;

use serde_json::{Value, json};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/leen-operator/argocd/health.lua"
);

/// Lua 5.4; absent, the test fails saying how to install it.
fn lua() -> &'static str {
    for bin in ["lua5.4", "lua"] {
        if Command::new(bin).arg("-v").output().is_ok() {
            return bin;
        }
    }
    panic!("lua5.4 not found: apt-get install lua5.4 lua-cjson");
}

/// Runs the health script on `obj`; returns (status, message).
fn health(obj: &Value) -> (String, String) {
    let bin = lua();
    let runner = format!(
        r#"local cjson = require("cjson")
obj = cjson.decode(io.read("a"))
local hs = dofile("{SCRIPT}")
io.write(hs.status, "\n", hs.message or "")"#
    );
    let mut child = Command::new(bin)
        .args(["-e", &runner])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lua runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(obj.to_string().as_bytes())
            .expect("write obj");
    }
    let out = child.wait_with_output().expect("lua finishes");
    assert!(
        out.status.success(),
        "lua failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}

fn conn(generation: i64, status: Option<Value>, deleting: bool) -> Value {
    let mut metadata = json!({"name": "c", "namespace": "ns", "generation": generation});
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    let mut obj = json!({"apiVersion": "leen.dev/v1alpha1", "kind": "LeenConnection", "metadata": metadata,
        "spec": {"organizationId": "x", "connectionId": "y"}});
    if let Some(s) = status {
        obj["status"] = s;
    }
    obj
}

fn ready(status: &str, reason: &str, observed: i64) -> Value {
    json!({"observedGeneration": observed, "state": "ACTIVE",
           "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": "m",
                           "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": observed}]})
}

#[test]
fn maps_conditions_to_argo_health() {
    let cases = [
        (conn(1, None, false), "Progressing"),
        (conn(1, Some(ready("True", "Synced", 1)), false), "Healthy"),
        (
            conn(2, Some(ready("True", "Synced", 1)), false),
            "Progressing",
        ),
        (
            conn(1, Some(ready("False", "LeenUnavailable", 1)), false),
            "Progressing",
        ),
        (
            conn(1, Some(ready("False", "RateLimited", 1)), false),
            "Progressing",
        ),
        (
            conn(1, Some(ready("False", "Unauthorized", 1)), false),
            "Degraded",
        ),
        (
            conn(1, Some(ready("False", "CredentialsMissing", 1)), false),
            "Degraded",
        ),
        (
            conn(1, Some(ready("False", "NotFound", 1)), false),
            "Degraded",
        ),
        (
            conn(1, Some(ready("False", "ConnectionDeleted", 1)), false),
            "Degraded",
        ),
        (
            conn(2, Some(ready("True", "Synced", 2)), true),
            "Progressing",
        ),
        (
            conn(2, Some(ready("False", "LeenUnavailable", 2)), true),
            "Progressing",
        ),
        (
            conn(2, Some(ready("False", "Deleted", 2)), true),
            "Progressing",
        ),
        (
            conn(2, Some(ready("False", "Rejected", 2)), true),
            "Degraded",
        ),
        (
            conn(2, Some(ready("False", "Unauthorized", 2)), true),
            "Degraded",
        ),
    ];
    let kstatus = |stalled: &str, reconciling: &str, reason: &str| {
        json!({"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "False", "reason": reason, "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1},
            {"type": "Stalled", "status": stalled, "reason": reason, "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1},
            {"type": "Reconciling", "status": reconciling, "reason": reason, "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]})
    };
    let cases = cases.into_iter().chain([
        (
            conn(1, Some(kstatus("True", "False", "DeletionHeld")), true),
            "Degraded",
        ),
        (
            conn(1, Some(kstatus("False", "True", "Pending")), false),
            "Progressing",
        ),
        (
            conn(1, Some(kstatus("False", "True", "LeenUnavailable")), true),
            "Progressing",
        ),
        (
            conn(1, Some(kstatus("True", "False", "Unauthorized")), false),
            "Degraded",
        ),
        (
            conn(1, Some(kstatus("False", "False", "Paused")), false),
            "Suspended",
        ),
        (
            conn(
                1,
                Some(kstatus("False", "True", "AwaitingAuthorization")),
                false,
            ),
            "Progressing",
        ),
        (
            conn(1, Some(kstatus("False", "True", "StateDrift")), false),
            "Progressing",
        ),
        (
            conn(
                1,
                Some(kstatus("True", "False", "CredentialsMalformed")),
                false,
            ),
            "Degraded",
        ),
        // Paused because spec.state asks it: Ready=True, healthy.
        (conn(1, Some(ready("True", "Paused", 1)), false), "Healthy"),
        (
            conn(2, Some(ready("False", "NotCreated", 2)), true),
            "Progressing",
        ),
    ]);
    for (obj, expected) in cases {
        let (status, message) = health(&obj);
        assert_eq!(status, expected, "{obj}: {message}");
    }
}

/// The script's lists are a copy of the operator's rules: for every reason the operator
/// has (a new one included), the health it shows must follow `Reason`, on a live and on a
/// deleting resource (Ready=False, no kstatus conditions, so the lists decide).
#[test]
fn every_reason_gets_the_health_its_rules_say() {
    use leen_operator::decision::Reason;
    use strum::IntoEnumIterator;
    for reason in Reason::iter() {
        let word = reason.as_str();
        let live = if matches!(reason, Reason::Paused | Reason::ReconcilePaused) {
            "Suspended"
        } else if reason.is_progressing() {
            "Progressing"
        } else {
            "Degraded"
        };
        assert_eq!(
            health(&conn(1, Some(ready("False", word, 1)), false)).0,
            live,
            "live resource, reason {word}"
        );
        let deleting = if reason == Reason::ReconcilePaused {
            "Suspended"
        } else if reason.is_transient() || reason.releases_finalizer() {
            "Progressing"
        } else {
            "Degraded"
        };
        assert_eq!(
            health(&conn(1, Some(ready("False", word, 1)), true)).0,
            deleting,
            "deleting resource, reason {word}"
        );
    }
}

/// The Flux health check in the chart README fails a LeenConnection exactly for the
/// reasons that need a person (kstatus Stalled), and for a connection Leen no longer has.
#[test]
fn the_flux_failed_expression_lists_the_reasons_that_need_a_person() {
    use leen_operator::decision::Reason;
    use strum::IntoEnumIterator;
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/leen-operator/README.md"
    ))
    .expect("chart README");
    let line = readme
        .lines()
        .find(|l| l.trim_start().starts_with("failed:"))
        .expect("a failed: expression");
    let listed: std::collections::BTreeSet<String> = line
        .split('[')
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("a reason list")
        .split(',')
        .map(|r| r.trim().trim_matches('\'').to_string())
        .collect();
    let wanted: std::collections::BTreeSet<String> = Reason::iter()
        .filter(|r| r.is_stalled() || matches!(r, Reason::NotFound | Reason::ConnectionDeleted))
        .map(|r| r.as_str().to_string())
        .collect();
    assert_eq!(listed, wanted);
    assert!(line.contains("has(status.conditions)"), "guarded: {line}");
}

/// `leen.dev/paused: "true"` shows as Suspended whatever the conditions say: live, being
/// deleted (the deletion waits), and edited while paused (the edit waits too).
#[test]
fn a_paused_resource_is_suspended() {
    // As the operator reads it: "true", spaces around allowed.
    let paused = |mut obj: Value| {
        obj["metadata"]["annotations"] = json!({"leen.dev/paused": " true"});
        obj
    };
    for (obj, what) in [
        (conn(1, Some(ready("True", "Synced", 1)), false), "live"),
        (
            conn(1, Some(ready("False", "Unauthorized", 1)), false),
            "failing",
        ),
        (conn(2, Some(ready("True", "Synced", 1)), false), "edited"),
        (
            conn(2, Some(ready("False", "LeenUnavailable", 2)), true),
            "deleting",
        ),
        (conn(1, None, false), "never read"),
    ] {
        let (status, message) = health(&paused(obj));
        assert_eq!(status, "Suspended", "{what}: {message}");
        assert!(message.contains("leen.dev/paused"), "{what}: {message}");
    }
    // Any other value is not a pause.
    let mut obj = conn(1, Some(ready("True", "Synced", 1)), false);
    obj["metadata"]["annotations"] = json!({"leen.dev/paused": "false"});
    assert_eq!(health(&obj).0, "Healthy");
}

/// An observed connection is healthy like a managed one, and every message says that it
/// is observed only; its deletion (released without a call) is progress, not a failure.
#[test]
fn an_observe_only_resource_says_so() {
    let observed = |mut obj: Value| {
        obj["spec"]["managementPolicy"] = json!("Observe");
        obj
    };
    let (status, message) = health(&observed(conn(1, Some(ready("True", "Synced", 1)), false)));
    assert_eq!(status, "Healthy");
    assert!(message.starts_with("Observe only: Synced"), "{message}");
    let (status, message) = health(&observed(conn(
        1,
        Some(ready("False", "ObserveOnly", 1)),
        true,
    )));
    assert_eq!(status, "Progressing", "{message}");
    assert!(message.starts_with("Observe only: Deleting"), "{message}");
    let (status, _) = health(&observed(conn(
        1,
        Some(ready("False", "NotFound", 1)),
        false,
    )));
    assert_eq!(status, "Degraded");
}
