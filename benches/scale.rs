//! Scale benchmark: the operator binary against a real kube-apiserver + etcd and the fake
//! Leen, for N LeenConnections. Prints one table and writes BENCHMARKS.md.
//!
//!     export KUBEBUILDER_ASSETS=$(../shared/envtest/setup.sh)
//!     cargo bench --bench scale -- [--n 100,1000,10000] [--latency-ms 0] [--out BENCHMARKS.md]
//!     cargo bench --bench scale -- --create 100,1000 [--latency-ms 50]
//!     cargo bench --bench scale -- --throughput 1000,10000 --latency-ms 50 [--operator-only] [--reconciles 32]
//!
//! `--create` measures connections created from the spec instead (create -> Ready, calls
//! per resource, beside the floor of creating the same objects with no operator) and only
//! prints its table. `--throughput` runs each contestant on a fresh control plane: no
//! operator at all (the floor: `kubectl create -f`, then one `kubectl delete -l`), then the
//! operator, then plain clients on objects of the operator's Ready shape (deletion:
//! finalizer + Event, and status + finalizer + Event; creation: finalizer + Ready status);
//! it prints every time beside the floor and the API server's own profile of each
//! (`--operator-only` skips the plain clients).
//!
//! Not part of CI: N = 10 000 takes minutes.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fake_leen::FakeLeen;
use futures::{StreamExt, TryStreamExt, stream};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use leen_operator::resource::LeenConnection;
use support::*;
use uuid::Uuid;

const NS: &str = "bench";
const CREATE_PARALLELISM: usize = 32;

/// Concurrency of the plain finalizer clients: the operator's default reconciles.
const CONTRACT_CONCURRENCY: usize = 32;

/// Longest the benchmark waits for all resources to be Ready.
const BENCH_WAIT: Duration = Duration::from_secs(1800);

struct Args {
    sizes: Vec<usize>,
    latency_ms: u64,
    target_latency_ms: u64,
    concurrency: u16,
    reconciles: Option<u16>,
    out: Option<String>,
    create: Vec<usize>,
    throughput: Vec<usize>,
    operator_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        sizes: vec![100, 1000, 10_000],
        latency_ms: 0,
        target_latency_ms: 50,
        concurrency: 16,
        reconciles: None,
        out: Some("BENCHMARKS.md".into()),
        create: Vec::new(),
        throughput: Vec::new(),
        operator_only: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--n" => {
                a.sizes = value
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect()
            }
            "--latency-ms" => a.latency_ms = value.parse().unwrap_or(0),
            "--target-latency-ms" => a.target_latency_ms = value.parse().unwrap_or(50),
            "--concurrency" => a.concurrency = value.parse().unwrap_or(16),
            "--reconciles" => a.reconciles = value.parse().ok(),
            "--out" => a.out = (value != "-").then_some(value),
            "--operator-only" => {
                a.operator_only = true;
                i += 1;
                continue;
            }
            "--throughput" => {
                a.throughput = value
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect()
            }
            "--create" => {
                a.create = value
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect()
            }
            // `cargo bench` passes --bench; ignore what is not ours.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// RSS and CPU of a process from /proc.
fn proc_stats(pid: u32) -> (u64, u64, f64) {
    let kb = status_kb(pid);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: utime is 14th, stime 15th overall.
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    (kb("VmRSS:"), kb("VmHWM:"), cpu)
}

/// A process's resident anonymous memory and resident file pages (its code), KiB.
fn rss_split(pid: u32) -> (u64, u64) {
    let kb = status_kb(pid);
    (kb("RssAnon:"), kb("RssFile:"))
}

/// A reader of the KiB figures in a process's /proc status (VmRSS:, RssAnon:, ...); 0 for
/// a key that is not there.
fn status_kb(pid: u32) -> impl Fn(&str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    move |key| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    }
}

/// Samples a process's RSS every 50 ms until aborted; the highest seen so far.
fn rss_sampler(pid: u32) -> (Arc<Mutex<u64>>, tokio::task::JoinHandle<()>) {
    let peak = Arc::new(Mutex::new(0u64));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let rss = proc_stats(pid).0;
                {
                    let mut p = peak.lock().expect("lock");
                    *p = (*p).max(rss);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    (peak, sampler)
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// Waits until `n` objects are Ready=True, by watch.
struct DeleteFigures {
    wall: Duration,
    marked: Duration,
    latencies: Vec<Duration>,
}

/// Deletes every object in the namespace at once; per-object latency from when a watch
/// first sees deletionTimestamp to when it sees the object gone.
async fn delete_all(api: &Api<LeenConnection>, n: usize) -> DeleteFigures {
    let watch = gone_watch(api, n).await;
    let started = Instant::now();
    // Every object deleted at once, as `kubectl delete --all` or a GitOps prune would:
    // individual DELETEs in parallel (deletecollection on this API server uses one worker).
    let names: Vec<String> = api
        .list_metadata(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                api.delete(&name, &DeleteParams::default())
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await
        .expect("deletes");
    let marked = started.elapsed();
    let mut latencies = tokio::time::timeout(Duration::from_secs(3600), watch)
        .await
        .expect("deletions finish")
        .expect("watch task");
    let wall = started.elapsed();
    latencies.sort();
    DeleteFigures {
        wall,
        marked,
        latencies,
    }
}

/// The API server's own floor: the same writes the operator makes per deletion (a status
/// patch and a finalizer removal), from a plain client with the same concurrency.
async fn api_floor(client: &Client, fake: &FakeLeen, n: usize, concurrency: usize) -> Duration {
    let api: Api<LeenConnection> = Api::namespaced(client.clone(), "floor");
    let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
    stream::iter(names.clone())
        .map(|name| {
            let api = api.clone();
            async move {
                let mut obj = connection(&name, Uuid::new_v4(), Uuid::new_v4());
                obj.metadata.finalizers = Some(vec!["bench/floor".into()]);
                api.create(&PostParams::default(), &obj).await.map(|_| ())
            }
        })
        .buffer_unordered(CREATE_PARALLELISM)
        .try_collect::<Vec<_>>()
        .await
        .expect("creates");
    let _ = fake;
    let started = Instant::now();
    stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"status": {"state": "DELETED"}})),
                )
                .await?;
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await
        .expect("writes");
    started.elapsed()
}

