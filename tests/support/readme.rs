//! The READMEs' fenced blocks, found by the tag on the line before each one:
//! `<!-- run: NAME -->` for a shell block a test runs as written, `<!-- file: PATH -->` for
//! a block that shows a file of the repository whole.
#![allow(dead_code)]

use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

/// The project README.
pub const README: &str = "README.md";
/// The chart's README.
pub const CHART_README: &str = "charts/leen-operator/README.md";

/// One fenced block of a Markdown file.
#[derive(Debug, Clone)]
pub struct Block {
    /// The file, relative to the repository.
    pub file: &'static str,
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The info string after the fence (`sh`, `yaml`, ...).
    pub lang: String,
    /// What the comment on the line before says: `run: NAME` or `file: PATH`.
    pub tag: Option<String>,
    /// The block's text, without the fence's indentation, ending in a newline.
    pub text: String,
}

/// Every fenced block of `file`.
pub fn blocks(file: &'static str) -> Vec<Block> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        let Some(fence) = ["```", "~~~"].into_iter().find(|f| trimmed.starts_with(f)) else {
            i += 1;
            continue;
        };
        let lang = &trimmed[fence.len()..];
        let tag = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.trim().strip_prefix("<!--"))
            .and_then(|l| l.strip_suffix("-->"))
            .map(|t| t.trim().to_string());
        let start = i;
        let mut body = String::new();
        i += 1;
        while i < lines.len() && lines[i].trim() != fence {
            let l = lines[i];
            body.push_str(
                l.get(indent.min(l.len() - l.trim_start().len())..)
                    .unwrap_or(""),
            );
            body.push('\n');
            i += 1;
        }
        assert!(i < lines.len(), "{file}:{}: unclosed fence", start + 1);
        out.push(Block {
            file,
            line: start + 1,
            lang: lang.trim().to_string(),
            tag,
            text: body,
        });
        i += 1;
    }
    out
}

impl Block {
    /// Whether the block holds commands: a shell block, or a console block with `$ ` lines.
    pub fn is_shell(&self) -> bool {
        let lang = self
            .lang
            .split(|c: char| c.is_whitespace() || c == '{' || c == ',')
            .next()
            .unwrap_or_default();
        matches!(lang, "sh" | "bash" | "shell" | "zsh")
            || (lang == "console" && self.text.lines().any(|l| l.starts_with("$ ")))
    }

    /// The commands: the text of a shell block, the `$ ` lines of a console block.
    pub fn commands(&self) -> String {
        if self.lang.starts_with("console") {
            self.text
                .lines()
                .filter_map(|l| l.strip_prefix("$ "))
                .map(|l| format!("{l}\n"))
                .collect()
        } else {
            self.text.clone()
        }
    }
}

/// The commands of the block tagged `<!-- run: name -->` in `file` (there must be one, or
/// several with the same text).
pub fn shell(file: &'static str, name: &str) -> String {
    let tag = format!("run: {name}");
    let found: Vec<Block> = blocks(file)
        .into_iter()
        .filter(|b| b.tag.as_deref() == Some(tag.as_str()))
        .collect();
    assert!(
        !found.is_empty(),
        "{file} has no block tagged <!-- {tag} -->"
    );
    assert!(
        found.iter().all(|b| b.text == found[0].text),
        "{file}: the blocks tagged <!-- {tag} --> differ"
    );
    found[0].commands()
}

/// Replaces each placeholder of a block (`<your Leen API key>`, ...) by what the test uses,
/// insisting that each one is there.
pub fn fill(block: &str, with: &[(&str, &str)]) -> String {
    let mut text = block.to_string();
    for (placeholder, value) in with {
        assert!(
            text.contains(placeholder),
            "the block no longer has {placeholder}: {block}"
        );
        text = text.replace(placeholder, value);
    }
    text
}

/// `bash -euo pipefail -c SCRIPT` in the repository, with `env` added to the test's
/// environment and `helm`'s folder on PATH.
pub fn command(script: &str, env: &[(&str, &str)]) -> Command {
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Ok(helm) = std::env::var("HELM")
        && let Some(dir) = Path::new(&helm).parent()
    {
        path = format!("{}:{path}", dir.display());
    }
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", script])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", path)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a block to its end (at most ten minutes: a block that waits, such as `kubectl
/// delete`, must not hang the suite); panics with its output unless it succeeds. Returns
/// stdout.
pub fn run(script: &str, env: &[(&str, &str)]) -> String {
    use std::os::unix::process::CommandExt;
    let child = command(script, env)
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx
            .recv_timeout(std::time::Duration::from_secs(600))
            .is_err()
        {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    });
    let out: Output = child.wait_with_output().expect("bash runs");
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the README's block failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
