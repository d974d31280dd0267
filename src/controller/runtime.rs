//! Runtime wiring: the watches, their predicates, the two controllers (LeenConnections
//! and the protection of key Secrets), the gauges loop and memory trimming.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, TryStreamExt};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt, controller, predicates,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    Context,
    driver::{error_policy, reconcile},
    organizations::{organization_error_policy, reconcile_organization},
    secrets::{reconcile_secret, secret_error_policy},
};
use crate::{
    cache::{CachedConnection, CachedSecret},
    organization::{ClusterLeenOrganization, LeenOrganization},
    resource::LeenConnection,
    telemetry::Readiness,
};

/// What changes of a LeenConnection are worth a reconciliation: kube's `generation` and
/// `finalizers` predicates, and two that kube has no predicate for: the start of deletion
/// (so that a deletion is acted on even if no generation bump came with it) and the
/// `leen.dev/confirm-deletion` and `leen.dev/paused` annotations (a person's go-ahead for a
/// held deletion, a pause and its end; the whole-annotations predicate would also fire on
/// our own annotation writes). Status
/// writes (our own) and our own labels are not worth one.
fn trigger_fingerprint(obj: &CachedConnection) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    predicates::generation(obj).hash(&mut h);
    predicates::finalizers(obj).hash(&mut h);
    obj.deleting().hash(&mut h);
    obj.confirm_deletion.hash(&mut h);
    obj.paused.hash(&mut h);
    Some(h.finish())
}

fn strip_secret(obj: &mut CachedSecret) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().clear();
    obj.labels_mut().clear();
    obj.owner_references_mut().clear();
}

