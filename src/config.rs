//! Command line and environment: flags with the environment variables of DESIGN.md as
//! their fallbacks, checked into [`Settings`] with one clear error line per bad setting.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};
use url::{Host, Url};

use crate::{budget::BudgetConfig, leen::ApiKey, telemetry::LogFormat};

/// Kubernetes operator for Leen Security API connections.
#[derive(Parser, Debug)]
#[command(name = "leen-operator", version, about)]
pub struct Cli {
    /// What to do; with none, the controller runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of the controller (also accepted after `run`).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[allow(clippy::large_enum_variant)] // parsed once at start-up
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the LeenConnection CRD as YAML (the content of crds/leenconnection.yaml).
    Crd,
    /// Run the controller (the default).
    Run(RunArgs),
    /// Print one LeenConnection manifest per connection of a Leen organization, ready to
    /// commit to Git: observe-only (managementPolicy: Observe) unless --manage.
    Export(ExportArgs),
}

/// What `leen-operator export` lists and how it writes the manifests.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// UUID of the Leen organization whose connections are exported.
    #[arg(long)]
    pub organization: String,

    /// Leen region of the organization: us, eu or apac.
    #[arg(long, default_value = "us")]
    pub region: String,

    /// Namespace the manifests are for.
    #[arg(long, default_value = "default")]
    pub namespace: String,

    /// Emit fully managed resources (managementPolicy: Full; deleting one then deletes
    /// its connection in Leen) instead of observe-only ones.
    #[arg(long)]
    pub manage: bool,

    /// Write one file per connection (<name>.yaml) into this directory instead of one
    /// multi-document YAML stream on standard output.
    #[arg(long, value_name = "DIR")]
    pub output: Option<std::path::PathBuf>,

    /// Read the API key from this Secret in --namespace (through the usual kube config),
    /// and name it in every manifest's apiKeySecretRef. Otherwise the key is
    /// --leen-api-key / LEEN_API_KEY and the manifests use the operator's default key.
    #[arg(long, value_name = "NAME")]
    pub api_key_secret: Option<String>,

    /// Key of --api-key-secret's data that holds the API key.
    #[arg(long, default_value = "apiKey")]
    pub api_key_secret_key: String,

    /// The key (when not read from a Secret), the endpoint and the CAs, as the operator
    /// takes them.
    #[command(flatten)]
    pub access: LeenAccessArgs,

    /// Timeout of one request to Leen.
    #[arg(long, env = "LEEN_REQUEST_TIMEOUT", default_value = "30s")]
    pub request_timeout: String,
}

/// [`ExportArgs`], checked.
#[derive(Clone, Debug)]
pub struct ExportSettings {
    /// The organization.
    pub organization: uuid::Uuid,
    /// Its region.
    pub region: crate::resource::Region,
    /// The manifests' namespace.
    pub namespace: String,
    /// Full management instead of observe-only.
    pub manage: bool,
    /// One file per connection in this directory; else standard output.
    pub output: Option<std::path::PathBuf>,
    /// Where the key comes from.
    pub key: ExportKey,
    /// How Leen is reached.
    pub leen: crate::leen::LeenClientConfig,
}

/// Where `export` reads the API key.
#[derive(Clone, Debug)]
pub enum ExportKey {
    /// Given (flag or environment).
    Given(ApiKey),
    /// A Secret in the manifests' namespace, named in each manifest.
    Secret {
        /// The Secret.
        name: String,
        /// Its data key.
        key: String,
    },
}