async fn metric(op: &Operator, name: &str, labels: &[&str]) -> f64 {
    op.metric(name, labels).await
}

#[derive(Default, Clone)]
struct Row {
    n: usize,
    latency_ms: u64,
    ready_all: Duration,
    gets_create: usize,
    status_writes_create: f64,
    startup_empty: Duration,
    startup_loaded: Duration,
    list_floor: Duration,
    rss_idle_kb: u64,
    rss_steady_kb: u64,
    /// Of the steady RSS: anonymous memory (the heap, stacks) and file pages (the code).
    rss_steady_split_kb: (u64, u64),
    rss_peak_kb: u64,
    cpu_s: f64,
    delete_wall: Duration,
    delete_marked: Duration,
    p50: Duration,
    p95: Duration,
    p99: Duration,
    max: Duration,
    deletes_per: f64,
    gets_during_delete: usize,
    kube_writes_per: f64,
    events_per: f64,
    floor: Option<Duration>,
}

/// A control plane with the benchmark's namespace and the floor's, and a fake Leen that
/// accepts `bench-key` and answers after `latency_ms`.
async fn stage(latency_ms: u64) -> (ControlPlane, FakeLeen) {
    let cp = ControlPlane::start().await;
    cp.namespace(NS).await;
    cp.namespace("floor").await;
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key("bench-key");
    fake.set_latency(Duration::from_millis(latency_ms));
    (cp, fake)
}

/// Creates `n` connections from the spec and times create -> all Ready, beside the floor
/// measured in the same run: the same objects created with no operator watching them.
async fn create_bench(n: usize, latency_ms: u64) -> String {
    let (cp, fake) = stage(latency_ms).await;
    let endpoint = fake.base_url();
    let op = Operator::start(
        &cp,
        &[
            ("LEEN_ENDPOINT", endpoint.as_str()),
            ("LEEN_API_KEY", "bench-key"),
            ("LOG_LEVEL", "warn"),
            // The floor's objects are not the operator's.
            ("WATCH_NAMESPACE", NS),
        ],
    )
    .await;
    let client = cp.client().await;
    let org = Uuid::new_v4();
    let spec = |org: Uuid| -> LeenConnection {
        let spec = serde_json::json!({
            "organizationId": org.to_string(),
            "vendor": "QUALYS",
            "credentialsSecretRef": {"name": "bench-creds"},
        });
        LeenConnection::new("x", serde_json::from_value(spec).expect("spec"))
    };
    let create_all = |ns: &'static str| {
        let api: Api<LeenConnection> = Api::namespaced(client.clone(), ns);
        async move {
            stream::iter(0..n)
                .map(|i| {
                    let api = api.clone();
                    let mut obj = spec(org);
                    obj.metadata.name = Some(format!("c{i}"));
                    async move { api.create(&PostParams::default(), &obj).await.map(|_| ()) }
                })
                .buffer_unordered(CREATE_PARALLELISM)
                .try_collect::<Vec<_>>()
                .await
                .expect("creates");
        }
    };
    let started = Instant::now();
    create_all("floor").await;
    let floor = started.elapsed();

    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), NS);
    let creds: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench-creds"},
        "stringData": {"username": "bench", "password": "bench-password"},
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &creds)
        .await
        .expect("secret created");
    let api: Api<LeenConnection> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    tokio::join!(wait_all_ready(&api, n, BENCH_WAIT), create_all(NS));
    let took = started.elapsed();
    let per = |op: &str| fake.count_operation(op) as f64 / n as f64;
    let writes = metric(
        &op,
        "leen_operator_kube_writes_total",
        &["write=\"status\""],
    )
    .await;
    format!(
        "| {n} | {latency_ms} | {:.2} | {:.2} | {:.2}x | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        took.as_secs_f64(),
        floor.as_secs_f64(),
        took.as_secs_f64() / floor.as_secs_f64().max(0.001),
        per("create"),
        per("list"),
        per("get"),
        per("test"),
        writes / n as f64
    )
}

