//! The contestants: the operator on a staged control plane, and the floors and plain
//! clients it is measured against (kubectl alone, finalizer-only and status clients).

use super::*;

/// The API server's own floor: the same writes the operator makes per deletion (a status
/// patch and a finalizer removal), from a plain client with the same concurrency.
pub(crate) async fn api_floor(
    client: &Client,
    fake: &FakeLeen,
    n: usize,
    concurrency: usize,
) -> Duration {
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

/// A control plane with the benchmark's namespace and the floor's, and a fake Leen that
/// accepts `bench-key` and answers after `latency_ms`.
pub(crate) async fn stage(latency_ms: u64) -> (ControlPlane, FakeLeen) {
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
pub(crate) async fn create_bench(n: usize, latency_ms: u64) -> String {
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

pub(crate) async fn run_one(
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

/// Runs the real kubectl against `cp` off the async runtime.
pub(crate) async fn kubectl(cp: &ControlPlane, args: &[&str]) {
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
pub(crate) fn manifest(
    cp: &ControlPlane,
    n: usize,
    fake: Option<&FakeLeen>,
    finalizer: bool,
) -> std::path::PathBuf {
    manifest_in(cp, n, fake, finalizer, None)
}

/// [`manifest`], with every connection in `organization` when one is given (one Leen
/// organization with many connections), else each in an organization of its own.
pub(crate) fn manifest_in(
    cp: &ControlPlane,
    n: usize,
    fake: Option<&FakeLeen>,
    finalizer: bool,
    organization: Option<Uuid>,
) -> std::path::PathBuf {
    let items: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let (org, id) = (organization.unwrap_or_else(Uuid::new_v4), Uuid::new_v4());
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

/// Deletes every object the way `kubectl delete -l ... --wait=false` does and times
/// until all are gone.
pub(crate) async fn kubectl_delete_all(
    cp: &ControlPlane,
    api: &Api<LeenConnection>,
    n: usize,
) -> Duration {
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
pub(crate) fn plain_finalizer(client: Client, status: bool) -> tokio::task::JoinHandle<()> {
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
pub(crate) fn plain_deletion_status() -> serde_json::Value {
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
pub(crate) async fn plain_contestant(
    n: usize,
    status: bool,
    sample: &LeenConnection,
) -> (Duration, Profile) {
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
pub(crate) fn ready_shape(
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
pub(crate) fn plain_adopter(client: Client, sample: LeenConnection) -> tokio::task::JoinHandle<()> {
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
pub(crate) async fn plain_creation(n: usize, sample: &LeenConnection) -> Duration {
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

pub(crate) struct Throughput {
    pub(crate) n: usize,
    pub(crate) latency_ms: u64,
    pub(crate) floor_create: Duration,
    pub(crate) floor_delete: Duration,
    pub(crate) floor_profile: Profile,
    /// Finalizer removal + Event from a plain client (the reference operator's writes).
    pub(crate) reference: Duration,
    /// Status + finalizer removal + Event from a plain client (this contract's writes).
    pub(crate) minimum: Duration,
    /// Finalizer + Ready status from a plain client, while kubectl creates.
    pub(crate) minimum_create: Duration,
    pub(crate) minimum_profile: Profile,
    pub(crate) ready: Duration,
    pub(crate) delete: Duration,
    pub(crate) create_profile: Profile,
    pub(crate) delete_profile: Profile,
    pub(crate) rss_steady_kb: u64,
    pub(crate) rss_peak_kb: u64,
    pub(crate) deletes_per: f64,
    pub(crate) events_per: f64,
}

/// One contestant after the other on fresh control planes: no operator (the floor), then
/// the operator with the fake Leen answering after `latency_ms`; the same N objects
/// created with `kubectl create -f` and deleted with one `kubectl delete -l`.
pub(crate) async fn throughput(
    n: usize,
    latency_ms: u64,
    reconciles: Option<u16>,
    plain: bool,
) -> Throughput {
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
