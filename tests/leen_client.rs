//! The Leen client against the project's fake Leen over real HTTP: every outcome.

use std::{sync::Arc, time::Duration};

use fake_leen::{FakeLeen, Fault, FaultBody};
use leen_operator::{
    leen::{ApiKey, LeenClient, LeenClientConfig, LeenOutcome, MAX_BODY_BYTES},
    resource::Region,
    telemetry::Metrics,
};
use uuid::Uuid;

const KEY: &str = "client-test-key";

struct Setup {
    fake: FakeLeen,
    client: LeenClient,
    metrics: Arc<Metrics>,
    key: ApiKey,
    org: Uuid,
    id: Uuid,
}

async fn setup() -> Setup {
    leen_operator::install_crypto_provider();
    let fake = FakeLeen::start().await.expect("fake");
    fake.add_api_key(KEY);
    let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
    fake.add_connection(org, id, "Snyk");
    let metrics = Arc::new(Metrics::default());
    let client = LeenClient::new(
        LeenClientConfig {
            endpoint: Some(fake.base_url().parse().expect("url")),
            request_timeout: Duration::from_millis(500),
            max_in_flight: 4,
            ..Default::default()
        },
        metrics.clone(),
    )
    .expect("client");
    Setup {
        fake,
        client,
        metrics,
        key: ApiKey::new(KEY).expect("key"),
        org,
        id,
    }
}

impl Setup {
    async fn get(&self) -> LeenOutcome {
        self.client
            .get_connection(Region::Us, self.org, self.id, &self.key)
            .await
    }
    async fn delete(&self) -> LeenOutcome {
        self.client
            .delete_connection(Region::Us, self.org, self.id, &self.key)
            .await
    }
}

#[tokio::test]
async fn get_and_delete_success_then_not_found() {
    let s = setup().await;
    let LeenOutcome::Success(c) = s.get().await else {
        panic!("GET succeeds")
    };
    assert_eq!(c.state.as_deref(), Some("ACTIVE"));
    assert_eq!(c.vendor.as_deref(), Some("Snyk"));
    assert_eq!(c.id.as_deref(), Some(s.id.to_string().as_str()));
    let LeenOutcome::Success(c) = s.delete().await else {
        panic!("DELETE succeeds")
    };
    assert_eq!(c.state.as_deref(), Some("DELETED"));
    assert!(
        matches!(s.delete().await, LeenOutcome::NotFound { ref detail } if detail == "Connection Not Found")
    );
    let requests = s.fake.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests.iter().all(|r| r.api_key.as_deref() == Some(KEY)),
        "X-API-KEY sent"
    );
    let m = s.metrics.render();
    assert!(
        m.contains("leen_operator_leen_requests_total{operation=\"delete\",code=\"404\"} 1"),
        "{m}"
    );
    assert!(!m.contains(KEY));
}

#[tokio::test]
async fn wrong_key_is_unauthorized() {
    let s = setup().await;
    let wrong = ApiKey::new("nope").expect("key");
    let out = s
        .client
        .get_connection(Region::Us, s.org, s.id, &wrong)
        .await;
    assert_eq!(
        out,
        LeenOutcome::Unauthorized {
            status: 401,
            detail: "Invalid API Key".into()
        }
    );
    s.fake.push_fault(Fault::status(s.id, 403));
    assert!(matches!(
        s.get().await,
        LeenOutcome::Unauthorized { status: 403, .. }
    ));
}

#[tokio::test]
async fn validation_error_detail_is_kept() {
    let s = setup().await;
    s.fake.push_fault(Fault::status(s.id, 422).body(FaultBody::Json(serde_json::json!(
        {"detail": [{"loc": ["path", "connection_id"], "msg": "value is not a valid uuid", "type": "type_error.uuid"}]}
    ))));
    assert_eq!(
        s.delete().await,
        LeenOutcome::Rejected {
            detail: "path.connection_id: value is not a valid uuid".into()
        }
    );
}

#[tokio::test]
async fn rate_limit_reads_retry_after() {
    let s = setup().await;
    s.fake
        .push_fault(Fault::status(s.id, 429).retry_after("12"));
    assert_eq!(
        s.delete().await,
        LeenOutcome::RateLimited {
            retry_after: Some(Duration::from_secs(12))
        }
    );
}

