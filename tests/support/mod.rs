//! Test harness: a real kube-apiserver + etcd per test (the envtest way), the project's
//! fake Leen, and the operator binary as a child process.
//!
//! Each test starts its own control plane on free loopback ports in its own temp dir.
//! That costs a few seconds per test, but tests share nothing (no CRD, watch or namespace
//! state can leak between them), can run in parallel, and a crash of one cannot wedge
//! another. Everything is stopped on drop, also when the test panics.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    ByteString,
    api::{
        core::v1::{Namespace, Secret},
        events::v1::Event,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Client, Config,
    api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{conditions, wait::await_condition, watcher},
};
use leen_operator::{
    fake::FakeLeen,
    resource::{LeenConnection, LeenConnectionSpec},
};
use uuid::Uuid;

/// The operator's default API key in a [`Scenario`].
pub const DEFAULT_KEY: &str = "leen-test-default-key-5f1d";

/// Token of the admin user in every test control plane.
pub const ADMIN_TOKEN: &str = "leen-test-admin-token";

/// Upper bound for anything a test waits for; a condition, never a sleep.
pub const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The folder holding kube-apiserver and etcd, from `KUBEBUILDER_ASSETS`.
/// `None` only when `LEEN_SKIP_ENVTEST=1` asks to skip; otherwise missing assets panic
/// with the one line that says how to get them.
pub fn assets() -> Option<PathBuf> {
    if std::env::var("LEEN_SKIP_ENVTEST").as_deref() == Ok("1") {
        eprintln!("LEEN_SKIP_ENVTEST=1: skipping a test that needs kube-apiserver and etcd");
        return None;
    }
    let dir = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from);
    match dir {
        Some(d) if d.join("kube-apiserver").is_file() && d.join("etcd").exists() => Some(d),
        _ => panic!(
            "KUBEBUILDER_ASSETS must name a folder holding kube-apiserver and etcd: run `export KUBEBUILDER_ASSETS=$(../shared/envtest/setup.sh)` (or `setup-envtest use -p path`), or set LEEN_SKIP_ENVTEST=1 to skip these tests"
        ),
    }
}

struct Proc {
    child: Child,
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
    /// Returns `None` when `LEEN_SKIP_ENVTEST=1`.
    pub async fn start() -> Option<Self> {
        Self::start_with_tokens(&[]).await
    }

    /// As [`ControlPlane::start`], with extra `token,user,uid[,groups]` lines in the tokens file.
    pub async fn start_with_tokens(extra_tokens: &[&str]) -> Option<Self> {
        let assets = assets()?;
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
        cp.install_crds().await;
        Some(cp)
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
        let yaml = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/leenconnection.yaml"),
        )
        .expect("crds/leenconnection.yaml");
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("CRD parses");
        let name = crd.metadata.name.clone().expect("CRD name");
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD created");
        let established = await_condition(crds, &name, conditions::is_crd_established());
        tokio::time::timeout(WAIT, established)
            .await
            .expect("CRD established in time")
            .expect("CRD watch");
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

/// A LeenConnection object.
pub fn connection(name: &str, org: uuid::Uuid, id: uuid::Uuid) -> LeenConnection {
    let spec: LeenConnectionSpec = serde_json::from_value(serde_json::json!({
        "organizationId": org.to_string(),
        "connectionId": id.to_string(),
    }))
    .expect("spec");
    LeenConnection::new(name, spec)
}

/// Creates a Secret with one key.
pub async fn secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &s)
        .await
        .expect("secret created");
}

/// Waits until the object satisfies `pred` (watch-based, bounded by [`WAIT`]).
pub async fn wait_for(
    api: &Api<LeenConnection>,
    name: &str,
    what: &str,
    pred: impl Fn(&LeenConnection) -> bool,
) -> LeenConnection {
    let cond = move |obj: Option<&LeenConnection>| obj.is_some_and(&pred);
    match tokio::time::timeout(WAIT, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("{name}: gone while waiting for {what}"),
        Ok(Err(e)) => panic!("{name}: watch failed waiting for {what}: {e}"),
        Err(_) => panic!(
            "{name}: no {what} within {WAIT:?}; now: {:?}",
            api.get_opt(name).await.ok().flatten().map(|o| o.status)
        ),
    }
}

/// Waits until the Secret satisfies `pred` (watch-based, bounded by [`WAIT`]).
pub async fn wait_secret(
    api: &Api<Secret>,
    name: &str,
    what: &str,
    pred: impl Fn(&Secret) -> bool,
) -> Option<Secret> {
    let cond = move |obj: Option<&Secret>| obj.is_some_and(&pred);
    match tokio::time::timeout(WAIT, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => panic!("Secret {name}: watch failed waiting for {what}: {e}"),
        Err(_) => panic!(
            "Secret {name}: no {what} within {WAIT:?}; finalizers now: {:?}",
            api.get_opt(name)
                .await
                .ok()
                .flatten()
                .map(|s| s.metadata.finalizers)
        ),
    }
}