async fn run_one(
    n: usize,
    latency_ms: u64,
    concurrency: u16,
    reconciles: Option<u16>,
    with_floor: bool,
) -> Row {
    let (cp, fake) = stage(latency_ms).await;
    let endpoint = fake.base_url();
    let conc = concurrency.to_string();
    let rec = reconciles.map(|r| r.to_string());
    let mut env = vec![
        ("LEEN_ENDPOINT", endpoint.as_str()),
        ("LEEN_API_KEY", "bench-key"),
        ("LEEN_MAX_IN_FLIGHT_REQUESTS", conc.as_str()),
        ("LOG_LEVEL", "warn"),
    ];
    let arena = std::env::var("BENCH_MALLOC_ARENA_MAX").unwrap_or_default();
    if !arena.is_empty() {
        env.push(("MALLOC_ARENA_MAX", arena.as_str()));
    }
    if let Some(r) = &rec {
        env.push(("LEEN_MAX_CONCURRENT_RECONCILES", r.as_str()));
    }
    let mut op = Operator::start(&cp, &env).await;
    let mut row = Row {
        n,
        latency_ms,
        startup_empty: op.startup(),
        ..Default::default()
    };
    tokio::time::sleep(Duration::from_millis(500)).await; // settle before sampling idle RSS
    row.rss_idle_kb = proc_stats(op.pid().expect("pid")).0;

    let client = cp.client().await;
    let api: Api<LeenConnection> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    let ready = wait_all_ready(&api, n, BENCH_WAIT);
    let create = create_many(&api, &fake, "c", n, CREATE_PARALLELISM);
    let (_, _ids) = tokio::join!(ready, create);
    row.ready_all = started.elapsed();
    row.gets_create = fake.count_method("GET");
    row.status_writes_create = metric(
        &op,
        "leen_operator_kube_writes_total",
        &["write=\"status\""],
    )
    .await;

    // Restart with N objects in place: start-up to ready, then the steady state.
    op.restart().await;
    row.startup_loaded = op.startup();
    // What the API server alone needs to list N objects' metadata (the operator's start-up
    // does exactly this list before it is ready).
    {
        let meta: Api<kube::core::PartialObjectMeta<LeenConnection>> = Api::all(client.clone());
        let t = Instant::now();
        let _ = watcher::watcher(meta, watcher::Config::default().any_semantic())
            .take_while(|e| std::future::ready(!matches!(e, Ok(watcher::Event::InitDone))))
            .count()
            .await;
        row.list_floor = t.elapsed();
    }
    let pid = op.pid().expect("pid");
    // Steady: the restarted operator has re-read every connection once.
    let deadline = Instant::now() + Duration::from_secs(1800);
    while (metric(
        &op,
        "leen_operator_leen_requests_total",
        &["operation=\"get\""],
    )
    .await as usize)
        < n
    {
        assert!(Instant::now() < deadline, "resync did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Steady means idle: no reconciliation started for three seconds.
    let mut seen = metric(&op, "leen_operator_reconciles_total", &[]).await;
    let mut still = 0;
    while still < 3 {
        assert!(Instant::now() < deadline, "the operator did not go idle");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = metric(&op, "leen_operator_reconciles_total", &[]).await;
        still = if now == seen { still + 1 } else { 0 };
        seen = now;
    }
    row.rss_steady_kb = proc_stats(pid).0;
    row.rss_steady_split_kb = rss_split(pid);

    let gets_before = fake.count_method("GET");
    // Object writes are counted by kind (status, finalizer_add, finalizer_remove); Events,
    // published in the background, separately.
    let object_writes = |m: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("leen_operator_kube_writes_total") && !l.contains("write=\"event\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let writes_before = object_writes(&op.metrics().await);
    let events_before = metric(&op, "leen_operator_kube_writes_total", &["write=\"event\""]).await;
    let (peak, sampler) = rss_sampler(pid);
    let figures = delete_all(&api, n).await;
    sampler.abort();
    row.delete_wall = figures.wall;
    row.delete_marked = figures.marked;
    row.p50 = percentile(&figures.latencies, 0.50);
    row.p95 = percentile(&figures.latencies, 0.95);
    row.p99 = percentile(&figures.latencies, 0.99);
    row.max = figures.latencies.last().copied().unwrap_or_default();
    let deletes = fake.count_method("DELETE");
    row.deletes_per = deletes as f64 / n as f64;
    row.gets_during_delete = fake.count_method("GET") - gets_before;
    let events =
        metric(&op, "leen_operator_kube_writes_total", &["write=\"event\""]).await - events_before;
    let writes = object_writes(&op.metrics().await) - writes_before;
    row.kube_writes_per = writes / n as f64;
    row.events_per = events / n as f64;
    let (_, hwm, cpu) = proc_stats(pid);
    row.rss_peak_kb = hwm.max(*peak.lock().expect("lock"));
    row.cpu_s = cpu;
    if with_floor {
        row.floor = Some(api_floor(&client, &fake, n, concurrency as usize).await);
    }
    row
}

/// Deleting one object at a time (no queueing): p50 from the deletionTimestamp becoming
/// visible to a watch until the object is gone, and p50 of the DELETE call itself (the
/// API server's own share).
async fn isolated_latency(samples: usize) -> (Duration, Duration) {
    let cp = ControlPlane::start().await;
    cp.namespace(NS).await;
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key("bench-key");
    let endpoint = fake.base_url();
    let _op = Operator::start(
        &cp,
        &[
            ("LEEN_ENDPOINT", endpoint.as_str()),
            ("LEEN_API_KEY", "bench-key"),
            ("LOG_LEVEL", "warn"),
        ],
    )
    .await;
    let api: Api<LeenConnection> = Api::namespaced(cp.client().await, NS);
    let mut lat = Vec::new();
    let mut calls = Vec::new();
    for i in 0..samples {
        let name = format!("one{i}");
        let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
        fake.add_connection(org, id, "CrowdStrike");
        api.create(&PostParams::default(), &connection(&name, org, id))
            .await
            .expect("create");
        wait_for(&api, &name, "Ready", is_ready).await;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let watch = {
            let api = api.clone();
            let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(watcher(api, cfg));
                let mut ready_tx = Some(ready_tx);
                let mut seen = None;
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(watcher::Event::InitDone) => {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(watcher::Event::Apply(o)) if o.metadata.deletion_timestamp.is_some() => {
                            seen.get_or_insert_with(Instant::now);
                        }
                        Ok(watcher::Event::Delete(_)) => {
                            return seen.map(|s| s.elapsed()).unwrap_or_default();
                        }
                        _ => {}
                    }
                }
                Duration::ZERO
            })
        };
        let _ = ready_rx.await;
        let t = Instant::now();
        api.delete(&name, &DeleteParams::default())
            .await
            .expect("delete");
        calls.push(t.elapsed());
        lat.push(watch.await.expect("gone"));
    }
    lat.sort();
    calls.sort();
    (percentile(&lat, 0.5), percentile(&calls, 0.5))
}

