//! The organizations a cluster may act in, as resources: `LeenOrganization` (one
//! namespace's, with its key Secret beside it) and `ClusterLeenOrganization` (the
//! platform's, with its key Secret in the operator's namespace, usable by the namespaces
//! it selects). A LeenConnection names one with `spec.organizationRef` instead of
//! repeating `organizationId`, `region` and `apiKeySecretRef`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resource::{ApiKeySecretRef, Condition, READY_CONDITION, Region};

/// Finalizer the controller puts on an organization resource while LeenConnections use
/// it, so that deleting it waits for them (their deletions need its key).
pub const ORGANIZATION_FINALIZER: &str = "leen.dev/organization-in-use";

/// Annotation the controller sets on a LeenConnection that names an organization resource:
/// `LeenOrganization/<name>` or `ClusterLeenOrganization/<name>`. It tells an organization
/// which resources use it, from the controller's metadata cache.
pub const ORGANIZATION_REF_ANNOTATION: &str = "leen.dev/organization-ref";

/// Label by which a namespace owner marks a Secret for the operator: `api-key` (a Leen API
/// key) or `credentials` (a vendor's credentials). The operator reads no other Secret.
pub const SECRET_TYPE_LABEL: &str = "leen.dev/secret-type";
/// [`SECRET_TYPE_LABEL`] of a Secret holding a Leen API key.
pub const SECRET_TYPE_API_KEY: &str = "api-key";
/// [`SECRET_TYPE_LABEL`] of a Secret holding vendor credentials.
pub const SECRET_TYPE_CREDENTIALS: &str = "credentials";

const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// The two kinds of organization resource a LeenConnection may name.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum OrganizationKind {
    /// A `LeenOrganization` in the connection's own namespace.
    LeenOrganization,
    /// A `ClusterLeenOrganization` that selects the connection's namespace.
    ClusterLeenOrganization,
}

impl OrganizationKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrganizationKind::LeenOrganization => "LeenOrganization",
            OrganizationKind::ClusterLeenOrganization => "ClusterLeenOrganization",
        }
    }
}

/// `spec.organizationRef` of a LeenConnection: the organization resource whose
/// organization id, region and API key it uses.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationRef {
    /// LeenOrganization (in the connection's namespace) or ClusterLeenOrganization (one
    /// that selects the connection's namespace).
    pub kind: OrganizationKind,
    /// Name of the organization resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::resource::DNS1123_SUBDOMAIN))]
    pub name: String,
}

impl OrganizationRef {
    /// The value of [`ORGANIZATION_REF_ANNOTATION`] naming it: `<kind>/<name>`.
    pub fn annotation(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.name)
    }

    /// The reference an annotation value names, if it is one.
    pub fn parse_annotation(value: &str) -> Option<Self> {
        let (kind, name) = value.split_once('/')?;
        let kind = match kind {
            "LeenOrganization" => OrganizationKind::LeenOrganization,
            "ClusterLeenOrganization" => OrganizationKind::ClusterLeenOrganization,
            _ => return None,
        };
        Some(Self {
            kind,
            name: name.to_string(),
        })
    }
}

