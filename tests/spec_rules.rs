//! What a spec may say and what it binds: region and ids, names, identifiers, reasons.

mod support;

use leen_operator::{
    decision::{Observation, Reason, RetryPolicy, decide_sync, validate_binding},
    resource::{BoundConnection, LeenConnection, LeenConnectionStatus, Region},
};
use support::{
    decisions::*,
    fixtures::{Fixture, ID, ORG},
};

#[test]
fn region_and_ids_are_validated_and_bound() {
    let mut obj = LeenConnection::test();
    assert!(validate_binding(&obj).is_ok());
    obj.spec.connection_id = Some("not-a-uuid".into());
    assert!(matches!(
        validate_binding(&obj),
        Err(Observation::InvalidSpec {
            reason: Reason::InvalidSpec,
            ..
        })
    ));
    let mut obj = LeenConnection::test();
    obj.status = Some(LeenConnectionStatus {
        bound_connection: Some(BoundConnection {
            region: Some(Region::Us),
            organization_id: ORG.into(),
            connection_id: "11111111-0000-4000-8000-000000000000".into(),
        }),
        ..Default::default()
    });
    assert!(matches!(
        validate_binding(&obj),
        Err(Observation::InvalidSpec {
            reason: Reason::ImmutableFieldChanged,
            ..
        })
    ));
}

#[test]
fn create_mode_binding_rows() {
    let create = LeenConnection::to_create("QUALYS");
    assert_eq!(validate_binding(&create), Ok(None), "nothing bound: create");
    let mut no_vendor = create.clone();
    no_vendor.spec.vendor = None;
    assert!(matches!(
        validate_binding(&no_vendor),
        Err(Observation::InvalidSpec { reason: Reason::InvalidSpec, ref message }) if message.contains("spec.vendor is required")
    ));
    let mut lower = create.clone();
    lower.spec.vendor = Some("qualys".into());
    assert!(validate_binding(&lower).is_err());
    // Created and bound: the binding comes from status.
    let mut created = create.clone();
    created.status = Some(LeenConnectionStatus {
        bound_connection: Some(BoundConnection {
            region: Some(Region::Us),
            organization_id: ORG.into(),
            connection_id: OTHER_ID.into(),
        }),
        ..Default::default()
    });
    let bound = validate_binding(&created).expect("valid").expect("bound");
    assert_eq!(bound.connection.to_string(), OTHER_ID);
    // Writing the bound id into the spec later is fine; another id is not.
    let mut same = created.clone();
    same.spec.connection_id = Some(OTHER_ID.into());
    assert!(validate_binding(&same).is_ok());
    let mut other = created;
    other.spec.connection_id = Some(ID.into());
    assert!(matches!(
        validate_binding(&other),
        Err(Observation::InvalidSpec {
            reason: Reason::ImmutableFieldChanged,
            ..
        })
    ));
}

#[test]
fn vendor_names_identifiers_and_connection_names() {
    use leen_operator::decision::{connection_name, create_identifier, is_vendor_name};
    for (name, ok) in [
        ("QUALYS", true),
        ("MS_DEFENDER_VMS", true),
        ("WIZ2", true),
        ("A", true),
        ("qualys", false),
        ("_QUALYS", false),
        ("2WIZ", false),
        ("WIZ-VMS", false),
        ("", false),
    ] {
        assert_eq!(is_vendor_name(name), ok, "{name:?}");
    }
    assert!(is_vendor_name(&"A".repeat(128)));
    assert!(!is_vendor_name(&"A".repeat(129)));

    // The identifier: recorded at the create's start, else the spec's, else derived.
    let mut obj = LeenConnection::to_create("QUALYS");
    assert_eq!(create_identifier(&obj), "security/crowdstrike-prod/u-1");
    obj.spec.identifier = Some("mine".into());
    assert_eq!(create_identifier(&obj), "mine");
    obj.status = Some(LeenConnectionStatus {
        creation: Some(leen_operator::resource::CreationRecord {
            identifier: "recorded".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(create_identifier(&obj), "recorded");

    // The connection a resource stands for: bound, else the spec's, else none yet.
    assert_eq!(
        connection_name(&LeenConnection::to_create("QUALYS")),
        "(not created)"
    );
    assert_eq!(connection_name(&LeenConnection::test()), ID);
    let mut bound = LeenConnection::test();
    bound.status = Some(LeenConnectionStatus {
        bound_connection: Some(BoundConnection {
            region: Some(Region::Us),
            organization_id: ORG.into(),
            connection_id: OTHER_ID.into(),
        }),
        ..Default::default()
    });
    assert_eq!(connection_name(&bound), OTHER_ID);
}

#[test]
fn secret_names_are_checked_in_both_references() {
    let with = |field: &str, name: &str| {
        let mut obj = LeenConnection::test();
        let r = serde_json::json!({ "name": name });
        match field {
            "apiKeySecretRef" => obj.spec.api_key_secret_ref = serde_json::from_value(r).ok(),
            _ => obj.spec.credentials_secret_ref = serde_json::from_value(r).ok(),
        }
        obj
    };
    for field in ["apiKeySecretRef", "credentialsSecretRef"] {
        assert!(
            validate_binding(&with(field, "leen-key.v2")).is_ok(),
            "{field}"
        );
        assert!(
            matches!(
                validate_binding(&with(field, "Not_A_Name")),
                Err(Observation::InvalidSpec { reason: Reason::InvalidSpec, ref message }) if message.contains(field)
            ),
            "{field}"
        );
    }
}

#[test]
fn a_binding_recorded_without_region_gets_the_spec_region() {
    let policy = RetryPolicy::default();
    let mut obj = LeenConnection::test();
    obj.spec.region = Some(Region::Eu);
    obj.status = Some(LeenConnectionStatus {
        bound_connection: Some(BoundConnection {
            region: None,
            organization_id: ORG.into(),
            connection_id: ID.into(),
        }),
        ..Default::default()
    });
    let d = decide_sync(&obj, &leen_says("ACTIVE", None), &inputs(&policy));
    let bound = d.status.bound_connection.expect("bound");
    assert_eq!(bound.region, Some(Region::Eu));
}

#[test]
fn every_reason_word_parses_back() {
    use strum::IntoEnumIterator;
    for r in Reason::iter() {
        assert_eq!(Reason::parse(r.as_str()), Some(r), "{r:?}");
    }
    assert_eq!(Reason::AlreadyDeleted.as_str(), "AlreadyDeleted");
    assert_eq!(Reason::parse("alreadydeleted"), None);
}