/// What the API server did during one phase: requests and their summed handling time by
/// verb and resource (from its own `/metrics`), its CPU, etcd's CPU, the operator's CPU.
#[derive(Default, Clone)]
struct Profile {
    requests: HashMap<String, (f64, f64)>,
    watch_events: f64,
    apiserver_cpu: f64,
    etcd_cpu: f64,
    operator_cpu: f64,
}

impl Profile {
    async fn take(client: &Client, cp: &ControlPlane, operator: Option<u32>) -> Profile {
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .expect("request");
        let text = client
            .request_text(request)
            .await
            .expect("API server metrics");
        let mut p = Profile::default();
        let label = |line: &str, name: &str| -> String {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        for line in text.lines() {
            let value = || {
                line.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let key = || {
                let sub = label(line, "subresource");
                format!(
                    "{} {}{}",
                    label(line, "verb"),
                    label(line, "resource"),
                    if sub.is_empty() {
                        String::new()
                    } else {
                        format!("/{sub}")
                    }
                )
            };
            if line.starts_with("apiserver_request_total{") {
                p.requests.entry(key()).or_default().0 += value();
            } else if line.starts_with("apiserver_request_duration_seconds_sum{") {
                p.requests.entry(key()).or_default().1 += value();
            } else if line.starts_with("apiserver_watch_events_total{") {
                p.watch_events += value();
            } else if line.starts_with("process_cpu_seconds_total ") {
                p.apiserver_cpu = value();
            }
        }
        let (_, etcd) = cp.pids();
        p.etcd_cpu = proc_stats(etcd).2;
        p.operator_cpu = operator.map(|pid| proc_stats(pid).2).unwrap_or(0.0);
        p
    }

    /// `self - before`, per object.
    fn per_object(&self, before: &Profile, n: usize) -> Profile {
        let n = n as f64;
        let mut requests = HashMap::new();
        for (k, (count, secs)) in &self.requests {
            let (c0, s0) = before.requests.get(k).copied().unwrap_or_default();
            // The API server's own background (endpoints, namespaces) is not the object's.
            let ours = k.contains("leenconnections") || k.contains("events");
            if ours && count > &c0 {
                requests.insert(k.clone(), ((count - c0) / n, (secs - s0) / n));
            }
        }
        Profile {
            requests,
            watch_events: (self.watch_events - before.watch_events) / n,
            apiserver_cpu: (self.apiserver_cpu - before.apiserver_cpu) / n,
            etcd_cpu: (self.etcd_cpu - before.etcd_cpu) / n,
            operator_cpu: (self.operator_cpu - before.operator_cpu) / n,
        }
    }

    /// One line: requests per object with the API server's handling ms, then CPU ms.
    fn describe(&self) -> String {
        let mut keys: Vec<_> = self.requests.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        let requests: Vec<String> = keys
            .into_iter()
            .map(|(k, (c, s))| format!("{k} {c:.3} ({:.2} ms)", s * 1000.0))
            .collect();
        format!(
            "{}; watch events {:.2}; CPU ms per object: API server {:.2}, etcd {:.2}, operator {:.2}",
            requests.join(", "),
            self.watch_events,
            self.apiserver_cpu * 1000.0,
            self.etcd_cpu * 1000.0,
            self.operator_cpu * 1000.0
        )
    }
}

/// With `BENCH_PPROF=<file>` set, a CPU profile of the API server over `seconds`, written
/// to that file (read it with `go tool pprof -top <kube-apiserver> <file>`).
fn pprof(client: &Client, seconds: u64) -> Option<tokio::task::JoinHandle<()>> {
    let path = std::env::var("BENCH_PPROF").ok()?;
    let client = client.clone();
    Some(tokio::spawn(async move {
        let request = http::Request::get(format!("/debug/pprof/profile?seconds={seconds}"))
            .body(kube::client::Body::empty())
            .expect("request");
        let response = client.send(request).await.expect("pprof");
        let bytes = response
            .into_body()
            .collect_bytes()
            .await
            .expect("pprof body");
        std::fs::write(&path, &bytes).expect("pprof written");
        eprintln!("bench: API server CPU profile in {path}");
    }))
}

/// Runs the real kubectl against `cp` off the async runtime.
async fn kubectl(cp: &ControlPlane, args: &[&str]) {
    let kubeconfig = cp.kubeconfig.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(&args)
            .output()
            .expect("kubectl runs (install kubectl)");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await
    .expect("kubectl task");
}

/// Writes N adoptable LeenConnections (registered with the fake when given) as one
/// `List` manifest, the way a user or GitOps tool would hand them to kubectl.
fn manifest(
    cp: &ControlPlane,
    n: usize,
    fake: Option<&FakeLeen>,
    finalizer: bool,
) -> std::path::PathBuf {
    let items: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
            if let Some(fake) = fake {
                fake.add_connection(org, id, "CrowdStrike");
            }
            let mut obj = connection(&format!("c{i}"), org, id);
            obj.metadata.namespace = Some(NS.into());
            obj.metadata.labels = Some([("bench".to_string(), "throughput".to_string())].into());
            if finalizer {
                obj.metadata.finalizers = Some(vec![leen_operator::resource::FINALIZER.into()]);
            }
            serde_json::to_value(&obj).expect("object")
        })
        .collect();
    let path = cp
        .dir
        .path()
        .join(format!("connections-{}.json", Uuid::new_v4()));
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(&path, serde_json::to_vec(&list).expect("json")).expect("manifest written");
    path
}

