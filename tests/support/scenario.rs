//! A scenario: control plane, fake Leen and operator together, with the objects and
//! helpers most tests start from.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use fake_leen::FakeLeen;
use futures::StreamExt;
use k8s_openapi::{
    ByteString,
    api::{core::v1::Secret, events::v1::Event},
};
use kube::{
    Client,
    api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use leen_operator::resource::{LeenConnection, LeenConnectionSpec};
use uuid::Uuid;

use super::*;

/// A LeenConnection object.
pub fn connection(name: &str, org: uuid::Uuid, id: uuid::Uuid) -> LeenConnection {
    let spec: LeenConnectionSpec = serde_json::from_value(serde_json::json!({
        "organizationId": org.to_string(),
        "connectionId": id.to_string(),
    }))
    .expect("spec");
    LeenConnection::new(name, spec)
}

/// Creates an API key Secret with one key, marked for the operator
/// (`leen.dev/secret-type: api-key`).
pub async fn secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    typed_secret(client, ns, name, key, value, Some("api-key")).await;
}

/// Creates a vendor credentials Secret with one key, marked for the operator
/// (`leen.dev/secret-type: credentials`).
pub async fn credentials_secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    typed_secret(client, ns, name, key, value, Some("credentials")).await;
}

/// Creates a Secret with one key and, when given, the `leen.dev/secret-type` label.
pub async fn typed_secret(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
    value: &str,
    secret_type: Option<&str>,
) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: secret_type
                .map(|t| BTreeMap::from([("leen.dev/secret-type".to_string(), t.to_string())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &s)
        .await
        .expect("secret created");
}

/// Every `PATH` lookup the harness needs, checked early with a clear message.
pub fn require_tools() {
    for tool in ["openssl", "kubectl"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(found, "{tool} is not on PATH; .ci/run installs it");
    }
}

// Field order is drop order: the operator stops (and shows its log on failure) before
// the control plane and its folder go.
pub struct Scenario {
    /// The operator binary.
    pub op: Operator,
    /// The fake Leen.
    pub fake: FakeLeen,
    /// An admin client.
    pub client: Client,
    /// LeenConnections in the scenario's namespace.
    pub api: Api<LeenConnection>,
    /// The namespace.
    pub ns: &'static str,
    /// The control plane.
    pub cp: ControlPlane,
}

/// Control plane, fake Leen accepting [`DEFAULT_KEY`], namespace `ns`, operator running
/// with [`DEFAULT_KEY`] as its default key.
pub async fn scenario(ns: &'static str, extra_env: &[(&str, &str)]) -> Scenario {
    let cp = ControlPlane::start().await;
    let fake = FakeLeen::start().await.expect("fake Leen");
    fake.add_api_key(DEFAULT_KEY);
    cp.namespace(ns).await;
    let endpoint = fake.base_url();
    let mut vars = vec![
        ("LEEN_ENDPOINT", endpoint.as_str()),
        ("LEEN_API_KEY", DEFAULT_KEY),
    ];
    vars.extend_from_slice(extra_env);
    let op = Operator::start(&cp, &vars).await;
    let client = cp.client().await;
    let api = Api::namespaced(client.clone(), ns);
    Scenario {
        cp,
        fake,
        op,
        client,
        api,
        ns,
    }
}

impl Scenario {
    /// A new connection in the fake Leen.
    pub fn seeded(&self) -> (Uuid, Uuid) {
        let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
        self.fake.add_connection(org, id, "CrowdStrike");
        (org, id)
    }

    /// Creates namespace `ns` and in it a LeenConnection `name` for a new connection.
    pub async fn create_elsewhere(&self, ns: &str, name: &str) -> (Api<LeenConnection>, Uuid) {
        self.cp.namespace(ns).await;
        let api: Api<LeenConnection> = Api::namespaced(self.client.clone(), ns);
        let (org, id) = self.seeded();
        api.create(&PostParams::default(), &connection(name, org, id))
            .await
            .expect("created");
        (api, id)
    }

    /// Creates a LeenConnection.
    pub async fn create(&self, obj: LeenConnection) {
        self.api
            .create(&PostParams::default(), &obj)
            .await
            .expect("LeenConnection created");
    }

    /// Creates a resource for a seeded connection and waits until it is Ready.
    pub async fn ready_connection(&self, name: &str) -> (Uuid, Uuid) {
        let (org, id) = self.seeded();
        self.create(connection(name, org, id)).await;
        wait_for(&self.api, name, "Ready=True", is_ready).await;
        (org, id)
    }

    /// The Events with this reason, waiting (bounded) for the first one: Events are
    /// published after the status write a test usually waits on.
    pub async fn events(&self, reason: &str) -> Vec<Event> {
        events(&self.client, self.ns, reason).await
    }

    /// Creates Secret `secret` (key `apiKey` = `key`, which the fake Leen accepts) and a
    /// LeenConnection `name` for a new connection that reads its key from it.
    pub async fn create_with_secret(
        &self,
        name: &str,
        secret_name: &str,
        key: &str,
    ) -> (Uuid, Uuid) {
        self.fake.add_api_key(key);
        secret(&self.client, self.ns, secret_name, "apiKey", key).await;
        let (org, id) = self.seeded();
        let mut obj = connection(name, org, id);
        obj.spec.api_key_secret_ref =
            serde_json::from_value(serde_json::json!({ "name": secret_name })).ok();
        self.create(obj).await;
        (org, id)
    }

    /// Sets spec.deletionPolicy.
    pub async fn set_policy(&self, name: &str, policy: &str) {
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"deletionPolicy": policy}})),
            )
            .await
            .expect("spec patched");
    }
}

/// Every Event of namespace `ns` now, without waiting for any.
pub async fn all_events(client: &Client, ns: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
}

/// The Events with this reason in `ns`, waiting (bounded) for the first one: Events are
/// published in the background, after the writes a test usually waits on.
pub async fn events(client: &Client, ns: &str, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + WAIT;
    loop {
        let found: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Seeds `n` connections in the fake Leen and creates a LeenConnection for each
/// (`{prefix}{i}`), `parallelism` creates at a time. Returns (name, org, id).
pub async fn create_many(
    api: &Api<LeenConnection>,
    fake: &FakeLeen,
    prefix: &str,
    n: usize,
    parallelism: usize,
) -> Vec<(String, uuid::Uuid, uuid::Uuid)> {
    let items: Vec<(String, uuid::Uuid, uuid::Uuid)> = (0..n)
        .map(|i| {
            (
                format!("{prefix}{i}"),
                uuid::Uuid::new_v4(),
                uuid::Uuid::new_v4(),
            )
        })
        .collect();
    for (_, org, id) in &items {
        fake.add_connection(*org, *id, "CrowdStrike");
    }
    futures::stream::iter(items.clone())
        .map(|(name, org, id)| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &connection(&name, org, id))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(parallelism)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("created");
    items
}

/// Whether the API server enforces the CRD's CEL rules (x-kubernetes-validations: 1.25
/// and later). Tests state which path each server must take, rather than accepting both.
pub async fn cel_enforced(client: &Client) -> bool {
    let version = client.apiserver_version().await.expect("server version");
    let minor: u32 = version
        .minor
        .trim_end_matches('+')
        .parse()
        .expect("minor version");
    version.major == "1" && minor >= 25
}
