//! Leen, as the controller sees it: [`LeenApi`], the calls of Crossplane's
//! `ExternalClient` (observe, create, update, delete, test, find), and [`LeenClient`], its
//! HTTP implementation. Every answer is classified: success into the call's own type,
//! everything else into the [`LeenOutcome`] that the decisions know.
//!
//! Submodules: [`wire`] (key, requests, connection), [`classify`] (answers to outcomes,
//! pure), [`client`] (HTTP).

pub mod classify;
pub mod client;
pub mod wire;

use futures::future::BoxFuture;
use uuid::Uuid;

pub use classify::*;
pub use client::*;
pub use wire::*;

use crate::resource::Region;

/// The calls the controller makes to Leen, one per step of a plan. The reconciler alone
/// picks which one (`decision::plan`); an implementation only carries it out and
/// classifies the answer. [`LeenClient`] is the HTTP one; tests may bring their own.
pub trait LeenApi: Send + Sync {
    /// `GET` the bound connection.
    fn observe<'a>(&'a self, at: Binding, key: &'a ApiKey) -> BoxFuture<'a, LeenOutcome>;
    /// `POST` a new connection; `Ok` only with a connection that has a UUID id of the
    /// organization asked for.
    fn create<'a>(
        &'a self,
        region: Region,
        organization: Uuid,
        request: &'a CreateRequest,
        key: &'a ApiKey,
    ) -> BoxFuture<'a, Result<Connection, LeenOutcome>>;
    /// `PATCH` the bound connection with these fields.
    fn update<'a>(
        &'a self,
        at: Binding,
        request: &'a UpdateRequest,
        key: &'a ApiKey,
    ) -> BoxFuture<'a, LeenOutcome>;
    /// `DELETE` the bound connection.
    fn delete<'a>(&'a self, at: Binding, key: &'a ApiKey) -> BoxFuture<'a, LeenOutcome>;
    /// `GET .../test`: Leen's check of the connection's credentials.
    fn test<'a>(
        &'a self,
        at: Binding,
        key: &'a ApiKey,
    ) -> BoxFuture<'a, Result<CredentialCheck, LeenOutcome>>;
    /// Shows that the organization answers with this key where the connection calls go
    /// (a 404 means something only then). `Err`: what Leen answered instead.
    fn prove_organization<'a>(
        &'a self,
        region: Region,
        organization: Uuid,
        key: &'a ApiKey,
    ) -> BoxFuture<'a, Result<(), LeenOutcome>>;
    /// `GET /provisioning/organizations/{organization}`: the organization as Leen returns
    /// it with this key (what makes an organization resource Ready).
    fn organization<'a>(
        &'a self,
        region: Region,
        organization: Uuid,
        key: &'a ApiKey,
    ) -> BoxFuture<'a, Result<Organization, LeenOutcome>>;
    /// The organization's live connection that carries `identifier`, if any.
    fn find<'a>(
        &'a self,
        region: Region,
        organization: Uuid,
        identifier: &'a str,
        key: &'a ApiKey,
    ) -> BoxFuture<'a, Result<Option<Connection>, LeenOutcome>>;
    /// A count that moves each time Leen answers again after an outage, when the
    /// implementation tracks outages.
    fn recoveries(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

impl LeenApi for LeenClient {
    fn observe<'a>(&'a self, at: Binding, key: &'a ApiKey) -> BoxFuture<'a, LeenOutcome> {
        Box::pin(self.get_connection(at.region, at.organization, at.connection, key))
    }

    fn create<'a>(
        &'a self,
        region: Region,
        organization: Uuid,
        request: &'a CreateRequest,
        key: &'a ApiKey,
    ) -> BoxFuture<'a, Result<Connection, LeenOutcome>> {
        Box::pin(self.create_connection(region, organization, request, key))
    }

    fn update<'a>(
        &'a self,
        at: Binding,
        request: &'a UpdateRequest,
        key: &'a ApiKey,
    ) -> BoxFuture<'a, LeenOutcome> {
        Box::pin(self.update_connection(at.region, at.organization, at.connection, request, key))
    }

    fn delete<'a>(&'a self, at: Binding, key: &'a ApiKey) -> BoxFuture<'a, LeenOutcome> {
        Box::pin(self.delete_connection(at.region, at.organization, at.connection, key))
    }

    fn test<'a>(
        &'a self,
        at: Binding,
        key: &'a ApiKey,
    ) -> BoxFuture<'a, Result<CredentialCheck, LeenOutcome>> {
        Box::pin(self.test_connection(at.region, at.organization, at.connection, key))
    }

    fn find<'a>(
        &'a self,
        region: Region,
        organization: Uuid,
        identifier: &'a str,
        key: &'a ApiKey,
    ) -> BoxFuture<'a, Result<Option<Connection>, LeenOutcome>> {
        Box::pin(self.find_connection(region, organization, identifier, key))
    }

    fn organization<'a>(
        &'a self,
        region: Region,
        organization: Uuid,
        key: &'a ApiKey,
    ) -> BoxFuture<'a, Result<Organization, LeenOutcome>> {
        Box::pin(self.get_organization(region, organization, key))
    }

    fn prove_organization<'a>(
        &'a self,
        region: Region,
        organization: Uuid,
        key: &'a ApiKey,
    ) -> BoxFuture<'a, Result<(), LeenOutcome>> {
        Box::pin(LeenClient::prove_organization(
            self,
            region,
            organization,
            key,
        ))
    }

    fn recoveries(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(LeenClient::recoveries(self))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const EXPECTED: Expected = Expected {
        organization: Uuid::from_u128(0x6f1c2d4e_0000_4000_8000_000000000001),
        connection: Uuid::from_u128(0x0b9e7a52_0000_4000_8000_000000000002),
    };

    #[test]
    fn api_key_never_prints() {
        let key = ApiKey::new("s3cr3t-key\n").expect("non-empty");
        assert_eq!(key.expose(), "s3cr3t-key");
        assert!(!format!("{key:?} {key} {key:#?}").contains("s3cr3t"));
        assert_eq!(ApiKey::new("  \n"), Err(KeyError::Empty));
        assert_eq!(ApiKey::new("a\u{7}b"), Err(KeyError::NotAHeaderValue));
    }

    #[test]
    fn classifies_every_status_class() {
        let conn = br#"{"id":"0b9e7a52-0000-4000-8000-000000000002","state":"DELETED","health":{"name":"HEALTHY","status":"HEALTHY","description":"ok","resolution_owner":"LEEN","details":null}}"#;
        match classify(EXPECTED, 200, None, Ok(conn)) {
            LeenOutcome::Success(c) => {
                assert_eq!(c.state.as_deref(), Some("DELETED"));
                assert!(c.health.expect("health").details.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            classify(
                EXPECTED,
                404,
                None,
                Ok(br#"{"detail":"Connection Not Found"}"#)
            ),
            LeenOutcome::NotFound {
                detail: "Connection Not Found".into()
            }
        );
        assert!(matches!(
            classify(EXPECTED, 403, None, Ok(b"")),
            LeenOutcome::Unauthorized { status: 403, .. }
        ));
        assert_eq!(
            classify(EXPECTED,
                422,
                None,
                Ok(br#"{"detail":[{"loc":["path","connection_id"],"msg":"value is not a valid uuid","type":"type_error.uuid"}]}"#)
            ),
            LeenOutcome::Rejected {
                detail: "path.connection_id: value is not a valid uuid".into()
            }
        );
        assert_eq!(
            classify(EXPECTED, 429, Some("7"), Ok(b"")),
            LeenOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify(EXPECTED, 429, Some("soon"), Ok(b"")),
            LeenOutcome::RateLimited { retry_after: None }
        );
        assert!(matches!(
            classify(EXPECTED, 503, None, Ok(b"<html>down</html>")),
            LeenOutcome::Unavailable {
                status: Some(503),
                ..
            }
        ));
        assert!(matches!(
            classify(EXPECTED, 200, None, Ok(b"{not json")),
            LeenOutcome::InvalidResponse { status: 200, .. }
        ));
        assert!(matches!(
            classify(EXPECTED, 200, None, Ok(b"[1,2]")),
            LeenOutcome::InvalidResponse { status: 200, .. }
        ));
        assert!(matches!(
            classify(EXPECTED, 200, None, Err(BodyError::TooLarge)),
            LeenOutcome::InvalidResponse { status: 200, .. }
        ));
        assert!(matches!(
            classify(EXPECTED, 409, None, Ok(b"conflict")),
            LeenOutcome::Unexpected { status: 409, .. }
        ));
    }

    #[test]
    fn only_the_expected_connection_confirms() {
        let ok = br#"{"id":"0B9E7A52-0000-4000-8000-000000000002","organization_id":"6f1c2d4e-0000-4000-8000-000000000001"}"#;
        assert!(matches!(
            classify(EXPECTED, 200, None, Ok(ok)),
            LeenOutcome::Success(_)
        ));
        for (status, body, says) in [
            (200, &b"{}"[..], "without a connection id"),
            (200, br#"{"id":"0b9e7a52-0000-4000-8000-000000000003"}"#, "about connection 0b9e7a52-0000-4000-8000-000000000003, not 0b9e7a52-0000-4000-8000-000000000002"),
            (200, br#"{"id":"0b9e7a52-0000-4000-8000-000000000002","organization_id":"6f1c2d4e-0000-4000-8000-000000000009"}"#, "of organization 6f1c2d4e-0000-4000-8000-000000000009"),
            (200, b"[]", "not a JSON object"),
            (202, br#"{"detail":"scheduled"}"#, "Leen answered 202, not 200"),
            (204, b"", "Leen answered 204, not 200"),
        ] {
            match classify(EXPECTED, status, None, Ok(body)) {
                LeenOutcome::InvalidResponse { error, .. } => assert!(error.contains(says), "{error}"),
                other => panic!("{status} {body:?}: {other:?}"),
            }
        }
        assert!(matches!(
            classify(EXPECTED, 404, None, Ok(b"<html>404 Not Found</html>")),
            LeenOutcome::Unexpected { status: 404, .. }
        ));
        assert!(matches!(
            classify(EXPECTED, 404, None, Ok(br#"{"detail":null}"#)),
            LeenOutcome::Unexpected { status: 404, .. }
        ));
    }

    #[test]
    fn redaction_happens_on_the_raw_body() {
        let body = b"{\"detail\": \"bad key s3cr3t   k3y\"}".to_vec();
        let out = redact(body, b"s3cr3t   k3y");
        assert_eq!(out, b"{\"detail\": \"bad key <redacted>\"}".to_vec());
    }

    #[test]
    fn unknown_enum_values_and_extra_fields_are_data() {
        let body = br#"{"state":"ARCHIVED","future_field":{"x":1},"vendor":null,
            "health":{"name":"SOMETHING_NEW","status":"DEGRADED","resolution_owner":"PARTNER",
            "details":[{"data_export_type":"quantum_findings","endpoint":"/v2/x"}]}}"#;
        let c = parse_connection(body).expect("lenient parse");
        assert_eq!(c.state.as_deref(), Some("ARCHIVED"));
        let h = c.health.expect("health");
        assert_eq!(h.name.as_deref(), Some("SOMETHING_NEW"));
        assert_eq!(
            h.details[0].data_export_type.as_deref(),
            Some("quantum_findings")
        );
    }

    #[test]
    fn wrong_types_are_invalid_not_panics() {
        assert!(parse_connection(br#"{"state": 7}"#).is_err());
        assert!(parse_connection(br#"{"health": "ok"}"#).is_err());
    }

    #[test]
    fn retry_after_is_capped_and_reads_dates() {
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
    }
}
