//! Shared pieces of the decision tables: a deleted connection as Leen returns it, and the
//! decision inputs of a fixed moment.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use leen_operator::{
    decision::{DecisionInputs, Observation, RetryPolicy},
    leen::{Connection, Health, LeenOutcome},
    resource::{LeenConnection, LeenConnectionStatus},
};

use super::fixtures::{Fixture, ID};

/// A connection Leen reports DELETED, healthy.
pub fn deleted_connection() -> Connection {
    Connection {
        state: Some("DELETED".into()),
        vendor: Some("CrowdStrike".into()),
        health: Some(Health {
            name: Some("HEALTHY".into()),
            status: Some("HEALTHY".into()),
            description: Some("Connection deleted".into()),
            resolution_owner: Some("LEEN".into()),
            details: vec![],
        }),
        ..Default::default()
    }
}

/// The inputs of a decision at 2026-01-01T00:00:00Z, jitter 1, a 5 min sync interval.
pub fn inputs(policy: &RetryPolicy) -> DecisionInputs<'_> {
    DecisionInputs {
        now: Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("time"),
        jitter: 1.0,
        sync_interval: Duration::from_secs(300),
        sync_failures: 0,
        policy,
        also_bound_by: Vec::new(),
        credentials_test_error: None,
        delete_sent: false,
    }
}

/// A connection other than [`super::fixtures::ID`].
pub const OTHER_ID: &str = "0b9e7a52-0000-4000-8000-000000000003";

/// An organization other than [`super::fixtures::ORG`].
pub const OTHER_ORG: &str = "6f1c2d4e-0000-4000-8000-000000000009";

/// The status and reason of a condition.
pub fn condition<'a>(status: &'a LeenConnectionStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status
        .condition(type_)
        .unwrap_or_else(|| panic!("{type_} condition in {status:?}"));
    (c.status.as_str(), c.reason.as_str())
}

/// Leen returned a connection in `state`, with an OAuth URL when given.
pub fn leen_says(state: &str, oauth: Option<&str>) -> Observation {
    Observation::Leen(LeenOutcome::Success(Box::new(Connection {
        id: Some(ID.into()),
        state: Some(state.into()),
        oauth2_authorize_url: oauth.map(str::to_string),
        ..deleted_connection()
    })))
}

/// A resource whose spec.state asks for `state`.
pub fn with_state(state: &str) -> LeenConnection {
    let mut obj = LeenConnection::test();
    obj.spec.state = serde_json::from_value(serde_json::json!(state)).expect("state");
    obj
}