/// Watches the namespace until `n` objects are gone; resolves once the watch is running.
/// The task returns each object's latency from when the watch first saw its
/// deletionTimestamp to when it saw the object gone.
async fn gone_watch(api: &Api<LeenConnection>, n: usize) -> tokio::task::JoinHandle<Vec<Duration>> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let api = api.clone();
    let handle = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
        let mut ready_tx = Some(ready_tx);
        let mut seen: HashMap<String, Instant> = HashMap::new();
        let mut latencies = Vec::with_capacity(n);
        let mut gone = 0;
        while gone < n {
            match stream.next().await {
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Some(Ok(watcher::Event::Apply(o))) if o.metadata.deletion_timestamp.is_some() => {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    seen.entry(name).or_insert_with(Instant::now);
                }
                Some(Ok(watcher::Event::Delete(o))) => {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    if let Some(start) = seen.get(&name) {
                        latencies.push(start.elapsed());
                    }
                    gone += 1;
                }
                None => break,
                _ => {}
            }
        }
        latencies
    });
    let _ = ready_rx.await;
    handle
}

/// Deletes every object the way `kubectl delete -l ... --wait=false` does and times
/// until all are gone.
async fn kubectl_delete_all(cp: &ControlPlane, api: &Api<LeenConnection>, n: usize) -> Duration {
    let gone = gone_watch(api, n).await;
    let started = Instant::now();
    kubectl(
        cp,
        &[
            "delete",
            "leenconnections",
            "-n",
            NS,
            "-l",
            "bench=throughput",
            "--wait=false",
        ],
    )
    .await;
    tokio::time::timeout(BENCH_WAIT, gone)
        .await
        .expect("all gone in time")
        .expect("watch task");
    started.elapsed()
}

/// A plain client that does, per deletion, only the Kubernetes writes a finalizer needs:
/// the status (when `status`: what DESIGN.md requires before the finalizer goes), the
/// finalizer removal and one Event; no Leen, no decisions. The lower bound for any
/// operator with the same contract on the same API server.
fn plain_finalizer(client: Client, status: bool) -> tokio::task::JoinHandle<()> {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    tokio::spawn(async move {
        let api: Api<LeenConnection> = Api::namespaced(client.clone(), NS);
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "bench-plain".into(),
                instance: None,
            },
        );
        let semaphore = Arc::new(tokio::sync::Semaphore::new(CONTRACT_CONCURRENCY));
        let mut seen = std::collections::HashSet::new();
        let mut stream = std::pin::pin!(watcher(api.clone(), watcher::Config::default()));
        while let Some(event) = stream.next().await {
            let Ok(watcher::Event::Apply(obj)) = event else {
                continue;
            };
            let Some(name) = obj.metadata.name.clone() else {
                continue;
            };
            if obj.metadata.deletion_timestamp.is_none() || !seen.insert(name.clone()) {
                continue;
            }
            let permit = semaphore.clone().acquire_owned().await.expect("permit");
            let (api, recorder) = (api.clone(), recorder.clone());
            tokio::spawn(async move {
                let _permit = permit;
                if status {
                    api.patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(plain_deletion_status()),
                    )
                    .await
                    .expect("status patch");
                }
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
                )
                .await
                .expect("finalizer removal");
                let reference = kube::Resource::object_ref(&obj, &());
                let _ = recorder
                    .publish(
                        &Event {
                            type_: EventType::Normal,
                            reason: "Deleted".into(),
                            note: Some("deleted".into()),
                            action: "Delete".into(),
                            secondary: None,
                        },
                        &reference,
                    )
                    .await;
            });
        }
    })
}

/// About what the operator writes when a deletion is confirmed.
fn plain_deletion_status() -> serde_json::Value {
    let now = "2026-11-29T00:00:00Z";
    let condition = |t: &str, s: &str, r: &str| serde_json::json!({"type": t, "status": s, "reason": r, "message": "Leen deleted connection 0abb73db-4cb1-49bf-a133-6ceb10bfe762 (state DELETED, health HEALTHY)", "lastTransitionTime": now, "observedGeneration": 1});
    serde_json::json!({"status": {
        "state": "DELETED",
        "deletion": {"attempts": 1, "startedAt": now, "finishedAt": now},
        "conditions": [
            condition("Ready", "False", "Deleted"),
            condition("Healthy", "True", "HEALTHY"),
            condition("Reconciling", "False", "Deleted"),
            condition("Stalled", "False", "Deleted"),
        ],
    }})
}

/// The same N objects, with the operator's finalizer, deleted by `kubectl delete -l` while
/// [`plain_finalizer`] releases them: time until all are gone, and the API server's profile.
async fn plain_contestant(n: usize, status: bool, sample: &LeenConnection) -> (Duration, Profile) {
    let cp = ControlPlane::start().await;
    cp.namespace(NS).await;
    let client = cp.client().await;
    let api: Api<LeenConnection> = Api::namespaced(client.clone(), NS);
    let file = manifest(&cp, n, None, true);
    kubectl(&cp, &["create", "-f", &file.to_string_lossy()]).await;
    // The shape of the operator's Ready resources: its labels and its status.
    let (labels, ready_status) = ready_shape(sample);
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let (labels, ready_status) = (labels.clone(), ready_status.clone());
            async move {
                let name = format!("c{i}");
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"metadata": {"labels": labels}})),
                )
                .await?;
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(ready_status))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(CREATE_PARALLELISM)
        .try_collect::<Vec<_>>()
        .await
        .expect("Ready shape written");
    let worker = plain_finalizer(client.clone(), status);
    let before = Profile::take(&client, &cp, None).await;
    let took = kubectl_delete_all(&cp, &api, n).await;
    let profile = Profile::take(&client, &cp, None)
        .await
        .per_object(&before, n);
    worker.abort();
    (took, profile)
}