impl ExportArgs {
    /// Checks the arguments: one clear line per bad one.
    pub fn settings(&self) -> Result<ExportSettings, ConfigError> {
        let plain = |flag: &'static str, problem: String| err("", flag, problem);
        let organization = uuid::Uuid::parse_str(self.organization.trim()).map_err(|_| {
            plain(
                "organization",
                format!("{:?} is not a UUID", self.organization),
            )
        })?;
        let region = match self.region.trim() {
            "us" => crate::resource::Region::Us,
            "eu" => crate::resource::Region::Eu,
            "apac" => crate::resource::Region::Apac,
            other => {
                return Err(plain(
                    "region",
                    format!("{other:?} is not a region: us, eu or apac"),
                ));
            }
        };
        let namespace = self.namespace.trim().to_string();
        if !valid_namespace(&namespace) {
            return Err(plain(
                "namespace",
                format!("{namespace:?} is not a namespace name"),
            ));
        }
        let key = match non_empty(&self.api_key_secret) {
            Some(name) if crate::resource::is_dns1123_subdomain(name) => ExportKey::Secret {
                name: name.to_string(),
                key: self.api_key_secret_key.trim().to_string(),
            },
            Some(name) => {
                return Err(plain(
                    "api-key-secret",
                    format!("{name:?} is not a Secret name"),
                ));
            }
            None => match non_empty(&self.access.leen_api_key) {
                Some(key) => ExportKey::Given(
                    ApiKey::new(key)
                        .map_err(|e| err("LEEN_API_KEY", "leen-api-key", e.to_string()))?,
                ),
                None => {
                    return Err(err(
                        "LEEN_API_KEY",
                        "leen-api-key",
                        "no API key: set LEEN_API_KEY (or --leen-api-key), or name a Secret in --namespace with --api-key-secret",
                    ));
                }
            },
        };
        let endpoint = non_empty(&self.access.leen_endpoint)
            .map(parse_endpoint)
            .transpose()?;
        let request_timeout = duration(
            "LEEN_REQUEST_TIMEOUT",
            "request-timeout",
            &self.request_timeout,
            Duration::from_millis(100),
        )?;
        let extra_roots = non_empty(&self.access.leen_ca_file)
            .map(read_ca)
            .transpose()?;
        Ok(ExportSettings {
            organization,
            region,
            namespace,
            manage: self.manage,
            output: self.output.clone(),
            key,
            leen: crate::leen::LeenClientConfig {
                endpoint,
                request_timeout,
                extra_roots,
                ..Default::default()
            },
        })
    }
}

/// Settings of the controller, as given on the command line or in the environment, in
/// groups: Leen, the controller, the deletion budget, leader election, telemetry.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// How the operator reaches Leen.
    #[command(flatten)]
    pub leen: LeenArgs,
    /// What the controller watches and how fast it works.
    #[command(flatten)]
    pub controller: ControllerArgs,
    /// The deletion budget.
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// Leader election and the pod this replica runs in.
    #[command(flatten)]
    pub leader: LeaderArgs,
    /// Metrics, health endpoints and logs.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// The key, endpoint and CAs by which Leen is reached: the controller's and `export`'s.
#[derive(Args, Debug, Clone)]
pub struct LeenAccessArgs {
    /// Leen API key: the controller's default key for resources without apiKeySecretRef,
    /// or the key `export` lists with. Prefer the environment variable: flags show in
    /// process listings.
    #[arg(long, env = "LEEN_API_KEY", hide_env_values = true)]
    pub leen_api_key: Option<String>,

    /// Base URL including /v1 that replaces every region's URL (proxies, tests).
    /// http:// only for loopback hosts.
    #[arg(long, env = "LEEN_ENDPOINT")]
    pub leen_endpoint: Option<String>,

    /// A PEM bundle of extra CA certificates trusted for Leen (a TLS-inspecting proxy),
    /// added to the system roots, which stay trusted. HTTPS_PROXY / NO_PROXY are honoured.
    #[arg(long, env = "LEEN_CA_FILE")]
    pub leen_ca_file: Option<String>,
}

/// How the operator reaches Leen.
#[derive(Args, Debug, Clone)]
pub struct LeenArgs {
    /// The key, the endpoint and the CAs.
    #[command(flatten)]
    pub access: LeenAccessArgs,

    /// Namespaces whose resources may use the default key (LEEN_API_KEY), comma separated;
    /// `*`: every namespace. Default: none, since letting a namespace use the platform's
    /// key is an explicit trust decision. Resources elsewhere must name a Secret of their own.
    #[arg(long, env = "LEEN_DEFAULT_KEY_NAMESPACES", default_value = "")]
    pub default_key_namespaces: String,

    /// Timeout of one request to Leen.
    #[arg(long, env = "LEEN_REQUEST_TIMEOUT", default_value = "10s")]
    pub request_timeout: String,

    /// Most requests to Leen in flight at once.
    #[arg(long, env = "LEEN_MAX_IN_FLIGHT_REQUESTS", default_value = "16")]
    pub max_in_flight_requests: String,

    /// How long a create whose outcome is unknown (time-out, 5xx, operator killed) must be
    /// proven absent before another POST: longer than any POST could still be in flight at
    /// Leen. At least LEEN_REQUEST_TIMEOUT.
    #[arg(long, env = "LEEN_CREATE_SETTLE", default_value = "2m")]
    pub create_settle: String,
}

