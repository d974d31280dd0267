//! The write step: every write the controller makes to a LeenConnection goes through
//! here. Status patches are computed as values (the merge-patch difference between the
//! status read and the status decided) and applied in [`status`]; a decision's Event
//! follows its status; the finalizer goes explicitly, in [`release`], only after the
//! status write was accepted.

use std::{sync::Arc, time::Duration};

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::ObjectRef,
};
use serde_json::{Value, json};
use tracing::warn;

use super::{Context, Error, FIELD_MANAGER, secrets::key_secret_needed};
use crate::{
    decision::{Binding, Decision, EventSpec, held_binding},
    organization::{ORGANIZATION_REF_ANNOTATION, OrganizationRef},
    resource::{
        CONNECTION_LABEL, FINALIZER, KEY_SECRET_ANNOTATION, LeenConnection, LeenConnectionStatus,
        ORGANIZATION_LABEL, REGION_LABEL,
    },
};

/// Writes `status` as the resource's status (a merge patch against what `obj` holds; no
/// write when equal) and keeps it in the working copy.
pub(crate) async fn status(
    obj: &mut LeenConnection,
    status: LeenConnectionStatus,
    ctx: &Context,
) -> Result<(), Error> {
    if obj.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<LeenConnection> = Api::namespaced(ctx.client.clone(), &ns);
    let old = serde_json::to_value(&obj.status).unwrap_or_default();
    let new = serde_json::to_value(&status).unwrap_or_default();
    let patch = json!({ "status": merge_patch(&old, &new) });
    api.patch_status(&obj.name_any(), &field_manager(), &Patch::Merge(patch))
        .await?;
    ctx.metrics.kube_write("status");
    obj.status = Some(status);
    Ok(())
}

/// Publishes an Event on the resource (in the background).
pub(crate) fn event(ctx: &Context, obj: &LeenConnection, event: &EventSpec) {
    ctx.events.publish(event, obj.object_ref(&()));
}

/// Applies a decision's writes: the status (only when it changed), then the Event.
pub(crate) async fn decision(
    obj: &mut LeenConnection,
    decision: &Decision,
    ctx: &Context,
) -> Result<(), Error> {
    status(obj, decision.status.clone(), ctx).await?;
    if let Some(spec) = &decision.event {
        event(ctx, obj, spec);
    }
    Ok(())
}

/// A finished deletion: the decision's status written (retried briefly here rather than
/// lose what Leen returned), then the finalizer removed, never before.
pub(crate) async fn release(
    obj: &mut LeenConnection,
    decided: &Decision,
    ctx: &Context,
) -> Result<(), Error> {
    let mut tries = 0;
    loop {
        match decision(obj, decided, ctx).await {
            Ok(()) => break,
            Err(e) if tries < 3 => {
                tries += 1;
                warn!(error = %e, "status write before finalizer removal failed, retrying");
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
    remove_finalizer(obj, ctx).await
}

/// Removes `leen.dev/delete-connection`, and only it: a JSON patch that tests the entry
/// before removing it, so that a finalizer list changed meanwhile fails the patch rather
/// than lose another's finalizer.
async fn remove_finalizer(obj: &LeenConnection, ctx: &Context) -> Result<(), Error> {
    let Some(index) = obj.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<LeenConnection> = Api::namespaced(ctx.client.clone(), &ns);
    let path = format!("/metadata/finalizers/{index}");
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ]))
    .map_err(|e| Error::Finalizer(e.to_string()))?;
    api.patch(&obj.name_any(), &field_manager(), &Patch::Json::<()>(patch))
        .await
        .map_err(Error::FinalizerPatch)?;
    ctx.metrics.kube_write("finalizer_remove");
    Ok(())
}

