//! Which LeenConnections read which Secrets (API key, vendor credentials): a change of a
//! Secret reconciles exactly its readers, at once.

use std::{collections::HashMap, sync::Mutex};

use kube::{ResourceExt, runtime::reflector::ObjectRef};

use crate::controller::{CachedConnection, CachedSecret};
use crate::resource::LeenConnection;

/// The Secrets each resource reads, by resource. Entries go with the resource (the
/// controller forgets a resource on the watcher's Delete event and on a 404).
#[derive(Default)]
pub struct SecretIndex {
    reads: Mutex<HashMap<ObjectRef<CachedConnection>, Vec<String>>>,
}

impl SecretIndex {
    /// Records the Secrets `obj` names now (replacing what it named before).
    pub fn record(&self, key: ObjectRef<CachedConnection>, obj: &LeenConnection) {
        let names: Vec<String> = [
            obj.spec.api_key_secret_ref.as_ref().map(|r| r.name.clone()),
            obj.spec
                .credentials_secret_ref
                .as_ref()
                .map(|r| r.name.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Ok(mut map) = self.reads.lock() {
            if names.is_empty() {
                map.remove(&key);
            } else {
                map.insert(key, names);
            }
        }
    }

    /// Forgets a resource that is gone.
    pub fn forget(&self, key: &ObjectRef<CachedConnection>) {
        if let Ok(mut map) = self.reads.lock() {
            map.remove(key);
        }
    }

    /// The resources in the Secret's namespace that read it.
    pub fn readers(&self, secret: &CachedSecret) -> Vec<ObjectRef<CachedConnection>> {
        let ns = secret.namespace();
        let name = secret.name_any();
        self.reads
            .lock()
            .map(|map| {
                map.iter()
                    .filter(|(k, s)| k.namespace == ns && s.contains(&name))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}
