//! A real kube-apiserver + etcd per test, found the envtest way, with the CRD installed.
#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Client, Config,
    api::{Api, ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{conditions, wait::await_condition},
};
use serde::Deserialize;

/// The operator's default API key in a [`Scenario`].
pub const DEFAULT_KEY: &str = "leen-test-default-key-5f1d";

/// Token of the admin user in every test control plane.
pub const ADMIN_TOKEN: &str = "leen-test-admin-token";

/// Upper bound for anything a test waits for; a condition, never a sleep.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The folder holding kube-apiserver and etcd, from `KUBEBUILDER_ASSETS`. Missing assets
/// fail the test with the one line that says how to get them: a test that needs the API
/// server never passes without one.
pub fn assets() -> PathBuf {
    let dir = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from);
    match dir {
        Some(d) if d.join("kube-apiserver").is_file() && d.join("etcd").exists() => d,
        _ => panic!(
            "KUBEBUILDER_ASSETS must name a folder holding kube-apiserver and etcd: run `export KUBEBUILDER_ASSETS=$(../shared/envtest/setup.sh)` (or `setup-envtest use -p path`), or run only the tests that need none (README, Tests)"
        ),
    }
}

pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running kube-apiserver + etcd with the CRD installed.
pub struct ControlPlane {
    // Field order is drop order: the API server stops before etcd, the dir goes last.
    apiserver: Option<Proc>,
    etcd: Proc,
    /// Working dir (logs, data, kubeconfig).
    pub dir: tempfile::TempDir,
    /// Kubeconfig file of the admin user.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub server: String,
    secure_port: u16,
    etcd_port: u16,
    assets: PathBuf,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver, waits for `/readyz` and installs `crds/`.
    pub async fn start() -> Self {
        Self::start_with_tokens(&[]).await
    }

    /// As [`ControlPlane::start`], with extra `token,user,uid[,groups]` lines in the tokens file.
    pub async fn start_with_tokens(extra_tokens: &[&str]) -> Self {
        let cp = Self::start_bare(extra_tokens).await;
        cp.install_crds().await;
        cp
    }