/// Whether a Secret carries `leen.dev/secret-in-use`.
pub fn secret_protected(s: &Secret) -> bool {
    s.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == leen_operator::resource::SECRET_FINALIZER)
}

/// Waits until the Secret is gone.
pub async fn wait_secret_gone(api: &Api<Secret>, name: &str) {
    let gone = await_condition(api.clone(), name, |o: Option<&Secret>| o.is_none());
    match tokio::time::timeout(WAIT, gone).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("Secret {name}: watch failed waiting for deletion: {e}"),
        Err(_) => panic!("Secret {name}: still present after {WAIT:?}"),
    }
}

/// Waits until the object is gone.
pub async fn wait_gone(api: &Api<LeenConnection>, name: &str) {
    let gone = await_condition(api.clone(), name, |o: Option<&LeenConnection>| o.is_none());
    match tokio::time::timeout(WAIT, gone).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("{name}: watch failed waiting for deletion: {e}"),
        Err(_) => panic!(
            "{name}: still present after {WAIT:?}: {:?}",
            api.get_opt(name)
                .await
                .ok()
                .flatten()
                .map(|o| (o.metadata.finalizers, o.status))
        ),
    }
}

/// Whether the operator's finalizer is on the object.
pub fn has_finalizer(o: &LeenConnection) -> bool {
    o.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == leen_operator::resource::FINALIZER)
}

/// The reason of the Ready condition.
pub fn ready_reason(obj: &LeenConnection) -> Option<String> {
    obj.status
        .as_ref()
        .and_then(|s| s.ready())
        .map(|c| c.reason.clone())
}

/// The message of the Ready condition ("" when none).
pub fn ready_message(obj: &LeenConnection) -> String {
    obj.status
        .as_ref()
        .and_then(|s| s.ready())
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Whether Ready is True.
pub fn is_ready(obj: &LeenConnection) -> bool {
    obj.status
        .as_ref()
        .and_then(|s| s.ready())
        .is_some_and(|c| c.status == "True")
}

/// Deletes an object (foreground-agnostic, like `kubectl delete --wait=false`).
pub async fn delete(api: &Api<LeenConnection>, name: &str) {
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete accepted");
}

/// Collects every version of one object a watch sees until the object is deleted: used to
/// prove the status write happened while the finalizer was still present.
pub fn record_versions(
    api: Api<LeenConnection>,
    name: &str,
) -> tokio::task::JoinHandle<Vec<LeenConnection>> {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut stream = std::pin::pin!(watcher(api, cfg));
        let deadline = tokio::time::Instant::now() + WAIT;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, stream.next()).await {
            match event {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => seen.push(o),
                Ok(watcher::Event::Delete(_)) => break,
                _ => {}
            }
        }
        seen
    })
}

