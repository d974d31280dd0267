//! The controller: the read -> plan -> act -> decide -> write pipeline around the pure
//! `decision` module, and its wiring.
//!
//! - [`driver`]: one reconcile, as its steps; the error policy;
//! - [`context`]: what the reconcilers are configured with, and what they learn running;
//! - [`inputs`]: the reads a plan asks for (key, credentials, other binders);
//! - [`external`]: one Leen call per plan step;
//! - [`write`]: status, Events, metadata and the finalizer, each in one place;
//! - [`secrets`]: the protection of key Secrets (`leen.dev/secret-in-use`);
//! - [`organizations`]: LeenOrganizations and ClusterLeenOrganizations (Ready, users, the
//!   in-use finalizer);
//! - [`runtime`]: watches, predicates, the two controllers;
//! - [`freshness`]: whether the cache can be relied on (a DELETE is decided from it).
//!
//! Both reconcilers answer "who binds this connection?" and "who needs this Secret?" from
//! the controller's metadata cache of LeenConnections, through labels and an annotation
//! the controller sets on them; only objects it has not labelled yet are read.

pub mod context;
pub mod driver;
pub mod external;
pub mod freshness;
pub mod inputs;
pub mod namespaces;
pub mod organizations;
pub mod runtime;
pub mod secrets;
pub mod write;

pub use context::{Clock, Context};
pub use driver::{error_policy, reconcile, reconcile_object, requeue_after};
pub use runtime::run;
pub use secrets::{reconcile_secret, secret_error_policy};
pub use write::merge_patch;

pub use crate::cache::{CachedConnection, CachedSecret};

/// Field manager of the controller's writes.
pub const FIELD_MANAGER: &str = "leen-operator";

/// Everything that can fail a reconciliation, one flat enum, so that the error policy and
/// the metrics match on our own variants. A deletion that is not finished is not an
/// error: its decision asks for the requeue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// The patch removing the finalizer failed.
    #[error("finalizer patch failed: {0}")]
    FinalizerPatch(#[source] kube::Error),
    /// The finalizer patch could not be built.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The object lacks a namespace.
    #[error("LeenConnection has no namespace")]
    NoNamespace,
    /// The plan asked for something the driver cannot do (a defect, never Leen's doing).
    #[error("plan: {0}")]
    Plan(&'static str),
}

impl Error {
    /// A short label for metrics.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApi",
            Error::FinalizerPatch(_) => "FinalizerPatch",
            Error::Finalizer(_) => "Finalizer",
            Error::NoNamespace => "NoNamespace",
            Error::Plan(_) => "Plan",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_changes_and_nulls_removals() {
        let old = json!({"state": "ACTIVE", "health": {"name": "HEALTHY", "details": [1]}, "vendor": "x", "conditions": [{"a": 1}]});
        let new = json!({"state": "DELETED", "health": {"name": "HEALTHY"}, "conditions": [{"a": 2}], "deletion": {"attempts": 1}});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"state": "DELETED", "health": {"details": null}, "vendor": null, "conditions": [{"a": 2}], "deletion": {"attempts": 1}})
        );
        assert_eq!(merge_patch(&json!(null), &new), new);
    }
}