/// During a deletion, the key Secret annotation follows the spec (an `apiKeySecretRef`
/// edited to a rotated key's Secret while the deletion waits): the Secret the deletion
/// will read is the one kept, the one it no longer needs is woken to be released.
pub(crate) async fn key_secret_while_deleting(
    obj: Arc<LeenConnection>,
    api: &Api<LeenConnection>,
    ctx: &Context,
) -> Result<Arc<LeenConnection>, Error> {
    let wanted = key_secret_needed(&obj);
    let current = obj.annotations().get(KEY_SECRET_ANNOTATION).cloned();
    if wanted == current {
        return Ok(obj);
    }
    let patch = json!({"metadata": {"annotations": {
        KEY_SECRET_ANNOTATION: wanted.clone().map_or(Value::Null, Value::String)
    }}});
    let updated = api
        .patch(&obj.name_any(), &field_manager(), &Patch::Merge(&patch))
        .await?;
    ctx.metrics.kube_write("metadata");
    if let (Some(old), Some(ns)) = (current, obj.namespace()) {
        let _ = ctx
            .state
            .wake_secrets
            .send(ObjectRef::new(&old).within(&ns));
    }
    Ok(Arc::new(updated))
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: changed and new keys with
/// their values, removed keys as null, objects recursively, arrays whole. Writing only the
/// difference keeps the write small, and the null entries remove what no longer applies.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, v) in n {
                match o.get(k) {
                    Some(ov) if ov == v => {}
                    Some(ov) => {
                        patch.insert(k.clone(), merge_patch(ov, v));
                    }
                    None => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// What the controller keeps on a live resource's metadata: the binding labels, the key
/// Secret annotation, and the finalizer, all in one patch when anything is missing. The
/// patch carries the resourceVersion read, so that it cannot drop another's finalizer.
pub(crate) async fn metadata(
    obj: Arc<LeenConnection>,
    api: &Api<LeenConnection>,
    ctx: &Context,
) -> Result<Arc<LeenConnection>, Error> {
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(obj);
    }
    let mut labels = serde_json::Map::new();
    let binding = held_binding(&obj);
    let wanted = binding.as_ref().map(binding_labels);
    for key in [REGION_LABEL, ORGANIZATION_LABEL, CONNECTION_LABEL] {
        let want = wanted
            .as_ref()
            .and_then(|w| w.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()));
        if obj.labels().get(key) != want.as_ref() {
            labels.insert(key.to_string(), want.map_or(Value::Null, Value::String));
        }
    }
    let key_secret = key_secret_needed(&obj);
    let current_secret = obj.annotations().get(KEY_SECRET_ANNOTATION).cloned();
    let mut annotations = serde_json::Map::new();
    if current_secret != key_secret {
        annotations.insert(
            KEY_SECRET_ANNOTATION.to_string(),
            key_secret.clone().map_or(Value::Null, Value::String),
        );
    }
    let organization = obj
        .spec
        .organization_ref
        .as_ref()
        .map(OrganizationRef::annotation);
    let current_organization = obj.annotations().get(ORGANIZATION_REF_ANNOTATION).cloned();
    if current_organization != organization {
        annotations.insert(
            ORGANIZATION_REF_ANNOTATION.to_string(),
            organization.clone().map_or(Value::Null, Value::String),
        );
    }
    let has_finalizer = obj.finalizers().iter().any(|f| f == FINALIZER);
    if labels.is_empty() && annotations.is_empty() && has_finalizer {
        return Ok(obj);
    }
    let mut metadata = serde_json::Map::new();
    if let Some(rv) = obj.resource_version() {
        metadata.insert("resourceVersion".into(), json!(rv));
    }
    if !labels.is_empty() {
        metadata.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    if !has_finalizer {
        let mut finalizers = obj.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        metadata.insert("finalizers".into(), json!(finalizers));
    }
    let patch = json!({ "metadata": metadata });
    let updated = api
        .patch(&obj.name_any(), &field_manager(), &Patch::Merge(&patch))
        .await?;
    ctx.metrics.kube_write(if has_finalizer {
        "metadata"
    } else {
        "finalizer_add"
    });
    if current_organization != organization {
        // The organizations it left and joined count their users again.
        for r in [&current_organization, &organization]
            .into_iter()
            .flatten()
            .filter_map(|a| OrganizationRef::parse_annotation(a))
        {
            ctx.wake_organization(&r, obj.namespace().as_deref());
            // Once more when the cache surely holds the new annotation (the first look
            // may still count the old one).
            let wakers = ctx.organization_wakers();
            let ns = obj.namespace();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                wakers.wake(&r, ns.as_deref());
            });
        }
    }
    if let (Some(old), Some(ns)) = (current_secret, obj.namespace())
        && key_secret.as_ref() != Some(&old)
    {
        // That Secret may not be needed any more.
        let _ = ctx
            .state
            .wake_secrets
            .send(ObjectRef::new(&old).within(&ns));
    }
    Ok(Arc::new(updated))
}

pub(crate) fn field_manager() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

fn binding_labels(b: &Binding) -> [(&'static str, String); 3] {
    [
        (REGION_LABEL, b.region.as_str().to_string()),
        (ORGANIZATION_LABEL, b.organization.to_string()),
        (CONNECTION_LABEL, b.connection.to_string()),
    ]
}
