//! `leen-operator export` against the fake Leen, as a user runs it: the binary, the key in
//! the environment, an organization listed over several pages (by cursor, by offset where
//! the cursor is refused or ignored), names that collide.

use std::{collections::BTreeSet, process::Command};

use fake_leen::{Cursors, FakeLeen};
use serde_json::Value;
use uuid::Uuid;

const KEY: &str = "export-key-4f1e";

/// Runs the export; returns (exit code, stdout, stderr). It blocks its thread: the tests
/// run on two, so that the fake Leen answers meanwhile.
fn export(fake: &FakeLeen, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leen-operator"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LEEN_API_KEY", KEY)
        .env("LEEN_ENDPOINT", fake.base_url())
        .arg("export")
        .args(args)
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str::<Value>(d).expect("each document is YAML"))
        .collect()
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// An organization of 230 connections: three pages of 100. Two pairs of them collide on
/// their names (the same vendor and identifier; identifiers equal once made a name), one
/// has no identifier, one is DELETED.
async fn organization() -> (FakeLeen, Uuid, Vec<Uuid>) {
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key(KEY);
    let org = Uuid::new_v4();
    let mut ids = Vec::new();
    for i in 0..230 {
        let id = Uuid::new_v4();
        let vendor = if i % 2 == 0 { "CROWDSTRIKE" } else { "TENABLE" };
        fake.add_connection(org, id, vendor);
        let identifier = match i {
            0 | 2 => "edr".to_string(),
            4 => "Team A/Prod".to_string(),
            6 => "team-a--prod".to_string(),
            8 => String::new(),
            _ => format!("conn-{i}"),
        };
        fake.set_identifier(org, id, &identifier);
        ids.push(id);
    }
    // Another organization's connection never shows.
    fake.add_connection(Uuid::new_v4(), Uuid::new_v4(), "CROWDSTRIKE");
    (fake, org, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_over_several_pages_becomes_observe_only_manifests() {
    let (fake, org, ids) = organization().await;
    let org_s = org.to_string();
    let (code, out, err) = export(
        &fake,
        &["--organization", &org_s, "--namespace", "security"],
    );
    assert_eq!(code, 0, "{err}");
    let docs = documents(&out);
    assert_eq!(docs.len(), 230, "{err}");
    assert!(err.contains("exported 230 connection(s)"), "{err}");
    // Three pages by cursor: the page size is 100.
    assert_eq!(fake.count_operation("list"), 3);
    let mut names = BTreeSet::new();
    let mut exported = BTreeSet::new();
    for doc in &docs {
        assert_eq!(doc["apiVersion"], "leen.dev/v1alpha1");
        assert_eq!(doc["kind"], "LeenConnection");
        assert_eq!(doc["metadata"]["namespace"], "security");
        assert_eq!(doc["spec"]["managementPolicy"], "Observe");
        assert_eq!(doc["spec"]["organizationId"], org_s);
        assert_eq!(doc["spec"]["region"], "us");
        assert!(doc.get("status").is_none(), "{doc}");
        let name = doc["metadata"]["name"].as_str().expect("name").to_string();
        assert!(is_dns_label(&name), "{name}");
        assert!(names.insert(name), "names are unique");
        exported.insert(
            doc["spec"]["connectionId"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let all: BTreeSet<String> = ids.iter().map(Uuid::to_string).collect();
    assert_eq!(exported, all, "every connection, once");
    // Of colliding names, the oldest connection keeps the name, the later one gets the
    // start of its id; the others are vendor-identifier.
    let name_of = |id: &Uuid| {
        docs.iter()
            .find(|d| d["spec"]["connectionId"] == id.to_string())
            .and_then(|d| d["metadata"]["name"].as_str())
            .expect("exported")
            .to_string()
    };
    let hex = |id: &Uuid| id.simple().to_string()[..8].to_string();
    assert_eq!(name_of(&ids[0]), "crowdstrike-edr");
    assert_eq!(
        name_of(&ids[2]),
        format!("crowdstrike-edr-{}", hex(&ids[2]))
    );
    assert_eq!(name_of(&ids[4]), "crowdstrike-team-a-prod");
    assert_eq!(
        name_of(&ids[6]),
        format!("crowdstrike-team-a-prod-{}", hex(&ids[6]))
    );
    assert_eq!(name_of(&ids[8]), format!("crowdstrike-{}", hex(&ids[8])));
    assert_eq!(name_of(&ids[10]), "crowdstrike-conn-10");
    assert_eq!(name_of(&ids[11]), "tenable-conn-11");
    let doc = docs
        .iter()
        .find(|d| d["spec"]["connectionId"] == ids[4].to_string())
        .expect("exported");
    assert_eq!(doc["spec"]["identifier"], "Team A/Prod");
    assert_eq!(doc["spec"]["vendor"], "CROWDSTRIKE");
    // The key is never printed, and nothing was written to Leen.
    assert!(!out.contains(KEY) && !err.contains(KEY));
    assert!(fake.requests().iter().all(|r| r.method == "GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_ignored_cursor_pages_by_offset_to_the_same_manifests() {
    let (fake, org, _) = organization().await;
    let org_s = org.to_string();
    let args = ["--organization", org_s.as_str()];
    let (code, by_cursor, err) = export(&fake, &args);
    assert_eq!(code, 0, "{err}");
    fake.set_cursors(Cursors::Refused);
    let before = fake.count_operation("list");
    let (code, refused, err) = export(&fake, &args);
    assert_eq!(code, 0, "{err}");
    // One refused first page, then three offset pages.
    assert_eq!(fake.count_operation("list") - before, 4);
    fake.set_cursors(Cursors::Ignored);
    let before = fake.count_operation("list");
    let (code, ignored, err) = export(&fake, &args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fake.count_operation("list") - before, 3);
    assert_eq!(refused, by_cursor);
    assert_eq!(ignored, by_cursor);
    // The same organization exported twice gives the same files.
    fake.set_cursors(Cursors::Supported);
    assert_eq!(export(&fake, &args).1, by_cursor);
    // A connection made later whose name collides gets the suffix; no file is renamed.
    let later = Uuid::new_v4();
    fake.add_connection(org, later, "CROWDSTRIKE");
    fake.set_identifier(org, later, "edr");
    let (code, again, err) = export(&fake, &args);
    assert_eq!(code, 0, "{err}");
    let names = |yaml: &str| -> BTreeSet<String> {
        documents(yaml)
            .iter()
            .map(|d| d["metadata"]["name"].as_str().expect("name").to_string())
            .collect()
    };
    let added: Vec<String> = names(&again)
        .difference(&names(&by_cursor))
        .cloned()
        .collect();
    assert_eq!(
        added,
        [format!(
            "crowdstrike-edr-{}",
            &later.simple().to_string()[..8]
        )]
    );
    assert!(names(&by_cursor).is_subset(&names(&again)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manage_and_output_write_one_managed_file_per_connection() {
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key(KEY);
    let org = Uuid::new_v4();
    let (a, b, gone) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for id in [a, b, gone] {
        fake.add_connection(org, id, "QUALYS");
    }
    fake.set_identifier(org, a, "scanner-eu");
    fake.set_identifier(org, b, "scanner-us");
    fake.set_soft_delete(true);
    let c = reqwest_delete(&fake, org, gone).await;
    assert_eq!(c, 200);
    let dir = tempfile::tempdir().expect("dir");
    let out_dir = dir.path().join("leen");
    let org_s = org.to_string();
    let (code, out, err) = export(
        &fake,
        &[
            "--organization",
            &org_s,
            "--region",
            "eu",
            "--manage",
            "--output",
            out_dir.to_str().expect("path"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "files, not standard output: {out}");
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["qualys-scanner-eu.yaml", "qualys-scanner-us.yaml"]);
    assert!(
        err.contains(&format!(
            "left out connection \"{gone}\": Leen reports it DELETED"
        )),
        "{err}"
    );
    let text = std::fs::read_to_string(out_dir.join("qualys-scanner-eu.yaml")).expect("file");
    assert!(text.starts_with("# Leen connection"), "{text}");
    let doc: Value = serde_yaml::from_str(&text).expect("yaml");
    assert_eq!(doc["spec"]["managementPolicy"], "Full");
    assert_eq!(doc["spec"]["region"], "eu");
    assert_eq!(doc["spec"]["connectionId"], a.to_string());
    assert_eq!(doc["metadata"]["namespace"], "default");
}

async fn reqwest_delete(fake: &FakeLeen, org: Uuid, id: Uuid) -> u16 {
    let url = format!(
        "{}/provisioning/organizations/{org}/connections/{id}",
        fake.base_url()
    );
    let answer = reqwest::Client::new()
        .delete(url)
        .header("X-API-KEY", KEY)
        .send()
        .await
        .expect("delete");
    answer.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_or_bad_arguments_fail_with_one_clear_line() {
    let fake = FakeLeen::start().await.expect("fake");
    let org = Uuid::new_v4();
    fake.add_connection(org, Uuid::new_v4(), "TENABLE");
    let org_s = org.to_string();
    // The fake does not know KEY here.
    let (code, out, err) = export(&fake, &["--organization", &org_s]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("Leen refused the API key"), "{err}");
    assert!(!err.contains(KEY), "{err}");
    for (args, says) in [
        (vec!["--organization", "not-a-uuid"], "--organization"),
        (
            vec!["--organization", org_s.as_str(), "--region", "mars"],
            "--region",
        ),
        (
            vec![
                "--organization",
                org_s.as_str(),
                "--namespace",
                "Not_A_Namespace",
            ],
            "--namespace",
        ),
    ] {
        let (code, _, err) = export(&fake, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.trim().lines().count() == 1 && err.contains(says),
            "{err}"
        );
    }
    assert_eq!(fake.requests().len(), 1, "bad arguments call nothing");
}
