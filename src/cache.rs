//! What the controller keeps of each LeenConnection between reconciles: the metadata it
//! keys, triggers and filters on, with its own labels and annotations boiled down to typed
//! fields. At 10 000 resources the labels and annotations kept as maps cost more memory
//! than the rest of the cache (a map node and two strings per entry); a [`Binding`] is 33
//! bytes and needs no allocation.

use std::borrow::Cow;

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{Resource, core::PartialObjectMeta, runtime::watcher::Event};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    leen::Binding,
    organization::{ORGANIZATION_REF_ANNOTATION, OrganizationRef},
    resource::{
        CONFIRM_DELETION_ANNOTATION, CONNECTION_LABEL, KEY_SECRET_ANNOTATION, LeenConnection,
        ORGANIZATION_LABEL, PAUSED_ANNOTATION, REGION_LABEL, Region,
    },
};

/// The controller's view of Secrets: metadata only, never their data.
pub type CachedSecret = PartialObjectMeta<Secret>;

/// The cached view of one LeenConnection.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "PartialObjectMeta<LeenConnection>")]
pub struct CachedConnection {
    /// Its metadata without labels, annotations, managedFields, owner references and
    /// resourceVersion.
    pub metadata: ObjectMeta,
    /// Its resourceVersion, kept here rather than in `metadata`: kube copies the metadata's
    /// into every reference to the object (the cache's key, two in the controller's queue),
    /// and nothing but the read in a reconcile needs it.
    pub resource_version: Option<Box<str>>,
    /// The binding recorded in the controller's labels (`leen.dev/region`,
    /// `leen.dev/organization-id`, `leen.dev/connection-id`); `None` when any of them is
    /// missing or does not parse (such a resource counts as not labelled yet).
    pub labelled: Option<Binding>,
    /// The key Secret recorded in `leen.dev/api-key-secret`.
    pub key_secret: Option<Box<str>>,
    /// The organization resource recorded in `leen.dev/organization-ref`.
    pub organization: Option<OrganizationRef>,
    /// Whether `leen.dev/confirm-deletion` is `"true"`.
    pub confirm_deletion: bool,
    /// Whether `leen.dev/paused` is `"true"`.
    pub paused: bool,
}

impl CachedConnection {
    /// The cached view of `metadata`; drops everything else.
    pub fn from_metadata(mut metadata: ObjectMeta) -> Self {
        let labels = metadata.labels.take().unwrap_or_default();
        let mut annotations = metadata.annotations.take().unwrap_or_default();
        metadata.managed_fields = None;
        metadata.owner_references = None;
        let resource_version = metadata.resource_version.take().map(String::into_boxed_str);
        let region = labels.get(REGION_LABEL).and_then(|r| parse_region(r));
        let uuid = |key: &str| labels.get(key).and_then(|v| Uuid::parse_str(v).ok());
        let labelled = match (region, uuid(ORGANIZATION_LABEL), uuid(CONNECTION_LABEL)) {
            (Some(region), Some(organization), Some(connection)) => Some(Binding {
                region,
                organization,
                connection,
            }),
            _ => None,
        };
        Self {
            resource_version,
            labelled,
            key_secret: annotations
                .remove(KEY_SECRET_ANNOTATION)
                .map(String::into_boxed_str),
            organization: annotations
                .get(ORGANIZATION_REF_ANNOTATION)
                .and_then(|v| OrganizationRef::parse_annotation(v)),
            confirm_deletion: annotations
                .get(CONFIRM_DELETION_ANNOTATION)
                .is_some_and(|v| v.trim() == "true"),
            paused: annotations
                .get(PAUSED_ANNOTATION)
                .is_some_and(|v| v.trim() == "true"),
            metadata,
        }
    }

    /// The cached view of a whole object.
    pub fn of(obj: &LeenConnection) -> Self {
        Self::from_metadata(obj.metadata.clone())
    }

    /// Whether it carries a deletionTimestamp.
    pub fn deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// Whether its finalizers include `finalizer`.
    pub fn holds(&self, finalizer: &str) -> bool {
        self.metadata
            .finalizers
            .as_deref()
            .is_some_and(|f| f.iter().any(|x| x == finalizer))
    }

    /// Its uid, borrowed.
    pub fn uid_str(&self) -> Option<&str> {
        self.metadata.uid.as_deref()
    }
}

fn parse_region(value: &str) -> Option<Region> {
    [Region::Us, Region::Eu, Region::Apac]
        .into_iter()
        .find(|r| r.as_str() == value)
}

impl From<PartialObjectMeta<LeenConnection>> for CachedConnection {
    fn from(partial: PartialObjectMeta<LeenConnection>) -> Self {
        Self::from_metadata(partial.metadata)
    }
}

/// A watcher event on metadata, as an event on the cached view.
pub fn cached_event(event: Event<PartialObjectMeta<LeenConnection>>) -> Event<CachedConnection> {
    match event {
        Event::Apply(o) => Event::Apply(o.into()),
        Event::Delete(o) => Event::Delete(o.into()),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(o.into()),
        Event::InitDone => Event::InitDone,
    }
}

/// The same type, URL and scope as a LeenConnection, so that object references, the
/// controller's queue and its Events name the resource itself.
impl Resource for CachedConnection {
    type DynamicType = ();
    type Scope = <LeenConnection as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        LeenConnection::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        LeenConnection::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        LeenConnection::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        LeenConnection::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