/// What the controller watches and how fast it works.
#[derive(Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Only watch these namespaces (comma separated: one watch each, so that Roles in
    /// them are all the operator needs); empty: all namespaces.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// How often a live connection is read again from Leen (e.g. 5m, 30s).
    #[arg(long, env = "LEEN_SYNC_INTERVAL", default_value = "5m")]
    pub sync_interval: String,

    /// Most LeenConnections reconciled at once.
    #[arg(long, env = "LEEN_MAX_CONCURRENT_RECONCILES", default_value = "32")]
    pub max_concurrent_reconciles: String,

    /// How long one watch request to the API server lasts before the next one replaces it
    /// (5s to 30m). A working watch hears from the API server at least this often, so a
    /// watch silent for 1.5 times this plus 5s counts as stuck: no DELETE is decided from
    /// the cache until it hears again.
    #[arg(long, env = "LEEN_WATCH_TIMEOUT", default_value = "60s")]
    pub watch_timeout: String,
}

/// The deletion budget.
#[derive(Args, Debug, Clone)]
pub struct BudgetArgs {
    /// Deletion budget: DELETE calls to Leen started per LEEN_DELETION_WINDOW across the
    /// installation (all replicas, across restarts); 0 disables it. Deletions beyond it are
    /// held until confirmed (annotation leen.dev/confirm-deletion=true) or orphaned.
    #[arg(long, env = "LEEN_MAX_DELETIONS", default_value = "25")]
    pub max_deletions: String,

    /// The deletion budget's sliding window (e.g. 10m).
    #[arg(long, env = "LEEN_DELETION_WINDOW", default_value = "10m")]
    pub deletion_window: String,

    /// Whether held deletions proceed on their own once the window frees the budget
    /// (true|false). Default false: a mistaken prune does not become right by waiting.
    #[arg(long, env = "LEEN_RESUME_HELD_DELETIONS", default_value = "false")]
    pub resume_held_deletions: String,
}

/// Leader election and the pod this replica runs in.
#[derive(Args, Debug, Clone)]
pub struct LeaderArgs {
    /// Elect a leader through a Lease so that only one replica reconciles (true|false).
    #[arg(long, env = "LEEN_LEADER_ELECTION", default_value = "false")]
    pub leader_election: String,

    /// Namespace of the leader Lease; defaults to POD_NAMESPACE.
    #[arg(long, env = "LEEN_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(long, env = "LEEN_LEASE_NAME", default_value = "leen-operator")]
    pub lease_name: String,

    /// How long a leader's Lease lives without renewal; a crashed leader is replaced
    /// within it.
    #[arg(long, env = "LEEN_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: String,

    /// This pod's name (the downward API sets it): the replica's identity in the Lease and
    /// the instance of its Events.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// This pod's namespace (the downward API sets it): where the Leases live by default.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
}

/// Metrics, health endpoints and logs.
#[derive(Args, Debug, Clone)]
pub struct TelemetryArgs {
    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log level or filter in RUST_LOG syntax (e.g. info, leen_operator=debug).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// A setting that cannot be used; its Display is the one line printed at start-up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {}: {problem}", if env.is_empty() { format!("--{flag}") } else { format!("{env} (--{flag})") })]
pub struct ConfigError {
    /// The environment variable (empty for a flag that has none).
    pub env: &'static str,
    /// The flag, without dashes.
    pub flag: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// Checked settings of the controller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Default API key.
    pub default_api_key: Option<ApiKey>,
    /// Endpoint replacing every region's URL.
    pub leen_endpoint: Option<Url>,
    /// The PEM bundle of extra CAs trusted for Leen (`LEEN_CA_FILE`), checked to hold at
    /// least one certificate.
    pub leen_ca: Option<Vec<u8>>,
    /// Namespaces to watch, each once, in the order given; empty: all.
    pub watch_namespaces: Vec<String>,
    /// Telemetry address.
    pub metrics_addr: SocketAddr,
    /// Sync interval.
    pub sync_interval: Duration,
    /// How long one watch request lasts.
    pub watch_timeout: Duration,
    /// Leen request timeout.
    pub request_timeout: Duration,
    /// How long an unknown create must be proven absent before another POST.
    pub create_settle: Duration,
    /// Concurrent reconciles.
    pub max_concurrent_reconciles: u16,
    /// Leen requests in flight.
    pub max_in_flight_requests: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Namespaces allowed to use the default key.
    pub default_key_namespaces: NamespaceSet,
    /// Leader election, when on.
    pub leader_election: Option<LeaderElectionSettings>,
    /// The deletion budget.
    pub budget: BudgetConfig,
    /// This pod's name (POD_NAME), when known.
    pub pod_name: Option<String>,
    /// This pod's namespace (POD_NAMESPACE), when known: where ClusterLeenOrganizations'
    /// key Secrets live (else the kube config's namespace).
    pub pod_namespace: Option<String>,
}

/// A set of namespaces, or all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceSet {
    /// Every namespace (`*`).
    All,
    /// Only these.
    Only(Vec<String>),
}

