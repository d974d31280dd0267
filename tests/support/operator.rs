//! The operator binary as a child process: start, kill, restart, its log and metrics.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::*;

/// The operator binary running against a control plane.
pub struct Operator {
    proc: Option<Proc>,
    /// `http://127.0.0.1:PORT` of its telemetry endpoints.
    pub metrics_url: String,
    /// Its log file.
    pub log: PathBuf,
    env: Vec<(String, String)>,
    kubeconfig: PathBuf,
    port: u16,
    startup: Duration,
}

impl Operator {
    /// Starts `leen-operator` with the given environment and waits for `/readyz`.
    pub async fn start(cp: &ControlPlane, env: &[(&str, &str)]) -> Self {
        Self::start_with_kubeconfig(cp, &cp.kubeconfig, env).await
    }

    /// As [`Operator::start`], as the user of another kubeconfig.
    pub async fn start_with_kubeconfig(
        cp: &ControlPlane,
        kubeconfig: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let log = cp.dir.path().join(format!("operator-{port}.log"));
        let mut op = Operator {
            proc: None,
            metrics_url: format!("http://127.0.0.1:{port}"),
            log,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            kubeconfig: kubeconfig.to_path_buf(),
            port,
            startup: Duration::ZERO,
        };
        op.spawn().await;
        op
    }

    async fn spawn(&mut self) {
        let started = Instant::now();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("operator log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_leen-operator"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("METRICS_ADDR", format!("127.0.0.1:{}", self.port))
            .env(
                "LOG_LEVEL",
                std::env::var("LEEN_TEST_LOG")
                    .unwrap_or_else(|_| "info,leen_operator=debug".into()),
            )
            .env("LEEN_SYNC_INTERVAL", "1h")
            // The scenarios use the default key in their namespaces (a test may narrow it).
            .env("LEEN_DEFAULT_KEY_NAMESPACES", "*")
            // Suites delete far more than a budget allows; the budget's own tests set it.
            .env("LEEN_MAX_DELETIONS", "0");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("operator starts");
        self.proc = Some(Proc { child });
        self.wait_ready().await;
        self.startup = started.elapsed();
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if reqwest::get(format!("{}/readyz", self.metrics_url))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            if let Some(p) = self.proc.as_mut()
                && let Ok(Some(status)) = p.child.try_wait()
            {
                panic!("operator exited ({status}): {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "operator not ready: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The operator's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    /// Milliseconds from spawn to `/readyz` of the last start.
    pub fn startup(&self) -> std::time::Duration {
        self.startup
    }

    /// Whether the process has exited by itself.
    pub fn exited(&mut self) -> bool {
        self.proc
            .as_mut()
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(Some(_))))
    }

    /// SIGKILLs the operator.
    pub fn kill(&mut self) {
        self.proc = None;
    }

    /// Starts it again with the same settings.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded by [`WAIT`]) until its log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the operator log: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.metrics_url))
            .await
            .expect("metrics reachable")
            .text()
            .await
            .expect("metrics text")
    }

    /// Sum of a metric's samples whose line contains every one of `labels`.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- operator log (last 60 lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