/// What a Ready resource of the operator carries that kubectl did not create: the
/// controller's labels, and the status as a merge patch.
fn ready_shape(
    sample: &LeenConnection,
) -> (
    std::collections::BTreeMap<String, String>,
    serde_json::Value,
) {
    let labels = sample
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("leen.dev/"))
        .collect();
    (labels, serde_json::json!({ "status": sample.status }))
}

/// A plain client that does, per new object, only the Kubernetes writes a Ready resource
/// needs: the finalizer (with the binding labels, as the operator adds them in the same
/// patch) and the Ready status; no Leen, no decisions. The lower bound for creation.
fn plain_adopter(client: Client, sample: LeenConnection) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<LeenConnection> = Api::namespaced(client, NS);
        let (labels, ready) = ready_shape(&sample);
        let semaphore = Arc::new(tokio::sync::Semaphore::new(CONTRACT_CONCURRENCY));
        let mut stream = std::pin::pin!(watcher(api.clone(), watcher::Config::default()));
        while let Some(event) = stream.next().await {
            let Ok(watcher::Event::Apply(obj)) = event else {
                continue;
            };
            let Some(name) = obj.metadata.name.clone() else {
                continue;
            };
            let write = if obj.metadata.finalizers.is_none() {
                serde_json::json!({"metadata": {
                    "finalizers": [leen_operator::resource::FINALIZER],
                    "labels": labels,
                }})
            } else if obj.status.is_none() {
                ready.clone()
            } else {
                continue;
            };
            let status = obj.metadata.finalizers.is_some();
            let permit = semaphore.clone().acquire_owned().await.expect("permit");
            let api = api.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let params = PatchParams::default();
                let written = if status {
                    api.patch_status(&name, &params, &Patch::Merge(write)).await
                } else {
                    api.patch(&name, &params, &Patch::Merge(write)).await
                };
                written.expect("plain adopter write");
            });
        }
    })
}

/// The same N objects created with `kubectl create -f` while [`plain_adopter`] makes them
/// Ready: time until all are Ready.
async fn plain_creation(n: usize, sample: &LeenConnection) -> Duration {
    let cp = ControlPlane::start().await;
    cp.namespace(NS).await;
    let client = cp.client().await;
    let api: Api<LeenConnection> = Api::namespaced(client.clone(), NS);
    let file = manifest(&cp, n, None, false);
    let worker = plain_adopter(client, sample.clone());
    let path = file.to_string_lossy().into_owned();
    let create_args = ["create", "-f", path.as_str()];
    let started = Instant::now();
    tokio::join!(
        wait_all_ready(&api, n, BENCH_WAIT),
        kubectl(&cp, &create_args)
    );
    let took = started.elapsed();
    worker.abort();
    took
}

struct Throughput {
    n: usize,
    latency_ms: u64,
    floor_create: Duration,
    floor_delete: Duration,
    floor_profile: Profile,
    /// Finalizer removal + Event from a plain client (the reference operator's writes).
    reference: Duration,
    /// Status + finalizer removal + Event from a plain client (this contract's writes).
    minimum: Duration,
    /// Finalizer + Ready status from a plain client, while kubectl creates.
    minimum_create: Duration,
    minimum_profile: Profile,
    ready: Duration,
    delete: Duration,
    create_profile: Profile,
    delete_profile: Profile,
    rss_steady_kb: u64,
    rss_peak_kb: u64,
    deletes_per: f64,
    events_per: f64,
}

