//! The read step: what a plan asks for before it can choose (`decision::Need`), read
//! from the API server or the controller's cache, never written. The one exception is
//! kept visible in the driver: a key Secret read for a `Delete` resource is protected
//! there (`secrets::protect`) right after.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Resource, ResourceExt, runtime::reflector::ObjectRef};

use super::{Context, Error, context::display_ref};
use crate::cache::CachedConnection;
use crate::{
    credentials::Credentials,
    decision::{Binding, Observation, Reason, held_binding},
    leen::ApiKey,
    resource::LeenConnection,
};

/// A Secret of the resource's namespace, or why it cannot be had (not found, not
/// readable by the operator): the one place a Secret read is judged.
async fn read_secret(
    ctx: &Context,
    ns: &str,
    name: &str,
    what: &str,
) -> Result<Result<Secret, String>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let where_ = format!("{what} {ns}/{name}");
    match secrets.get_opt(name).await {
        Ok(Some(secret)) => Ok(Ok(secret)),
        Ok(None) => Ok(Err(format!("{where_} not found"))),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(Err(format!(
            "the operator may not read {where_}: {}",
            status.message
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The API key a resource's calls carry: its Secret's key, or the default key. The inner
/// error is the `CredentialsMissing` message. Also the key Secret read, so that the
/// driver can protect it.
pub(crate) async fn api_key(
    obj: &LeenConnection,
    ctx: &Context,
) -> Result<(Result<ApiKey, String>, Option<Secret>), Error> {
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let Some(secret_ref) = &obj.spec.api_key_secret_ref else {
        if !ctx.default_key_namespaces.contains(&ns) {
            return Ok((
                Err(format!(
                    "no spec.apiKeySecretRef, and namespace {ns} may not use the operator's default API key: name a Secret in spec.apiKeySecretRef, or add {ns} to the operator's LEEN_DEFAULT_KEY_NAMESPACES (chart value leen.defaultKeyNamespaces)"
                )),
                None,
            ));
        }
        let key = ctx.default_key.clone().ok_or_else(|| {
            "no spec.apiKeySecretRef and the operator has no default API key (LEEN_API_KEY)"
                .to_string()
        });
        return Ok((key, None));
    };
    let secret = match read_secret(ctx, &ns, &secret_ref.name, "Secret").await? {
        Ok(secret) => secret,
        Err(message) => return Ok((Err(message), None)),
    };
    let where_ = format!("Secret {ns}/{}", secret_ref.name);
    let key = &secret_ref.key;
    let value = match secret.data.as_ref().and_then(|d| d.get(key)) {
        None => Err(format!("{where_} has no key {key:?}")),
        Some(bytes) => match std::str::from_utf8(&bytes.0) {
            Err(_) => Err(format!("key {key:?} of {where_} is not UTF-8 text")),
            Ok(text) => ApiKey::new(text).map_err(|e| format!("key {key:?} of {where_} {e}")),
        },
    };
    Ok((value, Some(secret)))
}

/// The vendor credentials Secret, when the spec names one. The inner error is the
/// observation (missing or malformed) that stops any call.
pub(crate) async fn credentials(
    obj: &LeenConnection,
    ctx: &Context,
) -> Result<Result<Option<Credentials>, Observation>, Error> {
    let Some(secret_ref) = &obj.spec.credentials_secret_ref else {
        return Ok(Ok(None));
    };
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let what = "vendor credentials Secret";
    let secret = match read_secret(ctx, &ns, &secret_ref.name, what).await? {
        Ok(secret) => secret,
        Err(message) => {
            return Ok(Err(Observation::CredentialsMissing(format!(
                "{message}; nothing was sent to Leen"
            ))));
        }
    };
    let where_ = format!("{what} {ns}/{}", secret_ref.name);
    Ok(
        Credentials::from_secret_data(&secret.data.unwrap_or_default())
            .map(Some)
            .map_err(|e| Observation::InvalidSpec {
                reason: Reason::CredentialsMalformed,
                message: format!("{where_} {e}; nothing was sent to Leen"),
            }),
    )
}

/// What a resource of one namespace may be told about a resource of another.
pub(crate) const ANOTHER_NAMESPACE: &str = "a resource in another namespace";

/// Another live resource binding the same connection: its reference (to wake it) and how
/// the asking resource's status and Events may name it.
pub(crate) struct Binder {
    /// The other resource.
    pub(crate) key: ObjectRef<CachedConnection>,
    /// `namespace/name` within the asker's namespace, else [`ANOTHER_NAMESPACE`].
    pub(crate) shown: String,
}

/// Whether `obj` has read the connection `binding` from Leen successfully (with its own
/// key): it is bound to it, and mirrors a state Leen returned for it.
fn has_read(obj: &LeenConnection, binding: &Binding) -> bool {
    obj.status.as_ref().is_some_and(|s| s.state.is_some())
        && held_binding(obj).as_ref() == Some(binding)
}

/// How a resource of namespace `viewer` may name `other`.
fn shown<K: Resource>(other: &K, viewer: &str) -> String {
    if other.meta().namespace.as_deref() == Some(viewer) {
        display_ref(other)
    } else {
        ANOTHER_NAMESPACE.to_string()
    }
}

impl Context {
    /// Other live resources (not being deleted) in the cache whose labels bind `binding`,
    /// named as `me` may name them. Runs on every reconcile over the whole cache: the
    /// filter allocates nothing.
    pub(crate) fn labelled_binders(&self, me: &LeenConnection, binding: &Binding) -> Vec<Binder> {
        let mine = me.meta().uid.as_deref();
        let viewer = me.meta().namespace.as_deref().unwrap_or_default();
        let mut found: Vec<Binder> = self
            .connections
            .state_filter(|o| {
                o.labelled.as_ref() == Some(binding) && !o.deleting() && o.uid_str() != mine
            })
            .iter()
            .map(|o| Binder {
                key: ObjectRef::from_obj(o.as_ref()),
                shown: shown(o.as_ref(), viewer),
            })
            .collect();
        found.sort_by(|a, b| a.shown.cmp(&b.shown));
        found
    }

    /// Another live resource that binds `binding`, for a deletion, as `me` may name it.
    /// One of `me`'s namespace counts at once: the cache first, then a read of each live
    /// resource there the controller has not labelled yet (just created, say by a GitOps
    /// rename that creates the new object and prunes the old one at once). One of another
    /// namespace counts only once it has read that connection from Leen successfully with
    /// its own key (read here: such binders are rare), so that a copied manifest with a key
    /// Leen refuses cannot keep another team's connection alive. A resource read before at the same resourceVersion and found to
    /// bind nothing (a create not done yet) is not read again: many deletions beside many
    /// pending creates cost one read per create, not one per create and deletion.
    pub(crate) async fn other_binder(
        &self,
        me: &LeenConnection,
        binding: &Binding,
    ) -> Result<Option<String>, Error> {
        let viewer = me.meta().namespace.clone().unwrap_or_default();
        let binders = self.labelled_binders(me, binding);
        if let Some(first) = binders
            .iter()
            .find(|b| b.key.namespace.as_deref() == Some(&*viewer))
        {
            return Ok(Some(first.shown.clone()));
        }
        for other in binders {
            let Some(ns) = other.key.namespace.as_deref() else {
                continue;
            };
            let api: Api<LeenConnection> = Api::namespaced(self.client.clone(), ns);
            if let Some(full) = api.get_opt(&other.key.name).await?
                && full.meta().deletion_timestamp.is_none()
                && has_read(&full, binding)
            {
                return Ok(Some(other.shown));
            }
        }
        let mine = me.meta().uid.as_deref();
        let unlabelled = self.connections.state_filter(|o| {
            o.labelled.is_none()
                && !o.deleting()
                && o.uid_str() != mine
                && o.metadata.namespace.as_deref() == Some(viewer.as_str())
        });
        let api: Api<LeenConnection> = Api::namespaced(self.client.clone(), &viewer);
        for meta in unlabelled {
            if let (Some(uid), Some(version)) = (meta.uid_str(), meta.resource_version.as_deref())
                && self.state.binds_nothing(uid, version)
            {
                // Read at this very version before: it binds nothing.
                continue;
            }
            let Some(other) = api.get_opt(&meta.name_any()).await? else {
                continue;
            };
            let held = held_binding(&other);
            if held.is_none()
                && let (Some(uid), Some(version)) = (other.uid(), other.resource_version())
            {
                self.state.record_binds_nothing(uid, version);
            }
            if other.meta().deletion_timestamp.is_none() && held.as_ref() == Some(binding) {
                return Ok(Some(display_ref(&other)));
            }
        }
        Ok(None)
    }
}
