//! What the controller keeps of a LeenConnection between reconciles: the labels and
//! annotations it decides on, typed, and nothing else of them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference,
};
use kube::{
    Resource,
    core::PartialObjectMeta,
    runtime::{reflector::ObjectRef, watcher::Event},
};
use leen_operator::{
    cache::{CachedConnection, cached_event},
    decision::Binding,
    resource::{LeenConnection, Region},
};
use uuid::Uuid;

const ORG: &str = "6f1c2d4e-0000-4000-8000-000000000001";
const CONN: &str = "0b9e7a52-0000-4000-8000-000000000002";

fn meta(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
    let map = |pairs: &[(&str, &str)]| {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    ObjectMeta {
        name: Some("crowdstrike".into()),
        namespace: Some("security".into()),
        uid: Some("uid-1".into()),
        resource_version: Some("42".into()),
        finalizers: Some(vec!["leen.dev/finalizer".into()]),
        labels: map(labels),
        annotations: map(annotations),
        managed_fields: Some(vec![ManagedFieldsEntry::default()]),
        owner_references: Some(vec![OwnerReference::default()]),
        ..Default::default()
    }
}

fn binding_labels(region: &str, org: &str, conn: &str) -> Vec<(&'static str, String)> {
    vec![
        ("leen.dev/region", region.to_string()),
        ("leen.dev/organization-id", org.to_string()),
        ("leen.dev/connection-id", conn.to_string()),
    ]
}

fn cached(labels: &[(&'static str, String)], annotations: &[(&str, &str)]) -> CachedConnection {
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    CachedConnection::from_metadata(meta(&labels, annotations))
}

#[test]
fn the_controllers_labels_become_the_binding() {
    let c = cached(&binding_labels("eu", ORG, CONN), &[]);
    assert_eq!(
        c.labelled,
        Some(Binding {
            region: Region::Eu,
            organization: Uuid::parse_str(ORG).unwrap(),
            connection: Uuid::parse_str(CONN).unwrap(),
        })
    );
    for region in ["us", "apac"] {
        assert!(
            cached(&binding_labels(region, ORG, CONN), &[])
                .labelled
                .is_some()
        );
    }
}

#[test]
fn a_missing_or_unparsable_label_means_not_labelled() {
    let cases: Vec<Vec<(&'static str, String)>> = vec![
        binding_labels("mars", ORG, CONN),
        binding_labels("EU", ORG, CONN),
        binding_labels("eu", "not-a-uuid", CONN),
        binding_labels("eu", ORG, "not-a-uuid"),
        binding_labels("eu", ORG, CONN)[1..].to_vec(),
        binding_labels("eu", ORG, CONN)[..2].to_vec(),
        vec![
            ("leen.dev/region", "eu".into()),
            ("leen.dev/organization-id", ORG.into()),
        ],
        vec![],
    ];
    for labels in cases {
        assert_eq!(cached(&labels, &[]).labelled, None, "{labels:?}");
    }
}

#[test]
fn the_key_secret_and_the_confirmation_are_kept_typed() {
    let c = cached(
        &[],
        &[
            ("leen.dev/api-key-secret", "leen-key"),
            ("leen.dev/confirm-deletion", " true "),
        ],
    );
    assert_eq!(c.key_secret.as_deref(), Some("leen-key"));
    assert!(c.confirm_deletion);
    for other in ["false", "yes", "True1", ""] {
        let c = cached(&[], &[("leen.dev/confirm-deletion", other)]);
        assert!(!c.confirm_deletion, "{other:?}");
        assert_eq!(c.key_secret, None);
    }
}

/// The pause annotation is kept as a flag, so that setting or removing it brings the
/// resource back at once (it is part of what triggers a reconcile).
#[test]
fn the_pause_is_kept_typed() {
    assert!(cached(&[], &[("leen.dev/paused", " true")]).paused);
    assert!(!cached(&[], &[]).paused);
    for other in ["false", "yes", "True1", ""] {
        assert!(
            !cached(&[], &[("leen.dev/paused", other)]).paused,
            "{other:?}"
        );
    }
    assert!(!cached(&[], &[("leen.dev/confirm-deletion", "true")]).paused);
}

#[test]
fn labels_annotations_managed_fields_and_owners_are_dropped() {
    let c = cached(
        &binding_labels("eu", ORG, CONN),
        &[
            ("leen.dev/api-key-secret", "leen-key"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        ],
    );
    let m = &c.metadata;
    assert_eq!(m.labels, None);
    assert_eq!(m.annotations, None);
    assert_eq!(m.managed_fields, None);
    assert_eq!(m.owner_references, None);
    // What the controller keys and triggers on stays.
    assert_eq!(m.name.as_deref(), Some("crowdstrike"));
    assert_eq!(m.namespace.as_deref(), Some("security"));
    assert_eq!(c.uid_str(), Some("uid-1"));
    assert_eq!(c.resource_version.as_deref(), Some("42"));
    // Only in its own field: kube copies the metadata's into every reference.
    assert_eq!(m.resource_version, None);
    assert_eq!(ObjectRef::from_obj(&c).extra.resource_version, None);
    assert!(c.holds("leen.dev/finalizer"));
    assert!(!c.holds("other"));
    assert!(!c.deleting());
}

#[test]
fn a_deletion_timestamp_means_deleting() {
    let mut m = meta(&[], &[]);
    m.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().expect("a timestamp"),
    ));
    assert!(CachedConnection::from_metadata(m).deleting());
}

#[test]
fn the_view_of_a_whole_object_is_the_view_of_its_metadata() {
    let mut obj: LeenConnection = serde_json::from_value(serde_json::json!({
        "apiVersion": "leen.dev/v1alpha1",
        "kind": "LeenConnection",
        "metadata": {"name": "crowdstrike"},
        "spec": {"organizationId": ORG, "connectionId": CONN}
    }))
    .expect("a LeenConnection");
    obj.metadata = meta(
        &[("leen.dev/connection-id", CONN)],
        &[("leen.dev/api-key-secret", "k")],
    );
    let c = CachedConnection::of(&obj);
    assert_eq!(c, CachedConnection::from_metadata(obj.metadata.clone()));
    assert_eq!(c.metadata.name.as_deref(), Some("crowdstrike"));
    assert_eq!(c.key_secret.as_deref(), Some("k"));
}

#[test]
fn it_names_the_leenconnection_itself() {
    let c = cached(&[], &[]);
    let key = ObjectRef::from_obj(&c);
    assert_eq!(
        key.to_string(),
        "LeenConnection.v1alpha1.leen.dev/crowdstrike.security"
    );
    assert_eq!(
        CachedConnection::url_path(&(), Some("security")),
        LeenConnection::url_path(&(), Some("security"))
    );
    let mut renamed = c.clone();
    renamed.meta_mut().name = Some("renamed".into());
    assert_eq!(renamed.metadata.name.as_deref(), Some("renamed"));
    let r = c.object_ref(&());
    assert_eq!(r.kind.as_deref(), Some("LeenConnection"));
    assert_eq!(
        r.api_version,
        Some(LeenConnection::api_version(&()).to_string())
    );
}

#[test]
fn watcher_events_keep_their_kind() {
    let partial = |labels: &[(&str, &str)]| PartialObjectMeta::<LeenConnection> {
        types: None,
        metadata: meta(labels, &[]),
        _phantom: Default::default(),
    };
    let conn = [("leen.dev/connection-id", CONN)];
    let want = CachedConnection::from_metadata(meta(&conn, &[]));
    assert!(matches!(cached_event(Event::Apply(partial(&conn))), Event::Apply(c) if c == want));
    assert!(matches!(cached_event(Event::Delete(partial(&conn))), Event::Delete(c) if c == want));
    assert!(
        matches!(cached_event(Event::InitApply(partial(&conn))), Event::InitApply(c) if c == want)
    );
    assert!(matches!(cached_event(Event::Init), Event::Init));
    assert!(matches!(cached_event(Event::InitDone), Event::InitDone));
}

#[test]
fn it_reads_from_the_metadata_api_shape() {
    let json = serde_json::json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": {
            "name": "crowdstrike",
            "namespace": "security",
            "labels": {"leen.dev/region": "us", "leen.dev/organization-id": ORG, "leen.dev/connection-id": CONN},
            "annotations": {"leen.dev/api-key-secret": "leen-key"}
        }
    });
    let c: CachedConnection = serde_json::from_value(json).expect("parses");
    assert_eq!(c.key_secret.as_deref(), Some("leen-key"));
    assert_eq!(c.labelled.map(|b| b.region), Some(Region::Us));
    assert_eq!(c.metadata.labels, None);
}

