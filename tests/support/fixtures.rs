//! LeenConnection objects for tests, built in a few words instead of JSON literals (as
//! controller-rs's fixtures): `LeenConnection::test().deleting().orphan()`.
#![allow(dead_code)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use leen_operator::resource::{
    BoundConnection, DeletionPolicy, FINALIZER, LeenConnection, LeenConnectionSpec, Region,
};

/// Organization of [`Fixture::test`].
pub const ORG: &str = "6f1c2d4e-0000-4000-8000-000000000001";
/// Connection of [`Fixture::test`].
pub const ID: &str = "0b9e7a52-0000-4000-8000-000000000002";

/// Builders of test objects.
pub trait Fixture: Sized {
    /// `security/crowdstrike-prod` adopting connection [`ID`] of organization [`ORG`]:
    /// generation 3, uid, resourceVersion, the finalizer on, no status.
    fn test() -> Self;
    /// The same, to be created: no connectionId, this vendor.
    fn to_create(vendor: &str) -> Self;
    /// Named `name` in namespace `ns`.
    fn named(self, ns: &str, name: &str) -> Self;
    /// For these ids.
    fn ids(self, org: &str, id: &str) -> Self;
    /// Being deleted (deletionTimestamp set; the finalizer still on).
    fn deleting(self) -> Self;
    /// deletionPolicy: Orphan.
    fn orphan(self) -> Self;
    /// Bound in status to its spec's region and ids.
    fn bound(self) -> Self;
}

impl Fixture for LeenConnection {
    fn test() -> Self {
        let spec: LeenConnectionSpec = serde_json::from_value(serde_json::json!({
            "organizationId": ORG, "connectionId": ID,
        }))
        .expect("spec");
        let mut obj = LeenConnection::new("crowdstrike-prod", spec);
        obj.metadata.namespace = Some("security".into());
        obj.metadata.uid = Some("u-1".into());
        obj.metadata.generation = Some(3);
        obj.metadata.resource_version = Some("10".into());
        obj.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
        obj
    }

    fn to_create(vendor: &str) -> Self {
        let mut obj = Self::test();
        obj.spec.connection_id = None;
        obj.spec.vendor = Some(vendor.to_string());
        obj
    }

    fn named(mut self, ns: &str, name: &str) -> Self {
        self.metadata.namespace = Some(ns.to_string());
        self.metadata.name = Some(name.to_string());
        self
    }

    fn ids(mut self, org: &str, id: &str) -> Self {
        self.spec.organization_id = org.to_string();
        self.spec.connection_id = Some(id.to_string());
        self
    }

    fn deleting(mut self) -> Self {
        self.metadata.deletion_timestamp =
            Some(Time("2026-01-01T00:00:00Z".parse().expect("a timestamp")));
        self.metadata.deletion_grace_period_seconds = Some(0);
        self
    }

    fn orphan(mut self) -> Self {
        self.spec.deletion_policy = DeletionPolicy::Orphan;
        self
    }

    fn bound(mut self) -> Self {
        let status = self.status.get_or_insert_with(Default::default);
        status.bound_connection = Some(BoundConnection {
            region: Some(Region::Us),
            organization_id: self.spec.organization_id.clone(),
            connection_id: self.spec.connection_id.clone().unwrap_or_default(),
        });
        self
    }
}
