//! The Dockerfile cannot be built here (no container engine), so what its build needs is
//! checked instead: every path `cargo build --locked` of the workspace reads (the
//! manifests, the lock file, the sources, every workspace member and every target the
//! manifest declares) is copied into the build stage.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The paths the build stage copies (the sources of its `COPY SRC... DEST` lines).
fn copied() -> Vec<String> {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    // Before the first FROM: comments; then the build stage.
    let build = dockerfile.split("\nFROM ").nth(1).expect("a build stage");
    build
        .lines()
        .filter_map(|l| l.trim().strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len().saturating_sub(1)]
                .iter()
                .map(|p| p.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What cargo reads to build the workspace: the manifest, the lock, `src`, the workspace
/// members and the top folder of each declared target path.
fn needed() -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let mut needed = vec![
        "Cargo.toml".to_string(),
        "Cargo.lock".to_string(),
        "src".to_string(),
    ];
    let mut in_members = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with("members") {
            in_members = true;
        }
        if in_members {
            for quoted in line.split('"').skip(1).step_by(2) {
                needed.push(quoted.to_string());
            }
            if line.contains(']') {
                in_members = false;
            }
        }
        if let Some(path) = line.strip_prefix("path = ") {
            let path = path.trim_matches('"');
            let top = path.split('/').next().unwrap_or(path);
            needed.push(top.to_string());
        }
    }
    needed.sort();
    needed.dedup();
    needed
}

#[test]
fn the_build_stage_copies_everything_cargo_reads() {
    let copied = copied();
    let needed = needed();
    assert!(needed.contains(&"fake-leen".to_string()), "{needed:?}");
    assert!(needed.contains(&"benches".to_string()), "{needed:?}");
    for path in &needed {
        assert!(
            copied.iter().any(|c| c == path),
            "the Dockerfile's build stage does not copy {path} (copies {copied:?})"
        );
        assert!(root().join(path).exists(), "{path} exists");
    }
}

#[test]
fn the_image_runs_the_binary_as_the_non_root_user() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let runtime = dockerfile.rsplit("\nFROM ").next().expect("runtime stage");
    assert!(runtime.contains("USER 65532:65532"), "{runtime}");
    assert!(
        runtime.contains("ENTRYPOINT [\"/leen-operator\"]"),
        "{runtime}"
    );
    // hack/image.sh makes the same layout.
    let script = std::fs::read_to_string(root().join("hack/image.sh")).expect("image.sh");
    assert!(
        script.contains("--entrypoint /leen-operator"),
        "image.sh entrypoint"
    );
    assert!(script.contains("--user 65532:65532"), "image.sh user");
}