    /// As [`ControlPlane::start_with_tokens`], without the CRDs (for an install that brings
    /// its own, like `helm install`).
    pub async fn start_bare(extra_tokens: &[&str]) -> Self {
        let assets = assets();
        let dir = tempfile::Builder::new()
            .prefix("leen-envtest-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let (client_port, peer_port) = (free_port(), free_port());
        let etcd_log = std::fs::File::create(d.join("etcd.log")).expect("etcd log");
        let etcd = Command::new(assets.join("etcd"))
            .args([
                "--data-dir",
                &d.join("etcd").to_string_lossy(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer_port}"),
                "--unsafe-no-fsync",
            ])
            .stdout(Stdio::null())
            .stderr(etcd_log)
            .spawn()
            .expect("etcd starts");
        let etcd = Proc { child: etcd };

        let key = d.join("sa.key");
        let status = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl genrsa failed");
        let mut tokens = format!("{ADMIN_TOKEN},admin,admin,system:masters\n");
        for t in extra_tokens {
            tokens.push_str(t);
            tokens.push('\n');
        }
        std::fs::write(d.join("tokens.csv"), tokens).expect("tokens file");

        let secure_port = free_port();
        let mut cp = ControlPlane {
            apiserver: None,
            etcd,
            kubeconfig: d.join("kubeconfig"),
            server: format!("https://127.0.0.1:{secure_port}"),
            secure_port,
            etcd_port: client_port,
            assets,
            dir,
        };
        cp.write_kubeconfig("admin", ADMIN_TOKEN, &cp.kubeconfig.clone());
        cp.start_apiserver().await;
        cp
    }

    fn etcd_url(client_port: u16) -> String {
        format!("http://127.0.0.1:{client_port}")
    }

    async fn start_apiserver(&mut self) {
        let client_port = self.etcd_port;
        let d = self.dir.path().to_path_buf();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("kube-apiserver.log"))
            .expect("apiserver log");
        let key = d.join("sa.key");
        let child = Command::new(self.assets.join("kube-apiserver"))
            .args([
                "--etcd-servers",
                &Self::etcd_url(client_port),
                "--cert-dir",
                &d.join("certs").to_string_lossy(),
                "--secure-port",
                &self.secure_port.to_string(),
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--service-cluster-ip-range",
                "10.0.0.0/24",
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--service-account-key-file",
                &key.to_string_lossy(),
                "--service-account-signing-key-file",
                &key.to_string_lossy(),
                "--token-auth-file",
                &d.join("tokens.csv").to_string_lossy(),
                "--authorization-mode",
                "RBAC",
                "--allow-privileged=true",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kube-apiserver starts");
        self.apiserver = Some(Proc { child });
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("http client");
        let deadline = Instant::now() + WAIT;
        loop {
            let ok = http
                .get(format!("{}/readyz", self.server))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            if let Some(p) = self.apiserver.as_mut()
                && let Ok(Some(status)) = p.child.try_wait()
            {
                panic!(
                    "kube-apiserver exited ({status}); log: {}",
                    self.dir.path().join("kube-apiserver.log").display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after {WAIT:?}; log: {}",
                self.dir.path().join("kube-apiserver.log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the API server (etcd keeps running).
    pub fn stop_apiserver(&mut self) {
        self.apiserver = None;
    }

    /// Starts the API server again on the same port and etcd.
    pub async fn restart_apiserver(&mut self) {
        self.stop_apiserver();
        self.start_apiserver().await;
    }

    /// Process ids of the API server (while it runs) and etcd, for CPU figures.
    pub fn pids(&self) -> (Option<u32>, u32) {
        (
            self.apiserver.as_ref().map(|p| p.child.id()),
            self.etcd.child.id(),
        )
    }

    /// The API server's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.secure_port))
    }

    /// Writes a kubeconfig for the admin user that reaches the API server at `server`
    /// (a proxy in front of it).
    pub fn write_kubeconfig_via(&self, server: &str, path: &Path) {
        let cfg = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: admin\ncurrent-context: envtest\n"
        );
        std::fs::write(path, cfg).expect("kubeconfig written");
    }

    /// Writes a kubeconfig for a user with a token.
    pub fn write_kubeconfig(&self, user: &str, token: &str, path: &Path) {
        let cfg = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: {user}\ncurrent-context: envtest\n",
            self.server
        );
        std::fs::write(path, cfg).expect("kubeconfig written");
    }

    /// A client of the admin user.
    pub async fn client(&self) -> Client {
        self.client_from(&self.kubeconfig).await
    }

    /// A client from a kubeconfig file.
    pub async fn client_from(&self, path: &Path) -> Client {
        leen_operator::install_crypto_provider();
        let kc = Kubeconfig::read_from(path).expect("kubeconfig reads");
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig valid");
        Client::try_from(config).expect("client")
    }

    async fn install_crds(&self) {
        let client = self.client().await;
        let crds: Api<CustomResourceDefinition> = Api::all(client);
        let yaml = leen_operator::resource::crd_yaml().expect("CRDs");
        let all: Vec<CustomResourceDefinition> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|doc| CustomResourceDefinition::deserialize(doc).expect("CRD parses"))
            .collect();
        for crd in &all {
            crds.create(&PostParams::default(), crd)
                .await
                .expect("CRD created");
        }
        for crd in all {
            let name = crd.metadata.name.clone().expect("CRD name");
            let established =
                await_condition(crds.clone(), &name, conditions::is_crd_established());
            tokio::time::timeout(WAIT, established)
                .await
                .expect("CRD established in time")
                .expect("CRD watch");
        }
    }

    /// Runs kubectl against this control plane; returns stdout, panics on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a namespace.
    pub async fn namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client().await);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
    }
}
