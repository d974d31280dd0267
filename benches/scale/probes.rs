//! What the benchmark measures with: /proc readers, percentiles, the API server's
//! metrics and profile, the watch that sees objects go.

use super::*;

/// RSS and CPU of a process from /proc.
pub(crate) fn proc_stats(pid: u32) -> (u64, u64, f64) {
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
pub(crate) fn rss_split(pid: u32) -> (u64, u64) {
    let kb = status_kb(pid);
    (kb("RssAnon:"), kb("RssFile:"))
}

/// A reader of the KiB figures in a process's /proc status (VmRSS:, RssAnon:, ...); 0 for
/// a key that is not there.
pub(crate) fn status_kb(pid: u32) -> impl Fn(&str) -> u64 {
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
pub(crate) fn rss_sampler(pid: u32) -> (Arc<Mutex<u64>>, tokio::task::JoinHandle<()>) {
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

pub(crate) fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// Waits until `n` objects are Ready=True, by watch.
pub(crate) struct DeleteFigures {
    pub(crate) wall: Duration,
    pub(crate) marked: Duration,
    pub(crate) latencies: Vec<Duration>,
}

/// Deletes every object in the namespace at once; per-object latency from when a watch
/// first sees deletionTimestamp to when it sees the object gone.
pub(crate) async fn delete_all(api: &Api<LeenConnection>, n: usize) -> DeleteFigures {
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

pub(crate) async fn metric(op: &Operator, name: &str, labels: &[&str]) -> f64 {
    op.metric(name, labels).await
}

/// Deleting one object at a time (no queueing): p50 from the deletionTimestamp becoming
/// visible to a watch until the object is gone, and p50 of the DELETE call itself (the
/// API server's own share).
pub(crate) async fn isolated_latency(samples: usize) -> (Duration, Duration) {
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
pub(crate) struct Profile {
    pub(crate) requests: HashMap<String, (f64, f64)>,
    pub(crate) watch_events: f64,
    pub(crate) apiserver_cpu: f64,
    pub(crate) etcd_cpu: f64,
    pub(crate) operator_cpu: f64,
}

impl Profile {
    pub(crate) async fn take(client: &Client, cp: &ControlPlane, operator: Option<u32>) -> Profile {
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
    pub(crate) fn per_object(&self, before: &Profile, n: usize) -> Profile {
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
    pub(crate) fn describe(&self) -> String {
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
pub(crate) fn pprof(client: &Client, seconds: u64) -> Option<tokio::task::JoinHandle<()>> {
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

/// Watches the namespace until `n` objects are gone; resolves once the watch is running.
/// The task returns each object's latency from when the watch first saw its
/// deletionTimestamp to when it saw the object gone.
pub(crate) async fn gone_watch(
    api: &Api<LeenConnection>,
    n: usize,
) -> tokio::task::JoinHandle<Vec<Duration>> {
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

pub(crate) fn machine() -> String {
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
