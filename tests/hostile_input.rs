//! Property tests over the Leen response parser and the deletion decision: no bytes Leen
//! can send make them panic, and nothing but the success rows of the deletion table
//! (2xx with a readable connection, 404, Orphan) ever removes the finalizer.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use leen_operator::{
    decision::{
        DecisionInputs, DeletionStep, FinalizerAction, Observation, RetryPolicy, decide_deletion,
        deletion_shortcut,
    },
    leen::{BodyError, LeenOutcome, classify, error_detail, parse_connection, parse_retry_after},
    resource::{LeenConnection, LeenConnectionSpec},
};
use proptest::prelude::*;

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
    prop_oneof![fields, proptest::collection::vec(any::<u8>(), 0..512)]
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
    fn retry_after_never_panics_and_is_capped(value in ".{0,40}") {
        if let Some(d) = parse_retry_after(&value) {
            prop_assert!(d <= leen_operator::leen::MAX_RETRY_AFTER);
        }
    }

    #[test]
    fn only_success_rows_remove_the_finalizer(
        status in 0u16..1000,
        retry_after in proptest::option::of(".{0,12}"),
        body in body(),
        cut in any::<bool>(),
        jitter in 0.0f64..=1.0,
        attempts in 0u32..100,
    ) {
        let outcome = if cut {
            classify(status, retry_after.as_deref(), Err(BodyError::TooLarge))
        } else {
            classify(status, retry_after.as_deref(), Ok(&body))
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
        let success_row = match &outcome {
            LeenOutcome::Success(_) => (200..300).contains(&status) && !cut,
            LeenOutcome::NotFound { .. } => status == 404,
            _ => false,
        };
        prop_assert_eq!(d.finalizer == FinalizerAction::Remove, success_row, "{:?} -> {:?}", outcome, d.finalizer);
        if d.finalizer == FinalizerAction::Keep {
            let after = d.requeue_after.expect("a kept finalizer is retried");
            prop_assert!(after >= Duration::from_millis(500) && after <= Duration::from_secs(3600), "{:?}", after);
        }
    }
}
