//! `crds/leenconnection.yaml` is exactly what `leen-operator crd` prints.

use std::process::Command;

#[test]
fn crd_file_matches_the_binary() {
    let out = Command::new(env!("CARGO_BIN_EXE_leen-operator"))
        .arg("crd")
        .output()
        .expect("binary runs");
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/leenconnection.yaml");
    let file = std::fs::read_to_string(path).expect("crds/leenconnection.yaml");
    assert!(
        printed == file,
        "crds/leenconnection.yaml is stale: run `cargo run -- crd > crds/leenconnection.yaml`"
    );
}

#[test]
fn chart_carries_the_same_crd() {
    let root = env!("CARGO_MANIFEST_DIR");
    let copy = std::fs::read_to_string(format!(
        "{root}/charts/leen-operator/files/crds/leenconnection.yaml"
    ))
    .expect("chart copy");
    let original =
        std::fs::read_to_string(format!("{root}/crds/leenconnection.yaml")).expect("crd");
    assert!(
        copy == original,
        "charts/leen-operator/files/crds/ is stale: cp crds/leenconnection.yaml charts/leen-operator/files/crds/"
    );
}

#[test]
fn crd_has_the_contract_names() {
    let yaml = leen_operator::resource::crd_yaml().expect("yaml");
    for needle in [
        "name: leenconnections.leen.dev",
        "kind: LeenConnection",
        "- leenconn",
        "- leen",
        "name: v1alpha1",
        "status: {}",
        "format: uuid",
        "rule: self == oldSelf",
    ] {
        assert!(yaml.contains(needle), "CRD lacks {needle:?}");
    }
    for column in ["name: State", "name: Health", "name: Ready", "name: Age"] {
        assert!(yaml.contains(column), "CRD lacks printer column {column}");
    }
}

#[test]
fn bad_setting_stops_start_up_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_leen-operator"))
        .env_clear()
        .env("LEEN_ENDPOINT", "http://leen.example.com/v1")
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("LEEN_ENDPOINT"), "{stderr}");
}
