//! Waiting for conditions (watch-based, bounded), negative assertions held for a
//! whole period, and the predicates tests wait on.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    api::{Api, DeleteParams},
    runtime::{wait::await_condition, watcher},
};
use leen_operator::resource::LeenConnection;

use super::*;

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

/// Polls for the whole period that `holds` stays true; panics at the first time it does
/// not. A negative assertion ("no DELETE was sent") done right: not one sample after a sleep.
pub async fn consistently(what: &str, period: Duration, holds: impl AsyncFn() -> bool) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        assert!(holds().await, "{what} stopped holding");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (watch-based, bounded by `within`) until `n` objects of `api` are Ready with the
/// finalizer on.
pub async fn wait_all_ready(api: &Api<LeenConnection>, n: usize, within: Duration) {
    let mut ready = std::collections::HashSet::new();
    let stream = watcher(api.clone(), watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let deadline = tokio::time::Instant::now() + within;
    while ready.len() < n {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)))) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                if is_ready(&o) && has_finalizer(&o) {
                    ready.insert(name);
                } else {
                    ready.remove(&name);
                }
            }
            Ok(Some(Ok(watcher::Event::Delete(o)))) => {
                ready.remove(&o.metadata.name.clone().unwrap_or_default());
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => eprintln!("watch: {e}"),
            _ => panic!("only {} of {n} Ready within {within:?}", ready.len()),
        }
    }
}

/// Polls until `holds` is true, at most [`WAIT`]; panics naming `what` otherwise. A
/// condition, not a sleep.
pub async fn eventually(what: &str, holds: impl AsyncFn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !holds().await {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the Secret carries `leen.dev/secret-in-use`.
pub async fn wait_protected(api: &Api<Secret>, name: &str) -> Option<Secret> {
    wait_secret(api, name, "the secret-in-use finalizer", secret_protected).await
}