/// An organization one namespace may act in: its id, region and the Secret beside it that
/// holds the API key. LeenConnections of the namespace use it through
/// spec.organizationRef.
// One printcolumn(...) per column is kube's syntax, not a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "leen.dev",
    version = "v1alpha1",
    kind = "LeenOrganization",
    plural = "leenorganizations",
    singular = "leenorganization",
    namespaced,
    shortname = "leenorg",
    category = "leen",
    status = "OrganizationStatus",
    doc = "A Leen organization the LeenConnections of this namespace may act in, with the API key they use (a Secret in this namespace). Ready once the key has read the organization from Leen.",
    printcolumn(
        name = "Organization",
        type_ = "string",
        json_path = ".spec.organizationId",
        description = "UUID of the Leen organization"
    ),
    printcolumn(
        name = "Region",
        type_ = "string",
        json_path = ".spec.region",
        description = "Leen region that hosts the organization"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the key has read the organization from Leen"
    ),
    printcolumn(
        name = "Connections",
        type_ = "integer",
        json_path = ".status.connections",
        description = "How many LeenConnections use it"
    ),
    printcolumn(
        name = "Name",
        type_ = "string",
        json_path = ".status.organizationName",
        priority = 1,
        description = "The organization's name in Leen"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LeenOrganizationSpec {
    /// UUID of the Leen organization. Immutable: connections bound through it stay bound
    /// to this organization.
    #[schemars(extend("format" = "uuid", "pattern" = UUID_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("organizationId is immutable"))]
    pub organization_id: String,

    /// Leen region that hosts the organization: us, eu or apac (the operator's
    /// LEEN_ENDPOINT, when set, replaces every region's URL). Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("region is immutable"))]
    pub region: Region,

    /// Secret in this namespace that holds the organization's Leen API key. The Secret must
    /// carry the label leen.dev/secret-type=api-key: the namespace owner's consent that
    /// the operator reads it.
    pub api_key_secret_ref: ApiKeySecretRef,
}

/// An organization the platform offers to several namespaces: its id, region, the Secret
/// in the operator's namespace that holds the API key, and which namespaces may use it
/// (none unless listed in spec.namespaces or matched by spec.namespaceSelector).
// One printcolumn(...) per column is kube's syntax, not a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "leen.dev",
    version = "v1alpha1",
    kind = "ClusterLeenOrganization",
    plural = "clusterleenorganizations",
    singular = "clusterleenorganization",
    shortname = "clusterleenorg",
    category = "leen",
    status = "OrganizationStatus",
    doc = "A Leen organization that the LeenConnections of the namespaces it selects may act in, with the API key they use (a Secret in the operator's namespace). Ready once the key has read the organization from Leen.",
    printcolumn(
        name = "Organization",
        type_ = "string",
        json_path = ".spec.organizationId",
        description = "UUID of the Leen organization"
    ),
    printcolumn(
        name = "Region",
        type_ = "string",
        json_path = ".spec.region",
        description = "Leen region that hosts the organization"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the key has read the organization from Leen"
    ),
    printcolumn(
        name = "Connections",
        type_ = "integer",
        json_path = ".status.connections",
        description = "How many LeenConnections use it"
    ),
    printcolumn(
        name = "Namespaces",
        type_ = "string",
        json_path = ".status.namespaces",
        priority = 1,
        description = "The namespaces whose LeenConnections use it"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterLeenOrganizationSpec {
    /// UUID of the Leen organization. Immutable: connections bound through it stay bound
    /// to this organization.
    #[schemars(extend("format" = "uuid", "pattern" = UUID_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("organizationId is immutable"))]
    pub organization_id: String,

    /// Leen region that hosts the organization: us, eu or apac (the operator's
    /// LEEN_ENDPOINT, when set, replaces every region's URL). Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("region is immutable"))]
    pub region: Region,

    /// Secret in the operator's own namespace that holds the organization's Leen API key,
    /// labelled leen.dev/secret-type=api-key. Application teams need no access to it.
    pub api_key_secret_ref: ApiKeySecretRef,

    /// Namespaces whose LeenConnections may use this organization, by name. Together with
    /// namespaceSelector: a namespace either lists or matches may use it; neither set, none
    /// may.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub namespaces: Vec<String>,

    /// Namespaces whose LeenConnections may use this organization, by their labels (a
    /// standard label selector; an empty selector {} matches every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// Observed state of an organization resource.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The organization's name as Leen returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<String>,
    /// How many LeenConnections name this organization in spec.organizationRef.
    #[serde(default)]
    pub connections: u32,
    /// (ClusterLeenOrganization) the namespaces of the LeenConnections that use it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Ready: True once the API key has read the organization
    /// (GET /provisioning/organizations/{id}); False with the reason otherwise.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl OrganizationStatus {
    /// The Ready condition, if set.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == READY_CONDITION)
    }
}

/// What a connection takes from an organization resource, whichever its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrganizationTarget {
    /// The organization's UUID, as its spec says it.
    pub organization_id: String,
    /// Its region.
    pub region: Region,
    /// The namespace of its key Secret.
    pub key_namespace: String,
    /// Its key Secret.
    pub key_secret: ApiKeySecretRef,
}

impl LeenOrganization {
    /// What a connection of its namespace takes from it.
    pub fn target(&self) -> OrganizationTarget {
        OrganizationTarget {
            organization_id: self.spec.organization_id.clone(),
            region: self.spec.region,
            key_namespace: self.metadata.namespace.clone().unwrap_or_default(),
            key_secret: self.spec.api_key_secret_ref.clone(),
        }
    }
}

impl ClusterLeenOrganization {
    /// What a connection takes from it, with the key Secret in `operator_namespace`.
    pub fn target(&self, operator_namespace: &str) -> OrganizationTarget {
        OrganizationTarget {
            organization_id: self.spec.organization_id.clone(),
            region: self.spec.region,
            key_namespace: operator_namespace.to_string(),
            key_secret: self.spec.api_key_secret_ref.clone(),
        }
    }

