//! The read step: what a plan asks for before it can choose (`decision::Need`), read
//! from the API server or the controller's cache, never written. The one exception is
//! kept visible in the driver: a key Secret read for a `Delete` resource is protected
//! there (`secrets::protect`) right after.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{Api, Resource, ResourceExt, runtime::reflector::ObjectRef};

use super::{Context, Error, context::display_ref};
use crate::cache::CachedConnection;
use crate::{
    credentials::Credentials,
    decision::{Binding, Observation, Reason, held_binding},
    leen::ApiKey,
    organization::{
        ClusterLeenOrganization, LeenOrganization, OrganizationKind, OrganizationTarget,
        SECRET_TYPE_API_KEY, SECRET_TYPE_CREDENTIALS, SECRET_TYPE_LABEL,
    },
    resource::LeenConnection,
};

/// A Secret, or why it cannot be had (not found, not readable by the operator, not marked
/// by its namespace's owner for this use): the one place a Secret read is judged. Only a
/// Secret labelled `leen.dev/secret-type: <secret_type>` is used, so that naming a
/// Secret in a spec is not a way to make the operator read, or send to Leen, any Secret
/// of the namespace.
pub(crate) async fn read_secret(
    ctx: &Context,
    ns: &str,
    name: &str,
    what: &str,
    secret_type: &str,
) -> Result<Result<Secret, String>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let where_ = format!("{what} {ns}/{name}");
    match secrets.get_opt(name).await {
        Ok(Some(secret)) => {
            let marked = secret
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SECRET_TYPE_LABEL));
            match marked {
                Some(t) if t == secret_type => Ok(Ok(secret)),
                Some(other) => Ok(Err(format!(
                    "{where_} is marked {SECRET_TYPE_LABEL}={other:?}, not {secret_type}: the operator uses it only for that; label it for this use (kubectl label secret -n {ns} {name} {SECRET_TYPE_LABEL}={secret_type} --overwrite)"
                ))),
                None => Ok(Err(format!(
                    "{where_} is not marked for the operator: the operator reads only Secrets labelled {SECRET_TYPE_LABEL} (kubectl label secret -n {ns} {name} {SECRET_TYPE_LABEL}={secret_type})"
                ))),
            }
        }
        Ok(None) => Ok(Err(format!("{where_} not found"))),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(Err(format!(
            "the operator may not read {where_}: {}",
            status.message
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The organization spec.organizationRef names, as a connection of `obj`'s namespace may
/// use it: a LeenOrganization of the same namespace, or a ClusterLeenOrganization that
/// selects it. The inner error says why it cannot be used (`CredentialsMissing`: missing,
/// not selected; `InvalidSpec`: the spec contradicts it).
pub(crate) async fn organization(
    obj: &LeenConnection,
    ctx: &Context,
) -> Result<Result<OrganizationTarget, Observation>, Error> {
    let Some(r) = &obj.spec.organization_ref else {
        return Err(Error::Plan(
            "an organization was asked for without a reference",
        ));
    };
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let invalid = |message: String| {
        Ok(Err(Observation::InvalidSpec {
            reason: Reason::InvalidSpec,
            message,
        }))
    };
    let missing = |message: String| {
        Ok(Err(Observation::CredentialsMissing(format!(
            "{message}; nothing was sent to Leen"
        ))))
    };
    if !obj.spec.organization_id.is_empty() {
        return invalid(
            "spec.organizationRef names the organization: remove spec.organizationId".into(),
        );
    }
    if obj.spec.api_key_secret_ref.is_some() {
        return invalid(
            "spec.organizationRef brings the API key: remove spec.apiKeySecretRef".into(),
        );
    }
    let shown = format!("{} {}", r.kind.as_str(), r.name);
    // A resource that has nothing in Leen yet does not start on an organization being
    // deleted: its deletion could no longer count on the organization's key.
    let newcomer = obj.meta().deletion_timestamp.is_none()
        && obj
            .status
            .as_ref()
            .is_none_or(|s| s.bound_connection.is_none() && s.creation.is_none());
    let forbidden = |message: &str| format!("the operator may not read {shown}: {message}");
    let (target, org_deleting) = match r.kind {
        OrganizationKind::LeenOrganization => {
            let api: Api<LeenOrganization> = Api::namespaced(ctx.client.clone(), &ns);
            match api.get_opt(&r.name).await {
                Ok(Some(org)) => (org.target(), org.metadata.deletion_timestamp.is_some()),
                Ok(None) => {
                    return missing(format!(
                        "{shown} not found in namespace {ns}: create it, or name another in spec.organizationRef"
                    ));
                }
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    return missing(forbidden(&status.message));
                }
                Err(e) => return Err(e.into()),
            }
        }
        OrganizationKind::ClusterLeenOrganization => {
            if !ctx.watch_namespaces.is_empty() {
                return missing(format!(
                    "this operator watches only namespaces {} (WATCH_NAMESPACE) and serves no ClusterLeenOrganization: use a LeenOrganization in namespace {ns}",
                    ctx.watch_namespaces.join(", ")
                ));
            }
            let api: Api<ClusterLeenOrganization> = Api::all(ctx.client.clone());
            let org = match api.get_opt(&r.name).await {
                Ok(Some(org)) => org,
                Ok(None) => {
                    return missing(format!(
                        "{shown} not found: create it, or name another in spec.organizationRef"
                    ));
                }
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    return missing(forbidden(&status.message));
                }
                Err(e) => return Err(e.into()),
            };
            let labels = if org.spec.namespaces.iter().any(|n| n == &ns) {
                Default::default()
            } else {
                let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
                match namespaces.get_opt(&ns).await {
                    Ok(found) => found.and_then(|n| n.metadata.labels).unwrap_or_default(),
                    Err(kube::Error::Api(status)) if status.code == 403 => {
                        return missing(format!(
                            "the operator may not read namespace {ns}'s labels, which {shown}'s spec.namespaceSelector is matched against: {}",
                            status.message
                        ));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            match org.selects(&ns, &labels) {
                Ok(true) => (
                    org.target(&ctx.operator_namespace),
                    org.metadata.deletion_timestamp.is_some(),
                ),
                Ok(false) => {
                    return missing(format!(
                        "{shown} does not select namespace {ns}: a cluster administrator lists it in the organization's spec.namespaces or labels the namespace to match its spec.namespaceSelector"
                    ));
                }
                Err(why) => return missing(format!("{shown} cannot be used: {why}")),
            }
        }
    };
    if org_deleting && newcomer {
        return missing(format!(
            "{shown} is being deleted: name another organization in spec.organizationRef"
        ));
    }
    if let Some(region) = obj.spec.region
        && region != target.region
    {
        return invalid(format!(
            "spec.region {} is not the region of {shown} ({}): remove spec.region, which spec.organizationRef brings",
            region.as_str(),
            target.region.as_str()
        ));
    }
    Ok(Ok(target))
}

/// The API key a resource's calls carry: its Secret's key, or the default key. The inner
/// error is the `CredentialsMissing` message. Also the key Secret read, so that the
/// driver can protect it.
pub(crate) async fn api_key(
    obj: &LeenConnection,
    organization: Option<&OrganizationTarget>,
    ctx: &Context,
) -> Result<(Result<ApiKey, String>, Option<Secret>), Error> {
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    if let Some(target) = organization {
        // The organization's key: its Secret is the organization's to protect (the
        // organization waits for its connections), not this resource's.
        let name = obj
            .spec
            .organization_ref
            .as_ref()
            .map(|r| format!("{} {}", r.kind.as_str(), r.name))
            .unwrap_or_default();
        let what = format!("the API key Secret of {name}:");
        let key = read_key_from(ctx, &target.key_namespace, &target.key_secret, &what).await?;
        let cluster = obj
            .spec
            .organization_ref
            .as_ref()
            .is_some_and(|r| r.kind == OrganizationKind::ClusterLeenOrganization);
        // The platform's Secret is not the team's business: its name and namespace stay in
        // the organization's own status.
        let key = key.map_err(|message| {
            if cluster {
                format!("{name} cannot read its API key (its status says why)")
            } else {
                message
            }
        });
        return Ok((key.map(|(key, _)| key), None));
    }
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
    match read_key_from(ctx, &ns, secret_ref, "Secret").await? {
        Ok((key, secret)) => Ok((Ok(key), Some(secret))),
        Err(message) => Ok((Err(message), None)),
    }
}

/// An API key from a key Secret marked `leen.dev/secret-type: api-key`, with the Secret;
/// or why there is none, in words that start with `what`.
pub(crate) async fn read_key_from(
    ctx: &Context,
    ns: &str,
    secret_ref: &crate::resource::ApiKeySecretRef,
    what: &str,
) -> Result<Result<(ApiKey, Secret), String>, Error> {
    let secret = match read_secret(ctx, ns, &secret_ref.name, what, SECRET_TYPE_API_KEY).await? {
        Ok(secret) => secret,
        Err(message) => return Ok(Err(message)),
    };
    let where_ = format!("{what} {ns}/{}", secret_ref.name);
    let key = &secret_ref.key;
    let value = match secret.data.as_ref().and_then(|d| d.get(key)) {
        None => Err(format!("{where_} has no key {key:?}")),
        Some(bytes) => match std::str::from_utf8(&bytes.0) {
            Err(_) => Err(format!("key {key:?} of {where_} is not UTF-8 text")),
            Ok(text) => ApiKey::new(text).map_err(|e| format!("key {key:?} of {where_} {e}")),
        },
    };
    Ok(value.map(|key| (key, secret)))
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
    let secret =
        match read_secret(ctx, &ns, &secret_ref.name, what, SECRET_TYPE_CREDENTIALS).await? {
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
            // One that names the same connection through an organization it has not
            // resolved yet (it reads first) counts too: holding is the safe side.
            let through_organization = other.spec.organization_ref.is_some()
                && other
                    .spec
                    .connection_id
                    .as_deref()
                    .and_then(|id| uuid::Uuid::parse_str(id).ok())
                    == Some(binding.connection);
            if held.is_none()
                && !through_organization
                && let (Some(uid), Some(version)) = (other.uid(), other.resource_version())
            {
                self.state.record_binds_nothing(uid, version);
            }
            if other.meta().deletion_timestamp.is_none()
                && (held.as_ref() == Some(binding) || through_organization)
            {
                return Ok(Some(display_ref(&other)));
            }
        }
        Ok(None)
    }
}