/// Hands memory freed after a burst of work (start-up with thousands of resources, a mass
/// deletion) back to the system. glibc keeps freed memory inside its arenas and returns
/// only the top of the main one by itself, so without this the RSS after a burst stays
/// at the burst's high-water mark. Cheap (a walk of the free lists), and called only when
/// the controller goes idle after being busy.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs the controllers until `shutdown` resolves. `ready` is set once the cache synced.
pub async fn run(
    ctx: Arc<Context>,
    watch_client: Client,
    watch_namespaces: Vec<String>,
    concurrency: u16,
    ready: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = watch_client;
    // Metadata only, for LeenConnections as for Secrets: the controller reads the whole
    // object when it reconciles it, so the cache stays small with many resources, and no
    // Secret's data ever reaches the operator unless it reads a key. One watcher per
    // watched namespace (an operator whose Roles cover only those), or one for all.
    let scopes: Vec<Option<String>> = if watch_namespaces.is_empty() {
        vec![None]
    } else {
        watch_namespaces.iter().cloned().map(Some).collect()
    };
    let api_in =
        |scope: &Option<String>| -> (Api<PartialObjectMeta<LeenConnection>>, Api<CachedSecret>) {
            match scope {
                Some(ns) => (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                ),
                None => (Api::all(client.clone()), Api::all(client.clone())),
            }
        };
    let Some(writer) = ctx.state.writer.lock().ok().and_then(|mut w| w.take()) else {
        warn!("controller already running on this context");
        return;
    };
    let reader = ctx.connections.clone();
    let gone_ctx = ctx.clone();
    let watch_timeout = u32::try_from(ctx.watches.timeout.as_secs())
        .unwrap_or(u32::MAX)
        .max(1);
    let health = ctx.clone();
    // Lists read the latest state (a quorum read), not whatever an API server's watch
    // cache holds: a relist follows a watch error or a long disconnect, exactly when a
    // lagging API server is likely, and binders are decided from what it returns.
    let connection_watch = |scope: &Option<String>| {
        watcher(
            api_in(scope).0,
            watcher::Config::default().timeout(watch_timeout),
        )
        .default_backoff()
        .map_ok(crate::cache::cached_event)
    };
    ctx.watches.connections.expect_scopes(&watch_namespaces);
    // With one watch, its events say its health below; with several, the merge says each
    // namespace's (an error of one says nothing of the others).
    let single_scope = (scopes.len() == 1).then(|| scopes[0].clone().unwrap_or_default());
    let reflected = if scopes.len() == 1 {
        connection_watch(&scopes[0]).reflect(writer).boxed()
    } else {
        let relists = ctx.clone();
        let streams = scopes
            .iter()
            .map(|scope| (scope.clone().unwrap_or_default(), connection_watch(scope)))
            .collect();
        super::namespaces::reflect_namespaces(writer, (), streams, move |ns, phase| {
            let watch = &relists.watches.connections;
            match phase {
                super::namespaces::Relist::Started => watch.relist_started(ns),
                super::namespaces::Relist::Done => watch.relist_done(ns),
                super::namespaces::Relist::Failed(error) => watch.failed(ns, &error),
            }
        })
        .boxed()
    };
    let main_stream = reflected
        .inspect(move |event| {
            // Whether the cache can be relied on (see controller::freshness): after the
            // reflector, so that "relisted" means the store holds the list.
            let watch = &health.watches.connections;
            match (event, single_scope.as_deref()) {
                (Ok(watcher::Event::Init), _) => watch.relist_started(""),
                (Ok(watcher::Event::InitDone), _) => watch.relist_done(""),
                (Err(error), Some(scope)) => watch.failed(scope, &error.to_string()),
                _ => {}
            }
        })
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                // The store holds the whole initial list now (the reflector applied it
                // before this event passes): an empty cache no longer means "nobody".
                if !gone_ctx.synced() {
                    info!("LeenConnection cache synced; ready");
                }
                gone_ctx.set_synced();
                ready.set(true);
                return;
            }
            let Ok(watcher::Event::Delete(obj)) = event else {
                return;
            };
            // Gone, however it went (a finalizer removed by hand too): forget it.
            gone_ctx.forget(&ObjectRef::from_obj(obj), obj.uid().as_deref());
            // It may have been the last user of its organization, and of its key Secret:
            // look at them now that the cache no longer holds it.
            if let Some(r) = &obj.organization {
                gone_ctx.wake_organization(r, obj.namespace().as_deref());
            }
            if let (Some(ns), Some(secret)) = (obj.namespace(), obj.key_secret.as_deref()) {
                let _ = gone_ctx
                    .state
                    .wake_secrets
                    .send(ObjectRef::new(secret).within(&ns));
            }
        })
        .touched_objects()
        .predicate_filter(trigger_fingerprint, Default::default());
    let secret_index = ctx.clone();
    // What each Secret's finalizers were when last seen (a hash): forgotten when the
    // Secret goes, and all of it at a relist, so that it holds only the Secrets there are.
    let seen_secrets = Arc::new(Mutex::new(HashMap::<ObjectRef<CachedSecret>, u64>::new()));
    let forget_secrets = seen_secrets.clone();
    let secret_stream = futures::stream::select_all(scopes.iter().map(|scope| {
        watcher(api_in(scope).1, watcher::Config::default().any_semantic())
            .default_backoff()
            .boxed()
    }))
    .inspect_ok(move |event| {
        let Ok(mut seen) = forget_secrets.lock() else {
            return;
        };
        match event {
            watcher::Event::Delete(secret) => {
                seen.remove(&ObjectRef::from_obj(secret));
            }
            watcher::Event::Init => seen.clear(),
            _ => {}
        }
    })
    .touched_objects()
    .try_filter(move |secret| {
        // Wake users on a new Secret or a changed one, but not on a change of its
        // finalizers alone (our own secret-in-use patch): that is no news to them.
        let key = ObjectRef::from_obj(secret);
        let finalizers = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            secret.finalizers().hash(&mut h);
            h.finish()
        };
        let news = seen_secrets
            .lock()
            .map(|mut seen| match seen.insert(key, finalizers) {
                Some(before) => before == finalizers,
                None => true,
            })
            .unwrap_or(true);
        futures::future::ready(news)
    });
    let wake_connections = ctx
        .state
        .wake_connections_rx
        .lock()
        .ok()
        .and_then(|mut rx| rx.take());
    let wake_secrets = ctx
        .state
        .wake_secrets_rx
        .lock()
        .ok()
        .and_then(|mut rx| rx.take());

    let gauges_ctx = ctx.clone();
    tokio::spawn(async move {
        let mut seen = gauges_ctx.metrics.reconciles();
        let mut busy = false;
        loop {
            gauges_ctx.publish_gauges();
            // A second without a new reconciliation after busy ones: the burst is over.
            let now = gauges_ctx.metrics.reconciles();
            if now != seen {
                seen = now;
                busy = true;
            } else if busy {
                busy = false;
                release_freed_memory();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    if let Some(mut recoveries) = ctx.leen.recoveries() {
        let recovered = ctx.clone();
        tokio::spawn(async move {
            while recoveries.changed().await.is_ok() {
                let woken = recovered.state.wake_unavailable();
                if woken > 0 {
                    info!(woken, "Leen answers again; retrying what it could not do");
                }
            }
        });
    }

    let (shutdown_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut secrets_shutdown = shutdown_tx.subscribe();
    let organizations = run_organizations(
        ctx.clone(),
        client.clone(),
        &scopes,
        shutdown_tx.subscribe(),
        shutdown_tx.subscribe(),
    );
    // A controller waits for its cache before it runs, and a cache of a kind whose CRD is
    // not installed (an install that applied only the LeenConnection CRD) is never ready:
    // its shutdown would then wait forever. Such a controller is let go a moment after the
    // others stopped.
    let mut hard_stop = shutdown_tx.subscribe();
    let organizations = async move {
        tokio::select! {
            () = organizations => {}
            _ = async {
                let _ = hard_stop.recv().await;
                tokio::time::sleep(ORGANIZATIONS_GRACE).await;
            } => {
                warn!("the organization controllers did not stop within {ORGANIZATIONS_GRACE:?} of the shutdown (are the LeenOrganization and ClusterLeenOrganization CRDs installed?); stopped them");
            }
        }
    };
    let mut connections_shutdown = shutdown_tx.subscribe();
    tokio::spawn(async move {
        shutdown.await;
        let _ = shutdown_tx.send(());
    });

    let mut main = Controller::for_stream(main_stream, reader)
        .with_config(controller::Config::default().concurrency(concurrency))
        .watches_stream(secret_stream, move |secret| {
            secret_index.secrets.readers(&secret)
        })
        .graceful_shutdown_on(async move {
            let _ = connections_shutdown.recv().await;
        });
    if let Some(rx) = wake_connections {
        main = main.reconcile_on(receiver_stream(rx));
    }
    let secret_watch = |scope: &Option<String>| {
        watcher(api_in(scope).1, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(strip_secret)
    };
    let (secret_reader, secret_writer) = reflector::store();
    let secret_reflected = if scopes.len() == 1 {
        secret_watch(&scopes[0]).reflect(secret_writer).boxed()
    } else {
        let streams = scopes
            .iter()
            .map(|scope| (scope.clone().unwrap_or_default(), secret_watch(scope)))
            .collect();
        super::namespaces::reflect_namespaces(secret_writer, (), streams, |_, _| {}).boxed()
    };
    let secret_stream = secret_reflected
        .touched_objects()
        .predicate_filter(secret_fingerprint, Default::default());
    let mut protection = Controller::for_stream(secret_stream, secret_reader)
        .with_config(controller::Config::default().concurrency(4))
        .graceful_shutdown_on(async move {
            let _ = secrets_shutdown.recv().await;
        });
    if let Some(rx) = wake_secrets {
        protection = protection.reconcile_on(receiver_stream(rx));
    }
    let main = main
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "controller stream error");
            }
        });
    let protection = protection
        .run(reconcile_secret, secret_error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "secret protection stream error");
            }
        });
    futures::join!(main, protection, organizations);
}

