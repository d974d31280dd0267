//! The `leen-operator` binary: `crd` prints the CRD, `run` (the default) runs the controller.

use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use leen_operator::{
    config::{Cli, Command, RunArgs},
    controller::{self, Context, freshness::HeardLayer},
    leader::{LeaderElector, LeaseConfig},
    leen::{LeenClient, LeenClientConfig},
    resource,
    telemetry::{self, Metrics, Readiness},
};
use tracing::{error, info};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => match resource::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("leen-operator: rendering the CRD failed: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Run(args)) => run(args),
        Some(Command::Export(args)) => export(args),
        None => run(cli.run),
    }
}

fn export(args: leen_operator::config::ExportArgs) -> ExitCode {
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("leen-operator export: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leen-operator export: starting the async runtime failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(leen_operator::export::run(settings)) {
        Ok(summary) => {
            eprintln!("leen-operator export: {summary}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("leen-operator export: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("leen-operator: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = telemetry::init_logging(settings.log_format, &settings.log_level) {
        eprintln!("leen-operator: invalid LOG_LEVEL (--log-level): {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leen-operator: starting the async runtime failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            eprintln!("leen-operator: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: leen_operator::config::Settings) -> Result<(), String> {
    leen_operator::install_crypto_provider();
    let metrics = Arc::new(Metrics::default());
    let listener = telemetry::bind(settings.metrics_addr).await.map_err(|e| {
        format!(
            "invalid METRICS_ADDR (--metrics-addr): cannot listen on {}: {e}",
            settings.metrics_addr
        )
    })?;
    let (config, api_proxy) = leen_operator::proxy::kube_config().await.map_err(|e| {
        format!("no Kubernetes API to talk to (KUBECONFIG or in-cluster config): {e}")
    })?;
    if let Some(proxy) = api_proxy {
        info!(%proxy, "the Kubernetes API is reached through a proxy (kubeconfig proxy-url or HTTPS_PROXY)");
    }
    // Every call but a watch must answer within KUBE_CALL_TIMEOUT, so that a stalled API
    // server cannot hold a reconciliation (or the leader's renewal) forever; the watch
    // client gets a longer read timeout below.
    let mut call_config = config.clone();
    call_config.read_timeout = Some(KUBE_CALL_TIMEOUT);
    call_config.write_timeout = Some(KUBE_CALL_TIMEOUT);
    call_config.connect_timeout = Some(KUBE_CALL_TIMEOUT.min(Duration::from_secs(10)));
    let client = kube::Client::try_from(call_config)
        .map_err(|e| format!("building the Kubernetes client failed: {e}"))?;
    let leen = LeenClient::new(
        LeenClientConfig {
            endpoint: settings.leen_endpoint.clone(),
            request_timeout: settings.request_timeout,
            max_in_flight: settings.max_in_flight_requests,
            extra_roots: settings.leen_ca.clone(),
        },
        metrics.clone(),
    )
    .map_err(|e| e.to_string())?;
    if settings.default_api_key.is_none() {
        info!("no default API key (LEEN_API_KEY): resources need spec.apiKeySecretRef");
    }
    info!(
        endpoint = settings.leen_endpoint.as_ref().map(|u| u.as_str()).unwrap_or("per region"),
        namespaces = %if settings.watch_namespaces.is_empty() {
            "all".to_string()
        } else {
            settings.watch_namespaces.join(",")
        },
        metrics_addr = %settings.metrics_addr,
        sync_interval = ?settings.sync_interval,
        concurrency = settings.max_concurrent_reconciles,
        "starting leen-operator"
    );
    if settings.budget.max_deletions > 0 {
        info!(
            max_deletions = settings.budget.max_deletions,
            window = %humantime::format_duration(settings.budget.window),
            lease = %format!("{}/{}", settings.budget.namespace, settings.budget.name),
            "deletion budget on"
        );
    } else {
        info!("deletion budget off (LEEN_MAX_DELETIONS=0)");
    }
    // The end of a Leen outage is seen within seconds (see LeenClient::probe_outages).
    tokio::spawn(leen.clone().probe_outages(Duration::from_secs(2)));
    let ctx = Context::new(client.clone(), Arc::new(leen), &settings, metrics.clone());
    let ctx = Arc::new(ctx);
    // The watch client notes what the API server says on the LeenConnection watch, so
    // that no DELETE is decided from a cache that may be behind; and a stuck list or watch
    // start (a proxy that accepts and never answers) fails and is retried: nothing is read
    // for longer than two watch requests and a margin.
    let mut config = config;
    config.read_timeout = Some(settings.watch_timeout * 2 + Duration::from_secs(10));
    config.reset_reader_on_write = true;
    let watch_client = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| format!("building the Kubernetes client failed: {e}"))?
        .with_layer(&HeardLayer(ctx.watches.clone()))
        .build();
    let ready = Readiness::default();

    // One shutdown signal, watched by the telemetry server, the election and the controller.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown requested; finishing in-flight reconciliations");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = tokio::spawn(telemetry::serve(
        listener,
        metrics.clone(),
        ready.clone(),
        stopped(stop_rx.clone()),
    ));

    let elector = settings.leader_election.as_ref().map(|le| {
        LeaderElector::new(
            client.clone(),
            LeaseConfig {
                namespace: le.namespace.clone(),
                name: le.lease_name.clone(),
                identity: identity(settings.pod_name.as_deref()),
                lease_duration: le.lease_duration,
                retry_period: (le.lease_duration / 5).max(Duration::from_millis(500)),
            },
        )
    });
    if let Some(elector) = &elector {
        ready.set_standby();
        tokio::select! {
            _ = elector.acquire() => {}
            _ = stopped(stop_rx.clone()) => {
                let _ = server.await;
                return Ok(());
            }
        }
        ready.set(false);
    }
    metrics.set_leader(true);
    let controller = controller::run(
        ctx.clone(),
        watch_client,
        settings.watch_namespaces.clone(),
        settings.max_concurrent_reconciles,
        ready,
        stopped(stop_rx.clone()),
    );
    match &elector {
        Some(elector) => {
            tokio::select! {
                _ = controller => {}
                _ = elector.hold() => {
                    // Another replica may lead from now on: stop at once, without
                    // finishing anything, so that two never act together.
                    return Err("lost the leader Lease; exiting so that only one replica leads".to_string());
                }
            }
            elector.release().await;
        }
        None => controller.await,
    }
    let unwritten = ctx.events.flush(EVENT_FLUSH_DEADLINE).await;
    if unwritten > 0 {
        tracing::warn!(unwritten, "stopped with Events still queued");
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("telemetry server failed: {e}")),
        Err(e) => return Err(format!("telemetry server task failed: {e}")),
    }
    info!("stopped");
    Ok(())
}

/// Longest a Kubernetes API call (other than a watch) may take.
const KUBE_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest the operator waits at shutdown for queued Events to be written.
const EVENT_FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// This replica's identity in the Lease: the pod name, else host name and process id.
fn identity(pod_name: Option<&str>) -> String {
    pod_name.map(str::to_string).unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "leen-operator".to_string());
        format!("{host}-{}", std::process::id())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// glibc gives each thread that allocates its own malloc arena; with a multi-threaded
/// runtime that fragments the heap (about 20 % more RSS at 10 000 resources, see
/// BENCHMARKS.md). Two arenas are plenty for this workload. MALLOC_ARENA_MAX, when set,
/// still wins: glibc reads it before main.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only adjusts allocator tuning; called before any other thread
        // exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