/// One contestant after the other on fresh control planes: no operator (the floor), then
/// the operator with the fake Leen answering after `latency_ms`; the same N objects
/// created with `kubectl create -f` and deleted with one `kubectl delete -l`.
async fn throughput(n: usize, latency_ms: u64, reconciles: Option<u16>, plain: bool) -> Throughput {
    // The floor: nothing but the API server and kubectl.
    let (floor_create, floor_delete, floor_profile) = {
        let cp = ControlPlane::start().await;
        cp.namespace(NS).await;
        let client = cp.client().await;
        let api: Api<LeenConnection> = Api::namespaced(client.clone(), NS);
        let file = manifest(&cp, n, None, false);
        let started = Instant::now();
        kubectl(&cp, &["create", "-f", &file.to_string_lossy()]).await;
        let create = started.elapsed();
        let before = Profile::take(&client, &cp, None).await;
        let delete = kubectl_delete_all(&cp, &api, n).await;
        let profile = Profile::take(&client, &cp, None)
            .await
            .per_object(&before, n);
        (create, delete, profile)
    };

    let (cp, fake) = stage(latency_ms).await;
    let endpoint = fake.base_url();
    // The deletion budget is off (the harness sets LEEN_MAX_DELETIONS=0): a budget exists
    // to stop exactly this many deletions at once.
    let reconciles = reconciles.map(|r| r.to_string());
    let mut env = vec![
        ("LEEN_ENDPOINT", endpoint.as_str()),
        ("LEEN_API_KEY", "bench-key"),
        ("LOG_LEVEL", "warn"),
    ];
    if let Some(r) = &reconciles {
        env.push(("LEEN_MAX_CONCURRENT_RECONCILES", r.as_str()));
    }
    let op = Operator::start(&cp, &env).await;
    let pid = op.pid().expect("pid");
    let client = cp.client().await;
    let api: Api<LeenConnection> = Api::namespaced(client.clone(), NS);
    let file = manifest(&cp, n, Some(&fake), false);
    let before = Profile::take(&client, &cp, Some(pid)).await;
    let started = Instant::now();
    let path = file.to_string_lossy().into_owned();
    let create_args = ["create", "-f", path.as_str()];
    tokio::join!(
        wait_all_ready(&api, n, BENCH_WAIT),
        kubectl(&cp, &create_args)
    );
    let ready = started.elapsed();
    // What a Ready resource looks like: the plain clients below start from the same.
    let sample = api.get("c0").await.expect("c0");
    if std::env::var("BENCH_DUMP").is_ok() {
        let one = sample.clone();
        let text = serde_json::to_string_pretty(&one).expect("json");
        eprintln!(
            "bench: one Ready object, {} bytes as JSON:\n{text}",
            serde_json::to_string(&one).expect("json").len()
        );
    }
    let created = Profile::take(&client, &cp, Some(pid)).await;
    let create_profile = created.per_object(&before, n);
    let rss_steady_kb = proc_stats(pid).0;
    let events_before = metric(&op, "leen_operator_kube_writes_total", &["write=\"event\""]).await;
    let (peak, sampler) = rss_sampler(pid);
    let profiler = pprof(&client, 10);
    let delete = kubectl_delete_all(&cp, &api, n).await;
    sampler.abort();
    if let Some(p) = profiler {
        let _ = p.await;
    }
    let delete_profile = Profile::take(&client, &cp, Some(pid))
        .await
        .per_object(&created, n);
    let events =
        metric(&op, "leen_operator_kube_writes_total", &["write=\"event\""]).await - events_before;
    let rss_peak_kb = proc_stats(pid).1.max(*peak.lock().expect("lock"));
    let deletes_per = fake.count_method("DELETE") as f64 / n as f64;
    drop(op);
    drop(cp);

    let (reference, minimum, minimum_profile, minimum_create) = if plain {
        let (reference, _) = plain_contestant(n, false, &sample).await;
        let (minimum, profile) = plain_contestant(n, true, &sample).await;
        let create = plain_creation(n, &sample).await;
        (reference, minimum, profile, create)
    } else {
        (
            Duration::ZERO,
            Duration::ZERO,
            Profile::default(),
            Duration::ZERO,
        )
    };
    Throughput {
        n,
        latency_ms,
        floor_create,
        floor_delete,
        floor_profile,
        reference,
        minimum,
        minimum_profile,
        minimum_create,
        ready,
        delete,
        create_profile,
        delete_profile,
        rss_steady_kb,
        rss_peak_kb,
        deletes_per,
        events_per: events / n as f64,
    }
}

fn print_throughput(rows: &[Throughput]) {
    println!(
        "| N | Leen latency ms | floor: kubectl create s | plain client: finalizer + Ready status s (ratio) | create -> all Ready s | ratio | floor: kubectl delete, all gone s | plain client: finalizer + Event s (ratio) | plain client: status + finalizer + Event s (ratio) | operator: delete -> all gone s | ratio | DELETE per deletion | Events per deletion | RSS steady MiB | RSS peak MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} | {:.2} ({:.2}x) | {:.2} | {:.2}x | {:.2} | {:.2} ({:.2}x) | {:.2} ({:.2}x) | {:.2} | {:.2}x | {:.2} | {:.2} | {:.1} | {:.1} |",
            r.n,
            r.latency_ms,
            r.floor_create.as_secs_f64(),
            r.minimum_create.as_secs_f64(),
            r.minimum_create.as_secs_f64() / r.floor_create.as_secs_f64().max(0.001),
            r.ready.as_secs_f64(),
            r.ready.as_secs_f64() / r.floor_create.as_secs_f64().max(0.001),
            r.floor_delete.as_secs_f64(),
            r.reference.as_secs_f64(),
            r.reference.as_secs_f64() / r.floor_delete.as_secs_f64().max(0.001),
            r.minimum.as_secs_f64(),
            r.minimum.as_secs_f64() / r.floor_delete.as_secs_f64().max(0.001),
            r.delete.as_secs_f64(),
            r.delete.as_secs_f64() / r.floor_delete.as_secs_f64().max(0.001),
            r.deletes_per,
            r.events_per,
            mib(r.rss_steady_kb),
            mib(r.rss_peak_kb),
        );
    }
    println!(
        "\nAPI server profile, per object (requests by verb and resource, with the API server's summed handling time):\n"
    );
    for r in rows {
        println!(
            "- N = {} floor deletion: {}",
            r.n,
            r.floor_profile.describe()
        );
        println!(
            "- N = {} plain client, status + finalizer + Event: {}",
            r.n,
            r.minimum_profile.describe()
        );
        println!(
            "- N = {} operator creation: {}",
            r.n,
            r.create_profile.describe()
        );
        println!(
            "- N = {} operator deletion: {}",
            r.n,
            r.delete_profile.describe()
        );
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024 / 1024)
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} GiB memory")
}