/// A TCP proxy on loopback in front of `upstream` that can be made to stall: it then keeps
/// every connection open but forwards nothing, as a stuck connection or an API server
/// under throttling would. Stops when dropped.
pub struct StallingProxy {
    /// `127.0.0.1:PORT` to connect to.
    pub addr: std::net::SocketAddr,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::{Arc, atomic::AtomicBool};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy binds");
        let addr = listener.local_addr().expect("proxy addr");
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, flag.clone()));
                    pump(sr, cw, flag).await;
                });
            }
        });
        Self {
            addr,
            stalled,
            task,
        }
    }

    /// From now on nothing is forwarded.
    pub fn stall(&self) {
        self.stalled
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Stalled: hold the bytes (and the connection) forever.
        while stalled.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Polls for the whole period that `holds` stays true; panics at the first time it does
/// not. A negative assertion ("no DELETE was sent") done right: not one sample after a sleep.
pub async fn consistently(what: &str, period: Duration, holds: impl AsyncFn() -> bool) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        assert!(holds().await, "{what} stopped holding");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every `PATH` lookup the harness needs, checked early with a clear message.
pub fn require_tools() {
    for tool in ["openssl", "kubectl"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(found, "{tool} is not on PATH; .ci/run installs it");
    }
}

// Field order is drop order: the operator stops (and shows its log on failure) before
// the control plane and its folder go.
pub struct Scenario {
    /// The operator binary.
    pub op: Operator,
    /// The fake Leen.
    pub fake: FakeLeen,
    /// An admin client.
    pub client: Client,
    /// LeenConnections in the scenario's namespace.
    pub api: Api<LeenConnection>,
    /// The namespace.
    pub ns: &'static str,
    /// The control plane.
    pub cp: ControlPlane,
}

/// Control plane, fake Leen accepting [`DEFAULT_KEY`], namespace `ns`, operator running
/// with [`DEFAULT_KEY`] as its default key. `None` when envtest is skipped.
pub async fn scenario(ns: &'static str, extra_env: &[(&str, &str)]) -> Option<Scenario> {
    let cp = ControlPlane::start().await?;
    let fake = FakeLeen::start().await.expect("fake Leen");
    fake.add_api_key(DEFAULT_KEY);
    cp.namespace(ns).await;
    let endpoint = fake.base_url();
    let mut vars = vec![
        ("LEEN_ENDPOINT", endpoint.as_str()),
        ("LEEN_API_KEY", DEFAULT_KEY),
    ];
    vars.extend_from_slice(extra_env);
    let op = Operator::start(&cp, &vars).await;
    let client = cp.client().await;
    let api = Api::namespaced(client.clone(), ns);
    Some(Scenario {
        cp,
        fake,
        op,
        client,
        api,
        ns,
    })
}

impl Scenario {
    /// A new connection in the fake Leen.
    pub fn seeded(&self) -> (Uuid, Uuid) {
        let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
        self.fake.add_connection(org, id, "CrowdStrike");
        (org, id)
    }

    /// Creates namespace `ns` and in it a LeenConnection `name` for a new connection.
    pub async fn create_elsewhere(&self, ns: &str, name: &str) -> (Api<LeenConnection>, Uuid) {
        self.cp.namespace(ns).await;
        let api: Api<LeenConnection> = Api::namespaced(self.client.clone(), ns);
        let (org, id) = self.seeded();
        api.create(&PostParams::default(), &connection(name, org, id))
            .await
            .expect("created");
        (api, id)
    }

    /// Creates a LeenConnection.
    pub async fn create(&self, obj: LeenConnection) {
        self.api
            .create(&PostParams::default(), &obj)
            .await
            .expect("LeenConnection created");
    }

    /// Creates a resource for a seeded connection and waits until it is Ready.
    pub async fn ready_connection(&self, name: &str) -> (Uuid, Uuid) {
        let (org, id) = self.seeded();
        self.create(connection(name, org, id)).await;
        wait_for(&self.api, name, "Ready=True", is_ready).await;
        (org, id)
    }

    /// The Events with this reason, waiting (bounded) for the first one: Events are
    /// published after the status write a test usually waits on.
    pub async fn events(&self, reason: &str) -> Vec<Event> {
        events(&self.client, self.ns, reason).await
    }

    /// Creates Secret `secret` (key `apiKey` = `key`, which the fake Leen accepts) and a
    /// LeenConnection `name` for a new connection that reads its key from it.
    pub async fn create_with_secret(
        &self,
        name: &str,
        secret_name: &str,
        key: &str,
    ) -> (Uuid, Uuid) {
        self.fake.add_api_key(key);
        secret(&self.client, self.ns, secret_name, "apiKey", key).await;
        let (org, id) = self.seeded();
        let mut obj = connection(name, org, id);
        obj.spec.api_key_secret_ref =
            serde_json::from_value(serde_json::json!({ "name": secret_name })).ok();
        self.create(obj).await;
        (org, id)
    }

    /// Sets spec.deletionPolicy.
    pub async fn set_policy(&self, name: &str, policy: &str) {
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"deletionPolicy": policy}})),
            )
            .await
            .expect("spec patched");
    }
}

/// The Events with this reason in `ns`, waiting (bounded) for the first one: Events are
/// published in the background, after the writes a test usually waits on.
pub async fn events(client: &Client, ns: &str, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + WAIT;
    loop {
        let found: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Seeds `n` connections in the fake Leen and creates a LeenConnection for each
/// (`{prefix}{i}`), `parallelism` creates at a time. Returns (name, org, id).
pub async fn create_many(
    api: &Api<LeenConnection>,
    fake: &FakeLeen,
    prefix: &str,
    n: usize,
    parallelism: usize,
) -> Vec<(String, uuid::Uuid, uuid::Uuid)> {
    let items: Vec<(String, uuid::Uuid, uuid::Uuid)> = (0..n)
        .map(|i| {
            (
                format!("{prefix}{i}"),
                uuid::Uuid::new_v4(),
                uuid::Uuid::new_v4(),
            )
        })
        .collect();
    for (_, org, id) in &items {
        fake.add_connection(*org, *id, "CrowdStrike");
    }
    futures::stream::iter(items.clone())
        .map(|(name, org, id)| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &connection(&name, org, id))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(parallelism)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("created");
    items
}
