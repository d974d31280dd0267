//! How Leen's answers are read: shapes, limits, organization checks, redaction.

mod support;

use leen_operator::leen::{Expected, LeenOutcome, classify};
use support::fixtures::{ID, ORG};

#[test]
fn a_body_that_breaks_off_is_transient_on_success_and_ignored_on_an_error_status() {
    use leen_operator::leen::BodyError;
    let expected = Expected {
        organization: ORG.parse().expect("org"),
        connection: ID.parse().expect("id"),
    };
    let broken = || Err(BodyError::Read("connection reset".into()));
    // A 200 whose body broke off may have been a confirmation: retried, never a failure
    // of Leen's answer.
    match classify(expected, 200, None, broken()) {
        LeenOutcome::Unavailable { status, error } => {
            assert_eq!(status, Some(200));
            assert!(error.contains("connection reset"), "{error}");
        }
        other => panic!("200 with a broken body: {other:?}"),
    }
    // An error status says enough by its code.
    assert!(matches!(
        classify(expected, 401, None, broken()),
        LeenOutcome::Unauthorized { status: 401, .. }
    ));
    assert!(matches!(
        classify(expected, 422, None, broken()),
        LeenOutcome::Rejected { .. }
    ));
}

#[test]
fn a_list_page_is_read_in_every_documented_shape() {
    use leen_operator::leen::parse_list;
    let one = format!(r#"{{"id": "{ID}", "identifier": "a"}}"#);
    // (body, ids read, total)
    let rows = [
        (format!(r#"[{one}, 7, "x"]"#), 1, None),
        (format!(r#"{{"items": [{one}], "total": 31}}"#), 1, Some(31)),
        (format!(r#"{{"data": [{one}, {one}]}}"#), 2, None),
        (r#"{"connections": []}"#.to_string(), 0, None),
    ];
    for (body, ids, total) in rows {
        let (items, t) = parse_list(body.as_bytes()).expect(&body);
        assert_eq!((items.len(), t), (ids, total), "{body}");
        assert!(items.iter().all(|c| c.id.as_deref() == Some(ID)), "{body}");
    }
    for body in [r#"{"total": 3}"#, "42", r#""items""#, "not json"] {
        assert!(parse_list(body.as_bytes()).is_err(), "{body}");
    }
}

/// The cursor of a page: absent (Leen paged by offset), null or empty (the last page), a
/// string (the next page), at the top as documented or in a paging object; anything else
/// is an unreadable answer.
#[test]
fn a_list_page_says_where_its_cursor_goes() {
    use leen_operator::leen::parse_page;
    let rows: [(&str, Option<Option<&str>>); 7] = [
        (r#"{"items": [], "total": 0}"#, None),
        (r#"{"items": [], "next_cursor": null}"#, Some(None)),
        (r#"{"items": [], "next_cursor": ""}"#, Some(None)),
        (
            r#"{"items": [], "next_cursor": "c2", "previous_cursor": "c0"}"#,
            Some(Some("c2")),
        ),
        (
            r#"{"items": [], "pagination": {"next_cursor": "p2"}}"#,
            Some(Some("p2")),
        ),
        (r#"{"data": [], "meta": {"next_cursor": null}}"#, Some(None)),
        (r#"[]"#, None),
    ];
    for (body, cursor) in rows {
        let page = parse_page(body.as_bytes()).expect(body);
        assert_eq!(
            page.next_cursor,
            cursor.map(|c| c.map(str::to_string)),
            "{body}"
        );
    }
    for body in [
        r#"{"items": [], "next_cursor": 7}"#,
        r#"{"items": [], "next_cursor": {}}"#,
    ] {
        let error = parse_page(body.as_bytes()).expect_err(body);
        assert!(error.contains("next_cursor"), "{error}");
    }
}

#[test]
fn a_created_connection_must_belong_to_the_organization_asked_for() {
    use leen_operator::leen::parse_created;
    let org: uuid::Uuid = ORG.parse().expect("org");
    let other = uuid::Uuid::new_v4();
    let body = |o: &str| format!(r#"{{"id": "{ID}", "organization_id": "{o}"}}"#);
    assert!(parse_created(org, body(ORG).as_bytes()).is_ok());
    assert!(parse_created(org, format!(r#"{{"id": "{ID}"}}"#).as_bytes()).is_ok());
    let err = parse_created(org, body(&other.to_string()).as_bytes()).expect_err("other org");
    assert!(err.contains(&other.to_string()), "{err}");
    assert!(parse_created(org, body("not-a-uuid").as_bytes()).is_err());
}

#[test]
fn quoted_bodies_and_details_are_cut_at_their_limits_and_marked() {
    let expected = Expected {
        organization: ORG.parse().expect("org"),
        connection: ID.parse().expect("id"),
    };
    // A page that is not Leen's: quoted up to 120 characters, "..." when cut.
    let page = |len: usize| match classify(expected, 404, None, Ok("p".repeat(len).as_bytes())) {
        LeenOutcome::Unexpected { detail, .. } => detail,
        other => panic!("{other:?}"),
    };
    assert!(
        page(5).ends_with(&format!(": {}", "p".repeat(5))),
        "{}",
        page(5)
    );
    assert!(page(120).ends_with(&format!(": {}", "p".repeat(120))));
    assert!(page(121).ends_with(&format!(": {}...", "p".repeat(120))));
    // Leen's own detail: kept up to 512 characters, "..." when cut.
    let detail = |len: usize| {
        let body = serde_json::json!({"detail": "d".repeat(len)}).to_string();
        match classify(expected, 401, None, Ok(body.as_bytes())) {
            LeenOutcome::Unauthorized { detail, .. } => detail,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(detail(512), "d".repeat(512));
    assert_eq!(detail(513), format!("{}...", "d".repeat(512)));
}

#[test]
fn a_body_that_is_only_the_key_is_redacted_and_an_empty_key_redacts_nothing() {
    use leen_operator::leen::{REDACTED, redact};
    assert_eq!(redact(b"s3cr3t".to_vec(), b"s3cr3t"), REDACTED.as_bytes());
    assert_eq!(redact(b"s3cr".to_vec(), b"s3cr3t"), b"s3cr");
    assert_eq!(redact(b"any body".to_vec(), b""), b"any body");
    assert_eq!(redact(Vec::new(), b""), b"");
}