impl NamespaceSet {
    /// Whether the namespace is in the set.
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            NamespaceSet::All => true,
            NamespaceSet::Only(list) => list.iter().any(|n| n == ns),
        }
    }
}

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaderElectionSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// Lease duration.
    pub lease_duration: Duration,
}

fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn err(env: &'static str, flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        env,
        flag,
        problem: problem.into(),
    }
}

fn duration(
    env: &'static str,
    flag: &'static str,
    value: &str,
    min: Duration,
) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        err(
            env,
            flag,
            format!("{value:?} is not a duration like 30s or 5m: {e}"),
        )
    })?;
    if d < min {
        return Err(err(
            env,
            flag,
            format!(
                "{value:?} is shorter than {}",
                humantime::format_duration(min)
            ),
        ));
    }
    Ok(d)
}

/// Reads a PEM bundle of CA certificates (`LEEN_CA_FILE`).
fn read_ca(path: &str) -> Result<Vec<u8>, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| {
        err(
            "LEEN_CA_FILE",
            "leen-ca-file",
            format!("cannot read {path:?}: {e}"),
        )
    })?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        Ok(_) => Err(err(
            "LEEN_CA_FILE",
            "leen-ca-file",
            format!("{path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        )),
        Err(e) => Err(err(
            "LEEN_CA_FILE",
            "leen-ca-file",
            format!("{path:?} is not a PEM bundle of certificates: {e}"),
        )),
    }
}

fn count(env: &'static str, flag: &'static str, value: &str, max: u32) -> Result<u32, ConfigError> {
    match value.trim().parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(err(
            env,
            flag,
            format!("{value:?} is not a whole number from 1 to {max}"),
        )),
    }
}

