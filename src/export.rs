//! `leen-operator export`: an organization's connections as LeenConnection manifests,
//! ready to commit to Git. Observe-only unless asked otherwise, so that applying them
//! changes nothing in Leen; one stable, valid, unique name per connection, so that a
//! second export of the same organization gives the same files.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::ObjectMeta;
use uuid::Uuid;

use crate::{
    config::{ExportKey, ExportSettings},
    decision::is_vendor_name,
    leen::{ApiKey, Connection, LeenClient},
    resource::{
        ApiKeySecretRef, DeletionPolicy, LeenConnection, LeenConnectionSpec, ManagementPolicy,
        Region,
    },
    telemetry::Metrics,
};

/// Most pages of the organization's list walked (of 100 connections each).
pub const MAX_EXPORT_PAGES: u64 = 1_000;

/// Longest name given: a DNS-1123 label, so that it also fits where labels must.
const MAX_NAME: usize = 63;

/// What the manifests say besides each connection.
#[derive(Clone, Debug)]
pub struct ManifestOptions {
    /// The organization.
    pub organization: Uuid,
    /// Its region.
    pub region: Region,
    /// The manifests' namespace.
    pub namespace: String,
    /// Full management instead of observe-only.
    pub manage: bool,
    /// The key Secret each manifest names, if any (else the operator's default key).
    pub api_key_secret: Option<ApiKeySecretRef>,
}

/// A connection that could not be exported, and why (told on standard error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The connection's id, as Leen listed it.
    pub id: String,
    /// Why it was left out.
    pub why: String,
}

/// The manifests for these connections, sorted by name, and the connections left out
/// (DELETED ones, and entries without a UUID id).
pub fn manifests(
    connections: &[Connection],
    options: &ManifestOptions,
) -> (Vec<LeenConnection>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let mut kept: Vec<(Uuid, &Connection)> = Vec::new();
    let mut ids = HashSet::new();
    for conn in connections {
        let raw = conn.id.clone().unwrap_or_default();
        let Ok(id) = Uuid::parse_str(&raw) else {
            skipped.push(Skipped {
                id: raw,
                why: "its id is not a UUID".into(),
            });
            continue;
        };
        if conn.state.as_deref() == Some("DELETED") {
            skipped.push(Skipped {
                id: raw,
                why: "Leen reports it DELETED".into(),
            });
            continue;
        }
        if ids.insert(id) {
            kept.push((id, conn));
        }
    }
    // Names depend on the set, not on the order Leen listed it in: oldest first, so that
    // a connection made later never renames one exported before.
    kept.sort_by_key(|(id, c)| {
        let created = c
            .created_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        (created.is_none(), created, *id)
    });
    let names = resource_names(
        &kept
            .iter()
            .map(|(id, c)| (*id, c.vendor.as_deref(), c.identifier.as_deref()))
            .collect::<Vec<_>>(),
    );
    let mut out: Vec<LeenConnection> = kept
        .iter()
        .zip(names)
        .map(|((id, conn), name)| manifest(*id, conn, name, options))
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    (out, skipped)
}