    /// Whether the namespace `name`, with these labels, may use it: listed in
    /// spec.namespaces, or matched by spec.namespaceSelector. `Err`: the selector cannot
    /// be evaluated (an unknown operator), in words.
    pub fn selects(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<bool, String> {
        if self.spec.namespaces.iter().any(|n| n == name) {
            return Ok(true);
        }
        match &self.spec.namespace_selector {
            None => Ok(false),
            Some(selector) => selector_matches(selector, labels),
        }
    }
}

/// Whether a label selector matches these labels, as Kubernetes evaluates one: every
/// matchLabels pair and every matchExpressions requirement must hold; `{}` matches all.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let pairs = selector.match_labels.iter().flatten();
    for (key, value) in pairs {
        if labels.get(key) != Some(value) {
            return Ok(false);
        }
    }
    for requirement in selector.match_expressions.iter().flatten() {
        if !requirement_holds(requirement, labels)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn requirement_holds(
    r: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let values = r.values.as_deref().unwrap_or_default();
    let value = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => Ok(value.is_some_and(|v| values.contains(v))),
        "NotIn" => Ok(value.is_none_or(|v| !values.contains(v))),
        "Exists" => Ok(value.is_some()),
        "DoesNotExist" => Ok(value.is_none()),
        other => Err(format!(
            "spec.namespaceSelector has the operator {other:?} (key {:?}); Kubernetes knows In, NotIn, Exists and DoesNotExist",
            r.key
        )),
    }
}

/// Every CRD the operator serves, in the order `leen-operator crd` prints them:
/// LeenConnection, LeenOrganization, ClusterLeenOrganization; with the file in `crds/`
/// that holds each.
pub fn crds() -> Vec<(
    &'static str,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
)> {
    vec![
        (
            "leenconnection.yaml",
            crate::resource::LeenConnection::crd(),
        ),
        ("leenorganization.yaml", LeenOrganization::crd()),
        (
            "clusterleenorganization.yaml",
            ClusterLeenOrganization::crd(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn a_selector_matches_as_kubernetes_evaluates_it() {
        let team = labels(&[("leen.dev/tenant", "shared"), ("tier", "prod")]);
        let selector =
            |match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
                match_labels: Some(labels(match_labels)),
                match_expressions: Some(exprs),
            };
        let cases = [
            (selector(&[], vec![]), true),
            (selector(&[("leen.dev/tenant", "shared")], vec![]), true),
            (selector(&[("leen.dev/tenant", "other")], vec![]), false),
            (
                selector(&[], vec![requirement("tier", "In", &["prod", "dev"])]),
                true,
            ),
            (
                selector(&[], vec![requirement("tier", "In", &["dev"])]),
                false,
            ),
            (
                selector(&[], vec![requirement("tier", "NotIn", &["prod"])]),
                false,
            ),
            (
                selector(&[], vec![requirement("absent", "NotIn", &["x"])]),
                true,
            ),
            (
                selector(&[], vec![requirement("tier", "Exists", &[])]),
                true,
            ),
            (
                selector(&[], vec![requirement("tier", "DoesNotExist", &[])]),
                false,
            ),
            (
                selector(
                    &[("leen.dev/tenant", "shared")],
                    vec![requirement("tier", "In", &["dev"])],
                ),
                false,
            ),
        ];
        for (selector, want) in cases {
            assert_eq!(selector_matches(&selector, &team), Ok(want), "{selector:?}");
        }
        let odd = selector(&[], vec![requirement("tier", "Gt", &["1"])]);
        assert!(
            selector_matches(&odd, &team)
                .unwrap_err()
                .contains("\"Gt\"")
        );
    }

    #[test]
    fn a_cluster_organization_selects_no_namespace_by_default() {
        let mut org = ClusterLeenOrganization::new(
            "shared",
            serde_json::from_value(serde_json::json!({
                "organizationId": "6f1c2d4e-0000-4000-8000-000000000001",
                "apiKeySecretRef": {"name": "shared-key"},
            }))
            .expect("spec"),
        );
        let team = labels(&[("leen.dev/tenant", "shared")]);
        assert_eq!(org.selects("team-c", &team), Ok(false));
        org.spec.namespaces = vec!["team-c".into()];
        assert_eq!(org.selects("team-c", &BTreeMap::new()), Ok(true));
        assert_eq!(org.selects("team-d", &team), Ok(false));
        org.spec.namespace_selector = Some(LabelSelector {
            match_labels: Some(team.clone()),
            match_expressions: None,
        });
        assert_eq!(org.selects("team-d", &team), Ok(true));
        assert_eq!(org.selects("team-e", &BTreeMap::new()), Ok(false));
    }

    #[test]
    fn an_organization_ref_round_trips_through_its_annotation() {
        let r = OrganizationRef {
            kind: OrganizationKind::ClusterLeenOrganization,
            name: "shared".into(),
        };
        assert_eq!(r.annotation(), "ClusterLeenOrganization/shared");
        assert_eq!(OrganizationRef::parse_annotation(&r.annotation()), Some(r));
        assert_eq!(OrganizationRef::parse_annotation("Secret/x"), None);
        assert_eq!(OrganizationRef::parse_annotation("x"), None);
    }
}