mod summaries {
    use leen_operator::telemetry::{MAX_INTERNED_VALUES, ResourceSummary, Summaries};

    fn summary<'a>(
        state: &'a str,
        health: &'a str,
        ready: bool,
        reason: &'a str,
    ) -> ResourceSummary<'a> {
        ResourceSummary {
            state,
            health,
            ready,
            reason,
        }
    }

    fn sorted(s: &Summaries) -> Vec<(String, String, bool, String)> {
        let mut v: Vec<_> = s
            .iter()
            .map(|r| {
                (
                    r.state.to_string(),
                    r.health.to_string(),
                    r.ready,
                    r.reason.to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn one_summary_per_uid_replaced_and_forgotten() {
        let mut s = Summaries::default();
        let a = "0b9e7a52-0000-4000-8000-00000000000a";
        let b = "0b9e7a52-0000-4000-8000-00000000000b";
        s.record(a, summary("PENDING", "unknown", false, "Creating"));
        s.record(b, summary("ACTIVE", "HEALTHY", true, "Synced"));
        s.record(a, summary("ACTIVE", "UNAUTHORIZED", false, "Unhealthy"));
        assert_eq!(s.len(), 2);
        assert_eq!(
            sorted(&s),
            vec![
                ("ACTIVE".into(), "HEALTHY".into(), true, "Synced".into()),
                (
                    "ACTIVE".into(),
                    "UNAUTHORIZED".into(),
                    false,
                    "Unhealthy".into()
                ),
            ]
        );
        s.forget(a);
        s.forget("never-seen");
        assert_eq!(
            sorted(&s),
            vec![("ACTIVE".into(), "HEALTHY".into(), true, "Synced".into())]
        );
        s.forget(b);
        assert!(s.is_empty());
    }

    #[test]
    fn uids_that_are_not_uuids_are_kept_apart() {
        let mut s = Summaries::default();
        s.record("uid-1", summary("ACTIVE", "HEALTHY", true, "Synced"));
        s.record("uid-2", summary("PAUSED", "HEALTHY", true, "Synced"));
        assert_eq!(s.len(), 2);
        s.forget("uid-1");
        assert_eq!(sorted(&s)[0].0, "PAUSED");
    }

    /// A uid that is not a UUID is keyed by its hash with a marker bit, so it never meets
    /// the UUID whose 128 bits equal that hash.
    #[test]
    fn a_hashed_uid_never_meets_a_uuid_of_the_same_bits() {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        "uid-x".hash(&mut h);
        let twin = uuid::Uuid::from_u128(u128::from(h.finish())).to_string();
        let mut s = Summaries::default();
        s.record("uid-x", summary("ACTIVE", "HEALTHY", true, "Synced"));
        s.record(&twin, summary("PAUSED", "HEALTHY", true, "Synced"));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn values_beyond_the_limit_are_kept_as_other() {
        let mut s = Summaries::default();
        let states: Vec<String> = (0..MAX_INTERNED_VALUES + 10)
            .map(|i| format!("S{i}"))
            .collect();
        for (i, state) in states.iter().enumerate() {
            s.record(
                &format!("uid-{i}"),
                summary(state, "HEALTHY", true, "Synced"),
            );
        }
        assert_eq!(s.len(), states.len());
        let kept: std::collections::BTreeSet<String> =
            s.iter().map(|r| r.state.to_string()).collect();
        // Two values are HEALTHY and Synced; "other" takes the last slot: exactly
        // MAX - 3 states keep their own names (S0 .. S{MAX-4}), the rest are "other".
        assert!(kept.contains("S0"));
        assert!(kept.contains("other"));
        assert!(kept.contains(&format!("S{}", MAX_INTERNED_VALUES - 4)));
        assert!(!kept.contains(&format!("S{}", MAX_INTERNED_VALUES - 3)));
        assert_eq!(kept.len(), MAX_INTERNED_VALUES - 2);
        // A value seen before the limit keeps its own name.
        s.record("uid-0", summary("S1", "HEALTHY", false, "Synced"));
        assert!(s.iter().any(|r| r.state == "S1" && !r.ready));
    }
}