/// Checks `LEEN_ENDPOINT`: an absolute https URL, or http to a loopback host; no
/// credentials, query or fragment.
pub fn parse_endpoint(value: &str) -> Result<Url, ConfigError> {
    let e = |p: String| err("LEEN_ENDPOINT", "leen-endpoint", p);
    let url = Url::parse(value.trim()).map_err(|x| e(format!("{value:?} is not a URL: {x}")))?;
    let loopback = match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(e(format!("{value:?} has no host"))),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(e(format!(
                "{value:?} uses http:// to a non-loopback host; the API key must travel over https://"
            )));
        }
        other => return Err(e(format!("{value:?} has scheme {other}; use https://"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(e("credentials in the URL are not allowed".to_string()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(e(format!("{value:?} must not have a query or fragment")));
    }
    // Leen's paths hang off /v1; without it every call reaches some other path, where a
    // proxy's 404 would read as "already deleted" to a less careful client.
    let last = url
        .path_segments()
        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()));
    if last != Some("v1") {
        return Err(e(format!(
            "{value:?} does not end in the API version path /v1 (e.g. https://api.leen.dev/v1)"
        )));
    }
    Ok(url)
}

impl RunArgs {
    /// Checks every setting; the first bad one is the error.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let leen_endpoint = non_empty(&self.leen.access.leen_endpoint)
            .map(parse_endpoint)
            .transpose()?;
        let metrics_addr = self.telemetry.metrics_addr.trim().parse().map_err(|_| {
            err(
                "METRICS_ADDR",
                "metrics-addr",
                format!(
                    "{:?} is not an address like 0.0.0.0:8080",
                    self.telemetry.metrics_addr
                ),
            )
        })?;
        let mut watch_namespaces: Vec<String> = Vec::new();
        for ns in self
            .controller
            .watch_namespace
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|ns| !ns.is_empty())
        {
            if !valid_namespace(ns) {
                return Err(err(
                    "WATCH_NAMESPACE",
                    "watch-namespace",
                    format!("{ns:?} is not a namespace name"),
                ));
            }
            if !watch_namespaces.iter().any(|seen| seen == ns) {
                watch_namespaces.push(ns.to_string());
            }
        }
        let default_key_namespaces = match self.leen.default_key_namespaces.trim() {
            "*" => NamespaceSet::All,
            list => {
                let names: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                if let Some(bad) = names.iter().find(|n| !valid_namespace(n)) {
                    return Err(err(
                        "LEEN_DEFAULT_KEY_NAMESPACES",
                        "default-key-namespaces",
                        format!("{bad:?} is not a namespace name (use * for all)"),
                    ));
                }
                NamespaceSet::Only(names)
            }
        };
        let leader_election = match self.leader.leader_election.trim() {
            "false" | "" => None,
            "true" => {
                let namespace = non_empty(&self.leader.leader_election_namespace)
                    .map(str::to_string)
                    .or_else(|| non_empty(&self.leader.pod_namespace).map(str::to_string))
                    .ok_or_else(|| {
                        err(
                            "LEEN_LEADER_ELECTION_NAMESPACE",
                            "leader-election-namespace",
                            "leader election needs the Lease's namespace (or POD_NAMESPACE)",
                        )
                    })?;
                Some(LeaderElectionSettings {
                    namespace,
                    lease_name: self.leader.lease_name.trim().to_string(),
                    lease_duration: duration(
                        "LEEN_LEASE_DURATION",
                        "lease-duration",
                        &self.leader.lease_duration,
                        Duration::from_secs(2),
                    )?,
                })
            }
            other => {
                return Err(err(
                    "LEEN_LEADER_ELECTION",
                    "leader-election",
                    format!("{other:?} is not true or false"),
                ));
            }
        };
        let max_deletions = match self.budget.max_deletions.trim().parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                return Err(err(
                    "LEEN_MAX_DELETIONS",
                    "max-deletions",
                    format!(
                        "{:?} is not a whole number (0 disables the budget)",
                        self.budget.max_deletions
                    ),
                ));
            }
        };
        let window = duration(
            "LEEN_DELETION_WINDOW",
            "deletion-window",
            &self.budget.deletion_window,
            Duration::from_secs(1),
        )?;
        let resume_held = match self.budget.resume_held_deletions.trim() {
            "true" => true,
            "false" | "" => false,
            other => {
                return Err(err(
                    "LEEN_RESUME_HELD_DELETIONS",
                    "resume-held-deletions",
                    format!("{other:?} is not true or false"),
                ));
            }
        };
        // The budget Lease lives beside the leader Lease: the operator's own namespace.
        let budget = BudgetConfig {
            max_deletions,
            window,
            resume_held,
            namespace: leader_election
                .as_ref()
                .map(|l| l.namespace.clone())
                .or_else(|| non_empty(&self.leader.leader_election_namespace).map(str::to_string))
                .or_else(|| non_empty(&self.leader.pod_namespace).map(str::to_string))
                .unwrap_or_else(|| "default".to_string()),
            name: format!("{}-deletion-budget", self.leader.lease_name.trim()),
        };
        let default_api_key = non_empty(&self.leen.access.leen_api_key)
            .map(ApiKey::new)
            .transpose()
            .map_err(|problem| err("LEEN_API_KEY", "leen-api-key", format!("the key {problem}")))?;
        let request_timeout = duration(
            "LEEN_REQUEST_TIMEOUT",
            "request-timeout",
            &self.leen.request_timeout,
            Duration::from_millis(100),
        )?;
        let create_settle = duration(
            "LEEN_CREATE_SETTLE",
            "create-settle",
            &self.leen.create_settle,
            Duration::from_secs(1),
        )?;
        if create_settle < request_timeout {
            return Err(err(
                "LEEN_CREATE_SETTLE",
                "create-settle",
                format!(
                    "{} is shorter than LEEN_REQUEST_TIMEOUT ({}): a create could still be in flight when its absence counts as proof",
                    self.leen.create_settle, self.leen.request_timeout
                ),
            ));
        }
        let watch_timeout = duration(
            "LEEN_WATCH_TIMEOUT",
            "watch-timeout",
            &self.controller.watch_timeout,
            Duration::from_secs(5),
        )?;
        if watch_timeout > Duration::from_secs(30 * 60) {
            return Err(err(
                "LEEN_WATCH_TIMEOUT",
                "watch-timeout",
                format!(
                    "{:?} is longer than 30m: a stuck watch would go unnoticed that long",
                    self.controller.watch_timeout
                ),
            ));
        }
        let leen_ca = non_empty(&self.leen.access.leen_ca_file)
            .map(read_ca)
            .transpose()?;
        Ok(Settings {
            leen_ca,
            create_settle,
            watch_timeout,
            pod_name: non_empty(&self.leader.pod_name).map(str::to_string),
            pod_namespace: non_empty(&self.leader.pod_namespace).map(str::to_string),
            budget,
            default_key_namespaces,
            leader_election,
            default_api_key,
            leen_endpoint,
            watch_namespaces,
            metrics_addr,
            sync_interval: duration(
                "LEEN_SYNC_INTERVAL",
                "sync-interval",
                &self.controller.sync_interval,
                Duration::from_secs(1),
            )?,
            request_timeout,
            max_concurrent_reconciles: count(
                "LEEN_MAX_CONCURRENT_RECONCILES",
                "max-concurrent-reconciles",
                &self.controller.max_concurrent_reconciles,
                u16::MAX as u32,
            )? as u16,
            max_in_flight_requests: count(
                "LEEN_MAX_IN_FLIGHT_REQUESTS",
                "max-in-flight-requests",
                &self.leen.max_in_flight_requests,
                10_000,
            )? as usize,
            log_format: self.telemetry.log_format,
            log_level: self.telemetry.log_level.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["leen-operator"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("parses").run
    }

    #[test]
    fn endpoint_rules() {
        assert!(parse_endpoint("https://proxy.example.com/v1").is_ok());
        assert!(parse_endpoint("http://127.0.0.1:9999/v1").is_ok());
        assert!(parse_endpoint("http://localhost:9999/v1").is_ok());
        assert!(parse_endpoint("http://[::1]:9999/v1").is_ok());
        let e = parse_endpoint("http://leen.example.com/v1").expect_err("plain http");
        assert!(
            e.to_string()
                .starts_with("invalid LEEN_ENDPOINT (--leen-endpoint)")
        );
        assert!(parse_endpoint("not a url").is_err());
        assert!(parse_endpoint("ftp://127.0.0.1/v1").is_err());
        assert!(parse_endpoint("https://user:pw@example.com/v1").is_err());
        assert!(parse_endpoint("https://proxy.example.com/leen/v1/").is_ok());
        let e = parse_endpoint("https://api.leen.dev").expect_err("no /v1");
        assert!(e.to_string().contains("/v1"), "{e}");
        assert!(parse_endpoint("http://127.0.0.1:9999/v2").is_err());
    }

    #[test]
    fn bad_settings_name_themselves() {
        let e = args(&["--metrics-addr", "nope"])
            .settings()
            .expect_err("bad");
        assert_eq!(e.env, "METRICS_ADDR");
        let e = args(&["--sync-interval", "often"])
            .settings()
            .expect_err("bad");
        assert_eq!(e.env, "LEEN_SYNC_INTERVAL");
        let e = args(&["--max-concurrent-reconciles", "0"])
            .settings()
            .expect_err("bad");
        assert_eq!(e.env, "LEEN_MAX_CONCURRENT_RECONCILES");
        let e = args(&["--watch-namespace", "Not_A_Ns"])
            .settings()
            .expect_err("bad");
        assert_eq!(e.env, "WATCH_NAMESPACE");
    }

    #[test]
    fn defaults_are_usable() {
        let s = args(&[]).settings().expect("defaults");
        assert_eq!(s.metrics_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(s.sync_interval, Duration::from_secs(300));
        assert!(s.watch_namespaces.is_empty());
        assert_eq!(s.default_key_namespaces, NamespaceSet::Only(vec![]));
        assert_eq!(s.budget.max_deletions, 25);
        assert_eq!(s.budget.window, Duration::from_secs(600));
        assert!(!s.budget.resume_held);
        assert_eq!(s.budget.name, "leen-operator-deletion-budget");
        let e = args(&["--max-deletions=-1"]).settings().expect_err("bad");
        assert_eq!(e.env, "LEEN_MAX_DELETIONS");
        let e = args(&["--deletion-window", "soon"])
            .settings()
            .expect_err("bad");
        assert_eq!(e.env, "LEEN_DELETION_WINDOW");
    }
}
