//! Property tests over the Leen response parser and the deletion decision: no bytes Leen
//! can send make them panic, and nothing but Leen's confirmation (200 with the connection
//! deleted, 404 with Leen's JSON error) ever removes the finalizer.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use leen_operator::{
    decision::{
        DecisionInputs, DeletionStep, FinalizerAction, Observation, RetryPolicy, decide_deletion,
        deletion_shortcut,
    },
    leen::{BodyError, Expected, classify, error_detail, parse_connection, parse_retry_after},
    resource::{LeenConnection, LeenConnectionSpec},
};
use proptest::prelude::*;

fn expected() -> Expected {
    Expected {
        organization: ORG.parse().expect("uuid"),
        connection: ID.parse().expect("uuid"),
    }
}

fn resource() -> LeenConnection {
    let spec: LeenConnectionSpec = serde_json::from_value(serde_json::json!({
        "organizationId": "6f1c2d4e-0000-4000-8000-000000000001",
        "connectionId": "0b9e7a52-0000-4000-8000-000000000002",
    }))
    .expect("spec");
    let mut obj = LeenConnection::new("c", spec);
    obj.metadata.generation = Some(1);
    obj
}

/// Bodies that look like Leen's: JSON objects with the real field names and values of
/// every type, plus raw bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let json_value = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
        Just(serde_json::json!({"name": "HEALTHY", "status": "UNHEALTHY", "details": null})),
        Just(serde_json::json!([{"data_export_type": 1, "endpoint": null}])),
    ];
    let fields = proptest::collection::btree_map(
        prop_oneof![
            Just("id".to_string()),
            Just("state".to_string()),
            Just("health".to_string()),
            Just("vendor".to_string()),
            Just("is_active".to_string()),
            Just("detail".to_string()),
            Just("created_at".to_string()),
            "[a-z_]{1,12}",
        ],
        json_value,
        0..8,
    )
    .prop_map(|m| serde_json::to_vec(&m).unwrap_or_default());
    // Near-valid connections: the right or a wrong id and organization, with or without
    // the other fields, so that the confirmation rule's branches are all reached.
    let connection = (
        prop_oneof![Just(Some(ID)), Just(Some(OTHER)), Just(None)],
        prop_oneof![Just(Some(ORG)), Just(Some(OTHER)), Just(None)],
        prop_oneof![Just("DELETED"), Just("ACTIVE"), Just("ARCHIVED")],
        any::<bool>(),
    )
        .prop_map(|(id, org, state, upper)| {
            let mut m = serde_json::Map::new();
            if let Some(id) = id {
                let id = if upper {
                    id.to_uppercase()
                } else {
                    id.to_string()
                };
                m.insert("id".into(), id.into());
            }
            if let Some(org) = org {
                m.insert("organization_id".into(), org.into());
            }
            m.insert("state".into(), state.into());
            serde_json::to_vec(&m).unwrap_or_default()
        });
    let error_bodies = prop_oneof![
        Just(br#"{"detail":"Connection Not Found"}"#.to_vec()),
        Just(br#"{"detail":[{"loc":["path"],"msg":"x"}]}"#.to_vec()),
        Just(br#"{"detail":null}"#.to_vec()),
        Just(b"<html>404 Not Found</html>".to_vec()),
        Just(b"[]".to_vec()),
        Just(b"\"text\"".to_vec()),
        Just(b"7".to_vec()),
    ];
    prop_oneof![
        3 => connection,
        2 => error_bodies,
        2 => fields,
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ]
}

const ID: &str = "0b9e7a52-0000-4000-8000-000000000002";
const ORG: &str = "6f1c2d4e-0000-4000-8000-000000000001";
const OTHER: &str = "11111111-0000-4000-8000-000000000000";

/// Whether a JSON value has the type the API documents for a field (or is null): stated
/// here from the OpenAPI fragment, not taken from the client's own types.
fn typed(field: &str, v: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    let string_or_null = |v: &V| v.is_null() || v.is_string();
    match field {
        "is_active" => v.is_null() || v.is_boolean(),
        "refresh_interval_secs" | "timeout_secs" => v.is_null() || v.is_i64(),
        "health" => match v {
            V::Null => true,
            V::Object(h) => {
                ["name", "status", "description", "resolution_owner"]
                    .iter()
                    .all(|k| h.get(*k).is_none_or(string_or_null))
                    && h.get("details").is_none_or(|d| match d {
                        V::Null => true,
                        V::Array(items) => items.iter().all(|i| {
                            i.as_object().is_some_and(|o| {
                                ["data_export_type", "endpoint"]
                                    .iter()
                                    .all(|k| o.get(*k).is_none_or(string_or_null))
                            })
                        }),
                        _ => false,
                    })
            }
            _ => false,
        },
        "id"
        | "vendor"
        | "organization_id"
        | "organization_name"
        | "identifier"
        | "state"
        | "created_at"
        | "updated_at"
        | "oauth2_authorize_url" => string_or_null(v),
        _ => true,
    }
}

/// DESIGN.md's confirmation rule, stated on its own: 200 with a JSON object that is a
/// connection (every documented field of its type) whose id is the connection (and
/// organization_id, when present, the organization), or 404 with a JSON object holding a
/// non-null detail.
fn confirms(status: u16, body: &[u8]) -> bool {
    let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let is = |v: Option<&serde_json::Value>, want: &str| {
        v.and_then(|v| v.as_str())
            .is_some_and(|s| s.eq_ignore_ascii_case(want))
    };
    match status {
        200 => {
            m.iter().all(|(k, v)| typed(k, v))
                && is(m.get("id"), ID)
                && (m.get("organization_id").is_none_or(|v| v.is_null())
                    || is(m.get("organization_id"), ORG))
        }
        404 => m.get("detail").is_some_and(|d| !d.is_null()),
        _ => false,
    }
}

/// Retry-After values as servers send them: whole seconds (small, large, huge), HTTP dates
/// in the past and the future (IMF-fixdate and RFC 2822 forms), and garbage.
fn retry_after() -> impl Strategy<Value = (String, Option<(u64, u64)>)> {
    let seconds = prop_oneof![0u64..120, 3000u64..5000, 1_000_000u64..u64::MAX]
        .prop_map(|n| (n.to_string(), Some((n.min(3600), n.min(3600)))));
    let date = (-7200i64..7200, any::<bool>()).prop_map(|(offset, imf)| {
        let at = Utc::now() + chrono::Duration::seconds(offset);
        let text = if imf {
            at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
        } else {
            at.to_rfc2822()
        };
        // Whole seconds in the text, and a little time passes before the parse.
        let secs = offset.clamp(0, 3600) as u64;
        (text, Some((secs.saturating_sub(2), secs.min(3600))))
    });
    let garbage = prop_oneof![
        Just(String::new()),
        Just("-5".to_string()),
        Just("1.5".to_string()),
        Just("soon".to_string()),
        "[a-z ]{1,12}",
    ]
    .prop_map(|s| (s, None));
    prop_oneof![2 => seconds, 2 => date, 1 => garbage]
}

fn inputs(policy: &RetryPolicy, jitter: f64) -> DecisionInputs<'_> {
    DecisionInputs {
        now: Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("time"),
        jitter,
        sync_interval: Duration::from_secs(300),
        sync_failures: 0,
        policy,
        also_bound_by: Vec::new(),
        credentials_test_error: None,
        delete_sent: false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_connection(&bytes);
        let _ = error_detail(&bytes);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_capped_at_an_hour((value, want) in retry_after()) {
        let got = parse_retry_after(&value);
        match want {
            None => prop_assert_eq!(got, None, "{:?}", value),
            Some((low, high)) => {
                let got = got.map(|d| d.as_secs());
                prop_assert!(got.is_some_and(|s| s >= low && s <= high), "{:?} -> {:?}, want {}..={}", value, got, low, high);
            }
        }
    }

    #[test]
    fn parse_retry_after_never_panics(value in ".{0,40}") {
        if let Some(d) = parse_retry_after(&value) {
            prop_assert!(d <= leen_operator::leen::MAX_RETRY_AFTER);
        }
    }

    #[test]
    fn only_success_rows_remove_the_finalizer(
        status in prop_oneof![3 => Just(200u16), 2 => Just(404u16), 1 => 0u16..1000],
        retry_after in proptest::option::of(retry_after().prop_map(|(v, _)| v)),
        body in body(),
        cut in any::<bool>(),
        jitter in 0.0f64..=1.0,
        attempts in 0u32..100,
    ) {
        let outcome = if cut {
            classify(expected(), status, retry_after.as_deref(), Err(BodyError::TooLarge))
        } else {
            classify(expected(), status, retry_after.as_deref(), Ok(&body))
        };
        let mut obj = resource();
        if attempts > 0 {
            obj.status = Some(leen_operator::resource::LeenConnectionStatus {
                deletion: Some(leen_operator::resource::DeletionRecord {
                    attempts,
                    outcome: Some("LeenUnavailable".into()),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        prop_assert!(deletion_shortcut(&obj).is_none());
        let policy = RetryPolicy::default();
        let d = decide_deletion(&obj, &DeletionStep::Observed(Observation::Leen(outcome.clone())), &inputs(&policy, jitter));
        let success_row = !cut && confirms(status, &body);
        prop_assert_eq!(d.finalizer == FinalizerAction::Remove, success_row, "{} {:?}: {:?} -> {:?}", status, String::from_utf8_lossy(&body), outcome, d.finalizer);
        if d.finalizer == FinalizerAction::Keep {
            let after = d.requeue_after.expect("a kept finalizer is retried");
            prop_assert!(after >= Duration::from_millis(500) && after <= Duration::from_secs(3600), "{:?}", after);
        }
    }
}
