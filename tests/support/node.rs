//! A real one-node cluster (`../shared/envtest/node/up.sh`: kubelet, containerd, the
//! controllers), the operator's image imported into its containerd, and a fake Leen over
//! https inside the node's network namespace, where pods reach it. Needs root.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use fake_leen::{FakeLeen, tls::TestCa};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

/// `../shared/envtest/node`, beside the project (or `LEEN_NODE_DIR`).
fn node_scripts() -> PathBuf {
    std::env::var_os("LEEN_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/envtest/node"))
}

/// A running node; stopped (down.sh) when dropped.
pub struct Node {
    dir: tempfile::TempDir,
    vars: HashMap<String, String>,
}

impl Node {
    /// Starts a node (about 25 s).
    pub fn up() -> Self {
        assert!(
            is_root(),
            "the cluster tier needs root (network namespaces, containerd): run it as root, as CI does"
        );
        let dir = tempfile::Builder::new()
            .prefix("leen-node-")
            .tempdir()
            .expect("temp dir");
        let out = Command::new(node_scripts().join("up.sh"))
            .arg(dir.path())
            .output()
            .expect("up.sh runs");
        assert!(
            out.status.success(),
            "up.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vars = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self { dir, vars }
    }

    /// One of the variables up.sh exports.
    pub fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("up.sh exported no {name}"))
    }

    /// The node's address (API server and pods' way out).
    pub fn ip(&self) -> std::net::IpAddr {
        self.var("LEEN_NODE_IP").parse().expect("node ip")
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &str {
        self.var("KUBECONFIG")
    }

    /// A client of the admin user.
    pub async fn client(&self) -> Client {
        leen_operator::install_crypto_provider();
        let kc = Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig reads");
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig valid");
        Client::try_from(config).expect("client")
    }

    /// Runs a command against this cluster (KUBECONFIG set); panics when it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .output()
            .unwrap_or_else(|e| panic!("{program} runs: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{program} {args:?} failed: {text}");
        text
    }

    /// Runs `ctr images ARGS` against the node's containerd (namespace `k8s.io`).
    pub fn ctr_images(&self, args: &[&str]) -> String {
        let netns = format!("--net={}", self.var("LEEN_NODE_NETNS"));
        let mut argv = vec![
            netns.as_str(),
            "ctr",
            "--address",
            self.var("LEEN_NODE_CONTAINERD"),
            "-n",
            "k8s.io",
            "images",
        ];
        argv.extend_from_slice(args);
        self.run("nsenter", &argv)
    }

    /// Imports an OCI archive into the node's containerd.
    pub fn import(&self, archive: &Path) {
        self.ctr_images(&["import", &archive.to_string_lossy()]);
    }

    /// A fake Leen serving https inside the node's network namespace, on every address of
    /// it, with a certificate for the node's IP from a new test CA. The test talks to it in
    /// process (its state is shared); pods reach it at [`ClusterLeen::endpoint`].
    pub fn fake_leen(&self) -> ClusterLeen {
        let ca = TestCa::new().expect("test CA");
        let cert = ca.issue(&["localhost"], &[self.ip()]).expect("certificate");
        let netns = self.var("LEEN_NODE_NETNS").to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        // setns applies to the calling thread only: the fake's runtime lives on a thread of
        // its own inside the node's namespace, and its sockets with it.
        std::thread::spawn(move || {
            let file = std::fs::File::open(&netns).expect("netns opens");
            // SAFETY: setns on this thread's own network namespace with a valid fd.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let fake = FakeLeen::start_tls_on("0.0.0.0:0".parse().expect("addr"), &cert)
                    .await
                    .expect("fake Leen listens");
                let _ = tx.send(fake);
                std::future::pending::<()>().await;
            });
        });
        let fake = rx.recv().expect("fake Leen started");
        ClusterLeen {
            endpoint: format!("https://{}:{}/v1", self.ip(), fake.addr().port()),
            fake,
            ca_pem: ca.pem().to_string(),
        }
    }

    /// Where the node keeps its logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A registry (Debian's `docker-registry`, plain http) inside the node's network
    /// namespace on port 5000: this side pushes to `NODE_IP:5000`, and the node's
    /// containerd pulls from `127.0.0.1:5000` (a loopback registry, which containerd
    /// reaches over http). Stopped when dropped.
    pub fn registry(&self) -> Registry {
        let root = self.dir().join("registry");
        std::fs::create_dir_all(&root).expect("registry dir");
        let config = root.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 0.0.0.0:5000\n",
                root.join("data").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(root.join("registry.log")).expect("registry log");
        let netns = format!("--net={}", self.var("LEEN_NODE_NETNS"));
        let child = Command::new("nsenter")
            .args([netns.as_str(), "docker-registry", "serve"])
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry starts (apt-get install docker-registry)");
        let registry = Registry {
            child,
            pushed_to: format!("{}:5000", self.ip()),
        };
        // Up once its API answers.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let url = format!("http://{}/v2/", registry.pushed_to);
        while Command::new("curl")
            .args(["-fsS", "-o", "/dev/null", &url])
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the registry did not answer at {url}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        registry
    }
}

/// A registry in the node's network namespace; see [`Node::registry`].
pub struct Registry {
    child: std::process::Child,
    /// `NODE_IP:5000`: where this side pushes (skopeo, `helm push`).
    pub pushed_to: String,
}

impl Registry {
    /// The address pods' images are pulled from, inside the node.
    pub const PULLED_FROM: &'static str = "127.0.0.1:5000";

    /// Pushes an OCI archive as `repository:tag`; returns the reference the node pulls.
    pub fn push_image(&self, archive: &Path, repository: &str, tag: &str) -> String {
        let dest = format!("docker://{}/{repository}:{tag}", self.pushed_to);
        let out = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(&dest)
            .output()
            .expect("skopeo runs (apt-get install skopeo)");
        assert!(
            out.status.success(),
            "skopeo copy to {dest} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("{}/{repository}:{tag}", Self::PULLED_FROM)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new(node_scripts().join("down.sh"))
            .arg(self.dir.path())
            .output();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A fake Leen that pods reach over https.
pub struct ClusterLeen {
    /// The fake itself (its state: connections, requests).
    pub fake: FakeLeen,
    /// `https://NODE_IP:PORT/v1`: the chart's `leen.endpoint`.
    pub endpoint: String,
    /// The test CA that issued its certificate: the chart's `leen.ca.configMap` content.
    pub ca_pem: String,
}

/// The operator's image as an OCI archive, made by `hack/image.sh` (a release build, once
/// per test binary). Returns its path and reference.
pub fn operator_image() -> (PathBuf, String) {
    static IMAGE: OnceLock<(PathBuf, String)> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let path = root.join("target/leen-operator-image.tar");
            let out = Command::new(root.join("hack/image.sh"))
                .arg(&path)
                .output()
                .expect("hack/image.sh runs");
            assert!(
                out.status.success(),
                "hack/image.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let reference = String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or_default()
                .to_string();
            (path, reference)
        })
        .clone()
}
