//! `crds/` holds exactly what `leen-operator crd` prints, one file per CRD, and the chart
//! carries the same files.

use std::process::Command;

#[test]
fn crd_file_matches_the_binary() {
    let out = Command::new(env!("CARGO_BIN_EXE_leen-operator"))
        .arg("crd")
        .output()
        .expect("binary runs");
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    let files: Vec<String> = FILES
        .iter()
        .map(|f| {
            std::fs::read_to_string(format!("{}/crds/{f}", env!("CARGO_MANIFEST_DIR")))
                .unwrap_or_else(|e| panic!("crds/{f}: {e}"))
        })
        .collect();
    assert!(
        printed == files.join("---\n"),
        "crds/ is stale: write each document of `cargo run -- crd` to its file in crds/ ({FILES:?})"
    );
    let entries = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/crds"))
        .expect("crds/")
        .count();
    assert_eq!(entries, FILES.len(), "crds/ holds a file no CRD prints");
}

/// The files of `crds/`, in the order `leen-operator crd` prints them.
const FILES: [&str; 3] = [
    "leenconnection.yaml",
    "leenorganization.yaml",
    "clusterleenorganization.yaml",
];

#[test]
fn chart_carries_the_same_crd() {
    let root = env!("CARGO_MANIFEST_DIR");
    for f in FILES {
        let copy = std::fs::read_to_string(format!("{root}/charts/leen-operator/files/crds/{f}"))
            .expect("chart copy");
        let original = std::fs::read_to_string(format!("{root}/crds/{f}")).expect("crd");
        assert!(
            copy == original,
            "charts/leen-operator/files/crds/{f} is stale: cp crds/*.yaml charts/leen-operator/files/crds/"
        );
    }
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
    for needle in [
        "name: leenorganizations.leen.dev",
        "kind: LeenOrganization",
        "- leenorg",
        "name: clusterleenorganizations.leen.dev",
        "kind: ClusterLeenOrganization",
        "scope: Cluster",
        "namespaceSelector:",
        "organizationRef:",
        "name: Connections",
        "name: Region",
        "name: Organization",
    ] {
        assert!(yaml.contains(needle), "CRDs lack {needle:?}");
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