fn manifest(
    id: Uuid,
    conn: &Connection,
    name: String,
    options: &ManifestOptions,
) -> LeenConnection {
    let spec = LeenConnectionSpec {
        organization_id: options.organization.to_string(),
        connection_id: Some(id.to_string()),
        // The schema takes Leen's vendor names only (CROWDSTRIKE); another spelling stays
        // out rather than make the manifest invalid (status shows Leen's vendor).
        vendor: conn.vendor.clone().filter(|v| is_vendor_name(v)),
        credentials_secret_ref: None,
        identifier: conn
            .identifier
            .clone()
            .filter(|i| !i.is_empty() && i.chars().count() <= 255),
        options: None,
        state: None,
        region: Some(options.region),
        organization_ref: None,
        api_key_secret_ref: options.api_key_secret.clone(),
        deletion_policy: DeletionPolicy::Delete,
        management_policy: if options.manage {
            ManagementPolicy::Full
        } else {
            ManagementPolicy::Observe
        },
        sync_interval: None,
    };
    LeenConnection {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(options.namespace.clone()),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

/// One name per connection (in the order given, oldest first): `<vendor>-<identifier>`
/// made a DNS-1123 label (`<vendor>-<first 8 hex of the id>` without an identifier). A
/// name already given goes to the first connection that has it; each later one gets the
/// start of its own id appended. So a name stays the same across exports: a connection
/// made later, whose name would collide, is the one that gets the suffix.
pub fn resource_names(connections: &[(Uuid, Option<&str>, Option<&str>)]) -> Vec<String> {
    let mut taken: HashSet<String> = HashSet::new();
    connections
        .iter()
        .map(|(id, vendor, identifier)| {
            let hex = hex(id);
            let vendor = vendor.unwrap_or("connection");
            let tail = identifier
                .filter(|i| !slug(i).is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| hex[..8].to_string());
            let base = match slug(&format!("{vendor}-{tail}")) {
                name if name.is_empty() => format!("connection-{}", &hex[..8]),
                name => truncate(&name, MAX_NAME),
            };
            let name = std::iter::once(base.clone())
                .chain([8, 12, 32].into_iter().map(|n| {
                    format!(
                        "{}-{}",
                        truncate(&base, MAX_NAME.saturating_sub(n + 1)),
                        &hex[..n]
                    )
                }))
                .find(|candidate| !taken.contains(candidate))
                .unwrap_or_else(|| format!("connection-{hex}"));
            taken.insert(name.clone());
            name
        })
        .collect()
}

fn hex(id: &Uuid) -> String {
    id.simple().to_string()
}

/// Lower case letters and digits, every other run of characters one `-`, none at the ends.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

fn truncate(name: &str, max: usize) -> String {
    name.chars()
        .take(max)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// One manifest as YAML, under a comment that says what it is.
pub fn to_yaml(obj: &LeenConnection, options: &ManifestOptions) -> Result<String, String> {
    let body = serde_yaml::to_string(obj).map_err(|e| format!("rendering YAML: {e}"))?;
    let what = if options.manage {
        "managed (managementPolicy: Full): deleting this resource deletes the connection in Leen"
    } else {
        "observe-only (managementPolicy: Observe): the operator reads it and never changes or deletes it; set Full to manage it"
    };
    Ok(format!(
        "# Leen connection {} of organization {} ({}), exported by leen-operator export.\n# {what}.\n{body}",
        obj.spec.connection_id.as_deref().unwrap_or_default(),
        options.organization,
        options.region.as_str(),
    ))
}

/// Runs the export: reads the key, lists the organization, writes the manifests (to
/// standard output, or one file each into the output directory). Returns the summary
/// line for standard error.
pub async fn run(settings: ExportSettings) -> Result<String, String> {
    crate::install_crypto_provider();
    let (key, api_key_secret) = match &settings.key {
        ExportKey::Given(key) => (key.clone(), None),
        ExportKey::Secret { name, key } => (
            key_from_secret(&settings.namespace, name, key).await?,
            Some(ApiKeySecretRef {
                name: name.clone(),
                key: key.clone(),
            }),
        ),
    };
    let client = LeenClient::new(settings.leen.clone(), Arc::new(Metrics::default()))
        .map_err(|e| format!("building the Leen client: {e}"))?;
    let connections = client
        .list_connections(
            settings.region,
            settings.organization,
            &key,
            MAX_EXPORT_PAGES,
        )
        .await
        .map_err(|outcome| {
            format!(
                "listing the connections of organization {} failed: {}",
                settings.organization,
                crate::decision::describe_failure(&outcome)
            )
        })?;
    let options = ManifestOptions {
        organization: settings.organization,
        region: settings.region,
        namespace: settings.namespace.clone(),
        manage: settings.manage,
        api_key_secret,
    };
    let (objects, skipped) = manifests(&connections, &options);
    for s in &skipped {
        eprintln!(
            "leen-operator export: left out connection {:?}: {}",
            s.id, s.why
        );
    }
    let mut rendered = Vec::with_capacity(objects.len());
    for obj in &objects {
        rendered.push((
            obj.metadata.name.clone().unwrap_or_default(),
            to_yaml(obj, &options)?,
        ));
    }
    match &settings.output {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            for (name, yaml) in &rendered {
                let path = dir.join(format!("{name}.yaml"));
                std::fs::write(&path, yaml)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
        }
        None => {
            use std::io::Write;
            let stream: Vec<&str> = rendered.iter().map(|(_, y)| y.as_str()).collect();
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(stream.join("---\n").as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| format!("writing the manifests to standard output: {e}"))?;
        }
    }
    Ok(format!(
        "exported {} connection(s) of organization {} as {} LeenConnection(s) in namespace {}{}",
        objects.len(),
        settings.organization,
        if settings.manage {
            "managed"
        } else {
            "observe-only"
        },
        settings.namespace,
        settings
            .output
            .as_ref()
            .map(|d| format!(", one file each in {}", d.display()))
            .unwrap_or_default()
    ))
}

/// The API key in a Secret of the namespace, read with the usual kube config.
async fn key_from_secret(namespace: &str, name: &str, key: &str) -> Result<ApiKey, String> {
    let (config, _) = crate::proxy::kube_config().await.map_err(|e| {
        format!("--api-key-secret needs a Kubernetes API (KUBECONFIG or in-cluster config): {e}")
    })?;
    let client = kube::Client::try_from(config)
        .map_err(|e| format!("building the Kubernetes client failed: {e}"))?;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client, namespace);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| format!("reading Secret {namespace}/{name} failed: {e}"))?
        .ok_or_else(|| format!("Secret {namespace}/{name} not found"))?;
    let data: BTreeMap<String, ByteString> = secret.data.unwrap_or_default();
    let value = data
        .get(key)
        .ok_or_else(|| format!("Secret {namespace}/{name} has no key {key:?}"))?;
    let text = std::str::from_utf8(&value.0)
        .map_err(|_| format!("key {key:?} of Secret {namespace}/{name} is not UTF-8"))?;
    ApiKey::new(text.trim()).map_err(|e| format!("key {key:?} of Secret {namespace}/{name}: {e}"))
}