#[tokio::main]
async fn main() {
    let a = args();
    leen_operator::install_crypto_provider();
    if !a.throughput.is_empty() {
        let mut rows = Vec::new();
        for &n in &a.throughput {
            eprintln!("bench: throughput N={n}, Leen latency {} ms", a.latency_ms);
            rows.push(throughput(n, a.latency_ms, a.reconciles, !a.operator_only).await);
        }
        print_throughput(&rows);
        return;
    }
    if !a.create.is_empty() {
        println!(
            "| N | Leen latency ms | create -> all Ready s | floor: plain creates s | ratio | POST per resource | list per resource | GET per resource | test per resource | status writes per resource |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for &n in &a.create {
            eprintln!("bench: create N={n}, Leen latency {} ms", a.latency_ms);
            println!("{}", create_bench(n, a.latency_ms).await);
        }
        return;
    }
    let mut rows = Vec::new();
    for &n in &a.sizes {
        eprintln!("bench: N={n}, Leen latency {} ms", a.latency_ms);
        rows.push(run_one(n, a.latency_ms, a.concurrency, a.reconciles, false).await);
    }
    // The throughput target: 1 000 deletions at the target latency, beside the API floor.
    let target_n = 1000;
    eprintln!(
        "bench: N={target_n}, Leen latency {} ms (throughput target)",
        a.target_latency_ms
    );
    let target = run_one(
        target_n,
        a.target_latency_ms,
        a.concurrency,
        a.reconciles,
        true,
    )
    .await;
    eprintln!("bench: isolated deletions");
    let (isolated, delete_call) = isolated_latency(30).await;

    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Machine: {}. Operator: release build, defaults (32 concurrent reconciles, {} Leen requests in flight), real kube-apiserver v1.20.2 + etcd 3.4 on loopback, the project's fake Leen.\n",
        machine(),
        a.concurrency
    );
    let _ = writeln!(
        out,
        "Command: `KUBEBUILDER_ASSETS=$(../shared/envtest/setup.sh) cargo bench --bench scale -- --n {}`\n",
        a.sizes
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = writeln!(
        out,
        "| N | Leen latency ms | create -> all Ready s | GETs | status writes | start-up empty ms | start-up with N ms | RSS idle MiB | RSS steady MiB | RSS peak MiB | CPU s | delete all wall s (API marked all at s) | p50 ms | p95 ms | p99 ms | max ms | DELETE per deletion | GETs during deletion | kube writes per deletion (+ Events) |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in rows.iter().chain(std::iter::once(&target)) {
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} ({:.2}) | {} | {} | {} | {} | {:.2} | {} | {:.2} (+{:.2}) |",
            r.n,
            r.latency_ms,
            r.ready_all.as_secs_f64(),
            r.gets_create,
            r.status_writes_create,
            ms(r.startup_empty),
            ms(r.startup_loaded),
            mib(r.rss_idle_kb),
            mib(r.rss_steady_kb),
            mib(r.rss_peak_kb),
            r.cpu_s,
            r.delete_wall.as_secs_f64(),
            r.delete_marked.as_secs_f64(),
            ms(r.p50),
            ms(r.p95),
            ms(r.p99),
            ms(r.max),
            r.deletes_per,
            r.gets_during_delete,
            r.kube_writes_per,
            r.events_per
        );
    }
    let floor = target.floor.unwrap_or_default();
    let ideal = Duration::from_millis(target_n as u64 * a.target_latency_ms) / a.concurrency as u32;
    let bound = ideal.mul_f64(1.5) + floor;
    let _ = writeln!(out, "\n## Targets\n");
    let _ = writeln!(
        out,
        "- 1 000 deletions at Leen latency {} ms: {:.2} s; target 1.5 x (1 000 x {} ms / {}) + API floor = 1.5 x {:.2} s + {:.2} s = {:.2} s -> {}",
        a.target_latency_ms,
        target.delete_wall.as_secs_f64(),
        a.target_latency_ms,
        a.concurrency,
        ideal.as_secs_f64(),
        floor.as_secs_f64(),
        bound.as_secs_f64(),
        if target.delete_wall <= bound {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = writeln!(
        out,
        "  (API floor: {} status patches + {} finalizer patches from a plain client at concurrency {}: {:.2} s)",
        target_n,
        target_n,
        a.concurrency,
        floor.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "- p50 deletion latency (deletionTimestamp seen by a watch -> gone), Leen latency 0, one deletion at a time: {} ms (target < 50 ms) -> {}; before that, the DELETE call itself takes {} ms (p50) in this API server",
        ms(isolated),
        if isolated < Duration::from_millis(50) {
            "met"
        } else {
            "NOT met"
        },
        ms(delete_call)
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "- N = {}: DELETE per deletion {:.2} (target 1), GETs during deletion {} (target 0), kube writes per deletion {:.2} (target <= 2; Events not counted: {:.2})",
            r.n, r.deletes_per, r.gets_during_delete, r.kube_writes_per, r.events_per
        );
    }
    for r in &rows {
        let _ = writeln!(
            out,
            "- N = {}: start-up to ready {} ms; the same metadata list from a plain client {} ms",
            r.n,
            ms(r.startup_loaded),
            ms(r.list_floor)
        );
    }
    if let Some(big) = rows.iter().find(|r| r.n == 10_000) {
        let _ = writeln!(
            out,
            "- RSS at N = 10 000: steady {:.1} MiB (anonymous {:.1}, code and other files {:.1}; target <= 41 MiB) -> {}; peak {:.1} MiB (target < 48 MiB) -> {}",
            mib(big.rss_steady_kb),
            mib(big.rss_steady_split_kb.0),
            mib(big.rss_steady_split_kb.1),
            if mib(big.rss_steady_kb) <= 41.0 {
                "met"
            } else {
                "NOT met"
            },
            mib(big.rss_peak_kb),
            if mib(big.rss_peak_kb) < 48.0 {
                "met"
            } else {
                "NOT met"
            }
        );
        let _ = writeln!(
            out,
            "- start-up to ready at N = 10 000: {} ms (target < 3 s) -> {}",
            ms(big.startup_loaded),
            if big.startup_loaded < Duration::from_secs(3) {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    if let Some(r) = rows.first() {
        let _ = writeln!(
            out,
            "- idle RSS with no resources: {:.1} MiB (target < 16 MiB) -> {}",
            mib(r.rss_idle_kb),
            if mib(r.rss_idle_kb) < 16.0 {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    println!("{out}");
    if let Some(path) = a.out {
        std::fs::write(&path, &out).expect("write BENCHMARKS.md");
        eprintln!("bench: wrote {path}");
    }
}