/// How long the organization controllers may take to stop after a shutdown began.
const ORGANIZATIONS_GRACE: Duration = Duration::from_secs(5);

/// The reconcilers of LeenOrganizations (one watch per watched namespace, or one for all)
/// and, for an operator that watches all namespaces, of ClusterLeenOrganizations.
fn run_organizations(
    ctx: Arc<Context>,
    client: Client,
    scopes: &[Option<String>],
    mut namespaced_shutdown: tokio::sync::broadcast::Receiver<()>,
    mut cluster_shutdown: tokio::sync::broadcast::Receiver<()>,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let wake = ctx
        .state
        .wake_organizations_rx
        .lock()
        .ok()
        .and_then(|mut rx| rx.take());
    let wake_cluster = ctx
        .state
        .wake_cluster_organizations_rx
        .lock()
        .ok()
        .and_then(|mut rx| rx.take());
    let (reader, writer) = reflector::store();
    let watch = |scope: &Option<String>| {
        let api: Api<LeenOrganization> = match scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        watcher(api, watcher::Config::default()).default_backoff()
    };
    let reflected = if scopes.len() == 1 {
        watch(&scopes[0]).reflect(writer).boxed()
    } else {
        let streams = scopes
            .iter()
            .map(|scope| (scope.clone().unwrap_or_default(), watch(scope)))
            .collect();
        super::namespaces::reflect_namespaces(writer, (), streams, |_, _| {}).boxed()
    };
    let mut namespaced = Controller::for_stream(reflected.touched_objects(), reader)
        .with_config(controller::Config::default().concurrency(2))
        .graceful_shutdown_on(async move {
            let _ = namespaced_shutdown.recv().await;
        });
    if let Some(rx) = wake {
        namespaced = namespaced.reconcile_on(receiver_stream(rx));
    }
    let namespaced = namespaced
        .run(
            reconcile_organization::<LeenOrganization>,
            organization_error_policy::<LeenOrganization>,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "organization stream error");
            }
        });
    // Cluster-scoped objects take a ClusterRole to read: a namespaced operator serves none
    // (a LeenConnection naming one is told so).
    let cluster = (scopes.len() == 1 && scopes[0].is_none()).then(|| {
        let api: Api<ClusterLeenOrganization> = Api::all(client.clone());
        let mut cluster = Controller::new(api, watcher::Config::default())
            .with_config(controller::Config::default().concurrency(2))
            .graceful_shutdown_on(async move {
                let _ = cluster_shutdown.recv().await;
            });
        if let Some(rx) = wake_cluster {
            cluster = cluster.reconcile_on(receiver_stream(rx));
        }
        cluster
            .run(
                reconcile_organization::<ClusterLeenOrganization>,
                organization_error_policy::<ClusterLeenOrganization>,
                ctx,
            )
            .for_each(|result| async move {
                if let Err(e) = result {
                    debug!(error = %e, "cluster organization stream error");
                }
            })
    });
    async move {
        match cluster {
            Some(cluster) => {
                futures::join!(namespaced, cluster);
            }
            None => namespaced.await,
        }
    }
}

fn secret_fingerprint(obj: &CachedSecret) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    predicates::finalizers(obj).hash(&mut h);
    obj.meta().deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

fn receiver_stream<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