#[tokio::test]
async fn server_errors_and_timeouts_are_unavailable() {
    let s = setup().await;
    s.fake.push_fault(Fault::status(s.id, 502));
    assert!(matches!(
        s.delete().await,
        LeenOutcome::Unavailable {
            status: Some(502),
            ..
        }
    ));
    s.fake.push_fault(
        Fault::status(s.id, 200)
            .body(FaultBody::Normal)
            .delay(Duration::from_secs(2)),
    );
    match s.delete().await {
        LeenOutcome::Unavailable {
            status: None,
            error,
        } => {
            assert!(error.contains("timed out"), "{error}")
        }
        other => panic!("timeout expected, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    leen_operator::install_crypto_provider();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let client = LeenClient::new(
        LeenClientConfig {
            endpoint: Some(format!("http://127.0.0.1:{port}/v1").parse().expect("url")),
            ..Default::default()
        },
        Arc::new(Metrics::default()),
    )
    .expect("client");
    let key = ApiKey::new("k").expect("key");
    let out = client
        .delete_connection(Region::Eu, Uuid::new_v4(), Uuid::new_v4(), &key)
        .await;
    assert!(
        matches!(out, LeenOutcome::Unavailable { status: None, .. }),
        "{out:?}"
    );
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_invalid() {
    let s = setup().await;
    s.fake
        .push_fault(Fault::status(s.id, 200).body(FaultBody::Raw("{\"state\": \"ACT".into())));
    assert!(matches!(
        s.get().await,
        LeenOutcome::InvalidResponse { status: 200, .. }
    ));
    s.fake
        .push_fault(Fault::status(s.id, 200).body(FaultBody::Oversized(MAX_BODY_BYTES + 1)));
    match s.get().await {
        LeenOutcome::InvalidResponse { error, .. } => assert!(error.contains("exceeds"), "{error}"),
        other => panic!("{other:?}"),
    }
    s.fake
        .push_fault(Fault::status(s.id, 200).body(FaultBody::Endless));
    match s.get().await {
        LeenOutcome::InvalidResponse { error, .. } => assert!(error.contains("exceeds"), "{error}"),
        // The timeout may fire before 1 MiB has arrived; either way, no hang, no panic.
        LeenOutcome::Unavailable { .. } => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unknown_enum_values_are_kept_as_data() {
    let s = setup().await;
    s.fake.push_fault(Fault::status(s.id, 200).body(FaultBody::Json(serde_json::json!({
        "id": s.id, "state": "QUARANTINED", "vendor": "Snyk", "new_field": [1, 2],
        "health": {"name": "NEW_HEALTH", "status": "DEGRADED", "description": null,
                   "resolution_owner": "PARTNER", "details": [{"data_export_type": "holograms", "endpoint": "/x"}]}
    }))));
    let LeenOutcome::Success(c) = s.get().await else {
        panic!("lenient parse")
    };
    assert_eq!(c.state.as_deref(), Some("QUARANTINED"));
    let h = c.health.expect("health");
    assert_eq!(h.status.as_deref(), Some("DEGRADED"));
    assert_eq!(h.description, None);
    assert_eq!(h.details[0].data_export_type.as_deref(), Some("holograms"));
}

#[tokio::test]
async fn a_key_echoed_by_leen_is_redacted() {
    let s = setup().await;
    s.fake
        .push_fault(Fault::status(s.id, 400).body(FaultBody::Json(
            serde_json::json!({"detail": format!("bad key {KEY}")}),
        )));
    match s.get().await {
        LeenOutcome::Unexpected {
            status: 400,
            detail,
        } => {
            assert!(!detail.contains(KEY), "{detail}");
            assert!(detail.contains("<redacted>"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn region_urls_are_the_documented_ones() {
    leen_operator::install_crypto_provider();
    let client =
        LeenClient::new(LeenClientConfig::default(), Arc::new(Metrics::default())).expect("client");
    let (org, id) = (Uuid::nil(), Uuid::max());
    let url = |r| client.connection_url(r, org, id);
    assert!(url(Region::Us).starts_with("https://api.leen.dev/v1/provisioning/organizations/"));
    assert!(url(Region::Eu).starts_with("https://api.eu-c1.leen.dev/v1/"));
    assert!(url(Region::Apac).starts_with("https://api.ap-se2.leen.dev/v1/"));
}

/// A call that waited for an in-flight slot while another call was answered 429 is not
/// sent when it gets the slot: the pause covers it too.
#[tokio::test]
async fn a_call_waiting_for_a_slot_respects_a_429_that_came_meanwhile() {
    let s = setup().await;
    let client = LeenClient::new(
        LeenClientConfig {
            endpoint: Some(s.fake.base_url().parse().expect("url")),
            request_timeout: Duration::from_secs(5),
            max_in_flight: 1,
            ..Default::default()
        },
        s.metrics.clone(),
    )
    .expect("client");
    let other = Uuid::new_v4();
    s.fake.add_connection(s.org, other, "Snyk");
    s.fake.push_fault(
        Fault::status(s.id, 429)
            .retry_after("30")
            .delay(Duration::from_millis(400)),
    );
    let first = client.get_connection(Region::Us, s.org, s.id, &s.key);
    let second = async {
        // Asks while the first holds the only slot.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client
            .get_connection(Region::Us, s.org, other, &s.key)
            .await
    };
    let (first, second) = tokio::join!(first, second);
    assert!(
        matches!(first, LeenOutcome::RateLimited { .. }),
        "{first:?}"
    );
    assert!(
        matches!(second, LeenOutcome::RateLimited { .. }),
        "{second:?}"
    );
    assert_eq!(
        s.fake.count("GET", other),
        0,
        "the waiting call was not sent"
    );
}

/// While Leen is down the client probes it; its first answer afterwards is announced to
/// whoever waits (the controller wakes every deletion that found it unavailable).
#[tokio::test]
async fn the_end_of_an_outage_is_announced() {
    let s = setup().await;
    let mut recoveries = s.client.recoveries();
    tokio::spawn(s.client.clone().probe_outages(Duration::from_millis(100)));
    s.fake.go_down().await;
    let down = s
        .client
        .delete_connection(Region::Us, s.org, s.id, &s.key)
        .await;
    assert!(matches!(down, LeenOutcome::Unavailable { .. }), "{down:?}");
    // A probe or two find it down too.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !recoveries.has_changed().expect("open"),
        "no recovery while down"
    );
    s.fake.come_back().await.expect("back");
    tokio::time::timeout(Duration::from_secs(5), recoveries.changed())
        .await
        .expect("announced within the probe period")
        .expect("open");
    assert!(
        s.fake.count_operation("organization") >= 1,
        "the probe asked the organization"
    );
}

/// A list endpoint answering each request by `answer(query)`: (status, JSON body); the
/// queries received are kept. For list behaviours the fake Leen does not have (pages
/// smaller than asked, an offset ignored).
async fn scripted_list(
    answer: impl Fn(&std::collections::HashMap<String, String>) -> (u16, String) + Send + Sync + 'static,
) -> (LeenClient, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    leen_operator::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (answer, log) = (Arc::new(answer), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (answer, log) = (answer.clone(), log.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let target = text.split_whitespace().nth(1).unwrap_or_default();
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
                log.lock().expect("log").push(query.to_string());
                let params = url::form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect();
                let (status, body) = answer(&params);
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    let client = LeenClient::new(
        LeenClientConfig {
            endpoint: Some(format!("http://{addr}/v1").parse().expect("url")),
            ..Default::default()
        },
        Arc::new(Metrics::default()),
    )
    .expect("client");
    (client, seen)
}

/// Offset pages of `page` connections (whatever limit is asked) out of `total`, with ids
/// and identifiers `item-<n>`; cursors refused with a 422.
fn offset_pages(
    total: usize,
    page: usize,
    honour_offset: bool,
) -> impl Fn(&std::collections::HashMap<String, String>) -> (u16, String) {
    move |q| {
        if q.contains_key("enableCursor") {
            return (
                422,
                r#"{"detail":[{"loc":["query","enableCursor"],"msg":"extra fields not permitted","type":"value_error"}]}"#.into(),
            );
        }
        let offset: usize = if honour_offset {
            q.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0)
        } else {
            0
        };
        let items: Vec<serde_json::Value> = (offset..total.min(offset + page))
            .map(|n| {
                serde_json::json!({"id": Uuid::from_u128(n as u128 + 1).to_string(), "identifier": format!("item-{n}"), "state": "ACTIVE"})
            })
            .collect();
        (
            200,
            serde_json::json!({"items": items, "total": total}).to_string(),
        )
    }
}

/// Leen may answer fewer connections per page than asked: with `total` saying more are
/// left, the walk goes on. (A short page once counted as the end: the look-up of a lost
/// create missed connection 110 of 120 and would have let a second create go out.)
#[tokio::test]
async fn short_offset_pages_are_walked_to_the_total() {
    let (client, seen) = scripted_list(offset_pages(120, 50, true)).await;
    let key = ApiKey::new(KEY).expect("key");
    let org = Uuid::new_v4();
    let all = client
        .list_connections(Region::Us, org, &key, 10)
        .await
        .expect("listed");
    assert_eq!(all.len(), 120);
    let found = client
        .find_connection(Region::Us, org, "item-110", &key)
        .await
        .expect("looked up");
    assert_eq!(
        found.and_then(|c| c.identifier).as_deref(),
        Some("item-110")
    );
    // The refused cursor was asked for once: this client remembers it.
    let queries = seen.lock().expect("log").clone();
    assert_eq!(
        queries
            .iter()
            .filter(|q| q.contains("enableCursor"))
            .count(),
        1,
        "{queries:?}"
    );
}

/// Without a total, fewer connections than asked is no end either: only an empty page is.
#[tokio::test]
async fn without_a_total_only_an_empty_page_ends_the_list() {
    let pages = offset_pages(120, 50, true);
    let (client, seen) = scripted_list(move |q| {
        let (status, body) = pages(q);
        let mut value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("total");
        }
        (status, value.to_string())
    })
    .await;
    let key = ApiKey::new(KEY).expect("key");
    let all = client
        .list_connections(Region::Us, Uuid::new_v4(), &key, 10)
        .await
        .expect("listed");
    assert_eq!(all.len(), 120);
    // The refused cursor, pages of 50, 50, 20, and the empty one.
    assert_eq!(seen.lock().expect("log").len(), 5);
}

/// A list that ignores the offset answers its first page for ever: an error, not 1 000
/// requests and not "absent".
#[tokio::test]
async fn a_list_that_repeats_its_page_is_an_error() {
    let (client, seen) = scripted_list(offset_pages(500, 100, false)).await;
    let key = ApiKey::new(KEY).expect("key");
    let outcome = client
        .find_connection(Region::Us, Uuid::new_v4(), "item-300", &key)
        .await
        .expect_err("not absent");
    assert!(
        matches!(&outcome, LeenOutcome::Unexpected { detail, .. } if detail.contains("same page twice")),
        "{outcome:?}"
    );
    assert_eq!(
        seen.lock().expect("log").len(),
        3,
        "refused cursor, two pages"
    );
}

/// A total that the pages never reach (an empty page early) is an error too.
#[tokio::test]
async fn a_list_that_stops_short_of_its_total_is_an_error() {
    let (client, _) = scripted_list(offset_pages(100, 100, true).pipe_total(250)).await;
    let key = ApiKey::new(KEY).expect("key");
    let outcome = client
        .list_connections(Region::Us, Uuid::new_v4(), &key, 10)
        .await
        .expect_err("incomplete");
    assert!(
        matches!(&outcome, LeenOutcome::Unexpected { detail, .. } if detail.contains("stopped at 100 of the 250")),
        "{outcome:?}"
    );
}

/// Rewrites the `total` of a list answer.
trait PipeTotal {
    fn pipe_total(
        self,
        total: u64,
    ) -> impl Fn(&std::collections::HashMap<String, String>) -> (u16, String) + Send + Sync + 'static;
}

impl<F> PipeTotal for F
where
    F: Fn(&std::collections::HashMap<String, String>) -> (u16, String) + Send + Sync + 'static,
{
    fn pipe_total(
        self,
        total: u64,
    ) -> impl Fn(&std::collections::HashMap<String, String>) -> (u16, String) + Send + Sync + 'static
    {
        move |q| {
            let (status, body) = self(q);
            let mut value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if status == 200 {
                value["total"] = serde_json::json!(total);
            }
            (status, value.to_string())
        }
    }
}
