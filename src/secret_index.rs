//! Which LeenConnections read which Secrets (API key, vendor credentials): a change of a
//! Secret reconciles exactly its readers, at once.

use std::{collections::HashMap, sync::Mutex};

use kube::{ResourceExt, runtime::reflector::ObjectRef};

use crate::cache::{CachedConnection, CachedSecret};
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

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn reader(
        ns: &str,
        name: &str,
        key_secret: Option<&str>,
        creds: Option<&str>,
    ) -> LeenConnection {
        let mut spec = serde_json::json!({
            "organizationId": "6f1c2d4e-0000-4000-8000-000000000001",
            "connectionId": "0b9e7a52-0000-4000-8000-000000000002",
        });
        if let Some(s) = key_secret {
            spec["apiKeySecretRef"] = serde_json::json!({ "name": s });
        }
        if let Some(s) = creds {
            spec["credentialsSecretRef"] = serde_json::json!({ "name": s });
        }
        let mut obj = LeenConnection::new(name, serde_json::from_value(spec).expect("spec"));
        obj.metadata.namespace = Some(ns.to_string());
        obj
    }

    fn key(obj: &LeenConnection) -> ObjectRef<CachedConnection> {
        ObjectRef::new(&obj.name_any()).within(&obj.namespace().unwrap_or_default())
    }

    fn secret(ns: &str, name: &str) -> CachedSecret {
        use kube::core::PartialObjectMetaExt;
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            ..Default::default()
        }
        .into_response_partial()
    }

    #[test]
    fn a_secret_wakes_exactly_its_readers() {
        let index = SecretIndex::default();
        let a = reader("apps", "a", Some("key"), Some("creds"));
        let b = reader("apps", "b", None, Some("creds"));
        let c = reader("other", "c", Some("key"), None);
        for obj in [&a, &b, &c] {
            index.record(key(obj), obj);
        }
        let names = |secret: &CachedSecret| {
            let mut v: Vec<String> = index.readers(secret).into_iter().map(|r| r.name).collect();
            v.sort();
            v
        };
        assert_eq!(names(&secret("apps", "key")), vec!["a"]);
        assert_eq!(names(&secret("apps", "creds")), vec!["a", "b"]);
        assert_eq!(names(&secret("other", "key")), vec!["c"]);
        assert!(names(&secret("apps", "nothing")).is_empty());
        // A reader that stops naming a Secret, and one that is gone, wake nothing.
        let a2 = reader("apps", "a", None, None);
        index.record(key(&a2), &a2);
        index.forget(&key(&b));
        assert!(names(&secret("apps", "creds")).is_empty());
    }
}
