//! The HTTP implementation of [`super::LeenApi`]: one place every request goes through
//! (the 429 gate, the in-flight limit, the key header, redaction, metrics).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::header::HeaderValue;
use serde_json::Value;
use tokio::sync::Semaphore;
use url::Url;
use uuid::Uuid;

use super::{classify::*, wire::*};
use crate::{
    rate_gate::{Admission, LimitKey, RateGate},
    resource::Region,
    telemetry::Metrics,
};

/// Settings of a [`LeenClient`].
#[derive(Clone, Debug)]
pub struct LeenClientConfig {
    /// Replaces every region's base URL (LEEN_ENDPOINT), including `/v1`.
    pub endpoint: Option<Url>,
    /// Timeout of one request, connect to last byte.
    pub request_timeout: Duration,
    /// Most requests to Leen in flight at once.
    pub max_in_flight: usize,
    /// A PEM bundle of extra CAs to trust besides the system roots (`LEEN_CA_FILE`).
    pub extra_roots: Option<Vec<u8>>,
}

impl Default for LeenClientConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 16,
            extra_roots: None,
        }
    }
}

/// Calls Leen's connection endpoints. Cheap to clone.
#[derive(Clone)]
pub struct LeenClient {
    /// Limits (endpoint and key) whose last call got no answer from Leen, with a call to
    /// probe them by; and the count of recoveries, which callers watch.
    outages: Arc<Mutex<HashMap<LimitKey, Outage>>>,
    recoveries: Arc<tokio::sync::watch::Sender<u64>>,
    /// Organizations shown reachable, by endpoint and key (hashed) and id, with when, and
    /// one lock per such key so that concurrent deletions ask once.
    proofs: Arc<Mutex<HashMap<(LimitKey, Uuid), Proof>>>,
    /// Base URLs whose list refused cursor pagination: asked by offset from then on.
    no_cursors: Arc<Mutex<std::collections::HashSet<String>>>,
    http: reqwest::Client,
    endpoint: Option<Url>,
    in_flight: Arc<Semaphore>,
    gate: RateGate,
    metrics: Arc<Metrics>,
}

/// Failure to build a [`LeenClient`].
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client for Leen failed: {0}")]
pub struct ClientBuildError(#[from] reqwest::Error);

impl LeenClient {
    /// Builds a client. Redirects are not followed, so the key is never sent elsewhere.
    pub fn new(config: LeenClientConfig, metrics: Arc<Metrics>) -> Result<Self, ClientBuildError> {
        let mut builder = reqwest::Client::builder();
        // A loopback endpoint (a local proxy, tests) is never reached through a proxy
        // from HTTP_PROXY/HTTPS_PROXY: that would send the key off the machine.
        if config.endpoint.as_ref().is_some_and(is_loopback) {
            builder = builder.no_proxy();
        }
        if let Some(pem) = &config.extra_roots {
            // Added to the system roots (a TLS-inspecting proxy's CA), not instead of them.
            builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem)?);
        }
        let http = builder
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("leen-operator/", env!("CARGO_PKG_VERSION")))
            .build()?;
        metrics.declare_operations(
            <super::wire::Operation as strum::IntoEnumIterator>::iter().map(|op| op.as_str()),
        );
        Ok(Self {
            outages: Arc::default(),
            recoveries: Arc::new(tokio::sync::watch::channel(0).0),
            proofs: Arc::default(),
            no_cursors: Arc::default(),
            http,
            endpoint: config.endpoint,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            gate: RateGate::default(),
            metrics,
        })
    }

    /// The base URL of the given region (or the configured endpoint), including `/v1`.
    pub fn base_url(&self, region: Region) -> &str {
        self.endpoint
            .as_ref()
            .map(|u| u.as_str())
            .unwrap_or(region.base_url())
            .trim_end_matches('/')
    }

    /// The URL of the organization's connections in the given region (or at the
    /// configured endpoint).
    pub fn connections_url(&self, region: Region, organization: Uuid) -> String {
        format!(
            "{}/provisioning/organizations/{organization}/connections",
            self.base_url(region)
        )
    }

    /// The URL of one connection in the given region (or at the configured endpoint).
    pub fn connection_url(&self, region: Region, organization: Uuid, connection: Uuid) -> String {
        format!(
            "{}/{connection}",
            self.connections_url(region, organization)
        )
    }

    /// `GET` one connection (observe).
    pub async fn get_connection(
        &self,
        region: Region,
        organization: Uuid,
        connection: Uuid,
        key: &ApiKey,
    ) -> LeenOutcome {
        self.one(Operation::Get, region, organization, connection, key)
            .await
    }

    /// `DELETE` one connection.
    pub async fn delete_connection(
        &self,
        region: Region,
        organization: Uuid,
        connection: Uuid,
        key: &ApiKey,
    ) -> LeenOutcome {
        self.one(Operation::Delete, region, organization, connection, key)
            .await
    }

    /// A call without a body on one connection's URL.
    async fn one(
        &self,
        op: Operation,
        region: Region,
        organization: Uuid,
        connection: Uuid,
        key: &ApiKey,
    ) -> LeenOutcome {
        let url = self.connection_url(region, organization, connection);
        self.about(op, region, url, None, key, (organization, connection), &[])
            .await
    }

    /// `PATCH` one connection with the given fields (update).
    pub async fn update_connection(
        &self,
        region: Region,
        organization: Uuid,
        connection: Uuid,
        update: &UpdateRequest,
        key: &ApiKey,
    ) -> LeenOutcome {
        let url = self.connection_url(region, organization, connection);
        let secrets = update
            .credentials
            .as_ref()
            .map(|c| c.secrets())
            .unwrap_or_default();
        self.about(
            Operation::Update,
            region,
            url,
            Some(update.body()),
            key,
            (organization, connection),
            &secrets,
        )
        .await
    }

    /// `POST` a new connection (create). `Ok` only with a connection that has a UUID id.
    pub async fn create_connection(
        &self,
        region: Region,
        organization: Uuid,
        create: &CreateRequest,
        key: &ApiKey,
    ) -> Result<Connection, LeenOutcome> {
        let url = self.connections_url(region, organization);
        let secrets = create
            .credentials
            .as_ref()
            .map(|c| c.secrets())
            .unwrap_or_default();
        self.call_redacting(
            Operation::Create,
            region,
            url,
            Some(create.body()),
            key,
            &secrets,
            move |status, retry_after, body| {
                // 201 is what a REST API usually answers to a create; accept it as well.
                classify_answer(
                    status,
                    retry_after,
                    body,
                    &[200, 201],
                    "a connection",
                    |b| parse_created(organization, b),
                )
            },
        )
        .await
    }

    /// `GET /provisioning/organizations/{organization}`: the organization, when Leen
    /// answers 200 with that id.
    pub async fn get_organization(
        &self,
        region: Region,
        organization: Uuid,
        key: &ApiKey,
    ) -> Result<Organization, LeenOutcome> {
        let url = format!(
            "{}/provisioning/organizations/{organization}",
            self.base_url(region)
        );
        self.call(
            Operation::Organization,
            region,
            url,
            None,
            key,
            move |status, retry_after, body| {
                classify_answer(status, retry_after, body, &[200], "the organization", |b| {
                    parse_organization(organization, b)
                })
            },
        )
        .await
    }

    /// Shows that `organization` answers on this region's base URL with this key, which
    /// is what makes a 404 there mean "no such connection". A proof is kept for
    /// [`ORGANIZATION_PROOF_TTL`] per endpoint, key and organization, so that a mass
    /// deletion answered with 404s costs one extra call, not one each.
    pub async fn prove_organization(
        &self,
        region: Region,
        organization: Uuid,
        key: &ApiKey,
    ) -> Result<(), LeenOutcome> {
        let id = (
            LimitKey::new(self.base_url(region), key.expose()),
            organization,
        );
        let asking = {
            let Ok(mut proofs) = self.proofs.lock() else {
                return self
                    .get_organization(region, organization, key)
                    .await
                    .map(drop);
            };
            // Stale proofs go, unless someone is asking about them right now.
            proofs.retain(|k, p| *k == id || p.is_fresh() || Arc::strong_count(&p.asking) > 1);
            let proof = proofs.entry(id).or_default();
            if proof.is_fresh() {
                return Ok(());
            }
            proof.asking.clone()
        };
        // One asks; the others wait for its answer and use the proof it leaves.
        let _turn = asking.lock().await;
        if self
            .proofs
            .lock()
            .is_ok_and(|p| p.get(&id).is_some_and(Proof::is_fresh))
        {
            return Ok(());
        }
        self.get_organization(region, organization, key).await?;
        if let Ok(mut proofs) = self.proofs.lock() {
            proofs.entry(id).or_default().at = Some(Instant::now());
        }
        Ok(())
    }

    /// `GET .../test`: Leen's check of the connection's credentials.
    pub async fn test_connection(
        &self,
        region: Region,
        organization: Uuid,
        connection: Uuid,
        key: &ApiKey,
    ) -> Result<CredentialCheck, LeenOutcome> {
        let url = format!(
            "{}/test",
            self.connection_url(region, organization, connection)
        );
        self.call(
            Operation::Test,
            region,
            url,
            None,
            key,
            |status, retry_after, body| {
                classify_answer(
                    status,
                    retry_after,
                    body,
                    &[200],
                    "a test result",
                    parse_check,
                )
            },
        )
        .await
    }

    /// The organization's connection whose `identifier` is this one, looked up page by page
    /// in the list (at most [`MAX_LIST_PAGES`] pages of [`LIST_PAGE`]). A connection Leen
    /// reports DELETED does not count.
    pub async fn find_connection(
        &self,
        region: Region,
        organization: Uuid,
        identifier: &str,
        key: &ApiKey,
    ) -> Result<Option<Connection>, LeenOutcome> {
        let mut found = None;
        let complete = self
            .each_page(region, organization, key, MAX_LIST_PAGES, |items| {
                found = items.into_iter().find(|c| {
                    c.identifier.as_deref() == Some(identifier)
                        && c.state.as_deref() != Some("DELETED")
                        && c.id
                            .as_deref()
                            .is_some_and(|id| Uuid::parse_str(id).is_ok())
                        && c.organization_id
                            .as_deref()
                            .is_none_or(|o| Uuid::parse_str(o).ok() == Some(organization))
                });
                found.is_none()
            })
            .await?;
        match (found, complete) {
            (Some(found), _) => Ok(Some(found)),
            (None, true) => Ok(None),
            (None, false) => Err(LeenOutcome::Unexpected {
                status: 200,
                detail: format!(
                    "the organization lists more than {} connections; identifier {identifier:?} was not among them",
                    MAX_LIST_PAGES * LIST_PAGE
                ),
            }),
        }
    }

    /// Every connection the organization lists (DELETED ones included, as Leen lists
    /// them), page by page: at most `max_pages` pages of [`LIST_PAGE`].
    pub async fn list_connections(
        &self,
        region: Region,
        organization: Uuid,
        key: &ApiKey,
        max_pages: u64,
    ) -> Result<Vec<Connection>, LeenOutcome> {
        let mut all = Vec::new();
        let complete = self
            .each_page(region, organization, key, max_pages, |items| {
                // An entry of another organization is not this one's.
                all.extend(items.into_iter().filter(|c| {
                    c.organization_id
                        .as_deref()
                        .is_none_or(|o| Uuid::parse_str(o).ok() == Some(organization))
                }));
                true
            })
            .await?;
        if !complete {
            return Err(LeenOutcome::Unexpected {
                status: 200,
                detail: format!(
                    "the organization lists more than {} connections",
                    max_pages * LIST_PAGE
                ),
            });
        }
        Ok(all)
    }

    /// Walks the organization's list of connections, handing each page to `visit` until
    /// it returns `false`. Cursor pagination first (`enableCursor=true`, then `cursor` =
    /// the answer's `next_cursor`, until it is null), as Leen documents; where Leen
    /// refuses the cursor (422 or 400 on the first page, remembered for the base URL) or
    /// answers without `next_cursor`, by `offset`, until `total` is reached (or, without
    /// `total`, an empty page). `Ok(true)`: the list was walked to its end, or `visit`
    /// stopped it; `Ok(false)`: `max_pages` pages were not enough. A list that stops
    /// short of its `total`, repeats a page or a cursor is an error, never "the end": a
    /// look-up that missed a connection would let a second create go out.
    async fn each_page(
        &self,
        region: Region,
        organization: Uuid,
        key: &ApiKey,
        max_pages: u64,
        mut visit: impl FnMut(Vec<Connection>) -> bool,
    ) -> Result<bool, LeenOutcome> {
        let base = self.connections_url(region, organization);
        let refused = self
            .no_cursors
            .lock()
            .is_ok_and(|set| set.contains(self.base_url(region)));
        let mut query = if refused {
            PageQuery::Offset(0)
        } else {
            PageQuery::Cursor(None)
        };
        let mut seen = 0u64;
        let mut cursors = std::collections::HashSet::new();
        let mut previous_first: Option<String> = None;
        let odd = |detail: String| LeenOutcome::Unexpected {
            status: 200,
            detail,
        };
        for _ in 0..max_pages {
            let page = match self.list_page(region, &base, &query, key).await {
                Ok(page) => page,
                Err(LeenOutcome::Rejected { .. } | LeenOutcome::Unexpected { status: 400, .. })
                    if query == PageQuery::Cursor(None) =>
                {
                    // No cursors here: offsets, from the start, from now on.
                    if let Ok(mut set) = self.no_cursors.lock() {
                        set.insert(self.base_url(region).to_string());
                    }
                    query = PageQuery::Offset(0);
                    self.list_page(region, &base, &query, key).await?
                }
                Err(outcome) => return Err(outcome),
            };
            let count = page.items.len() as u64;
            let first = page.items.first().and_then(|c| c.id.clone());
            if first.is_some() && first == previous_first {
                return Err(odd(
                    "the list of connections answered the same page twice; stopped rather than loop".into(),
                ));
            }
            previous_first = first;
            seen += count;
            if !visit(page.items) {
                return Ok(true);
            }
            query = match (&query, page.next_cursor) {
                (PageQuery::Cursor(_), Some(Some(next))) => {
                    if !cursors.insert(next.clone()) {
                        return Err(odd(format!(
                            "the list of connections answered cursor {} twice; stopped rather than loop",
                            crate::text::clip(&next)
                        )));
                    }
                    PageQuery::Cursor(Some(next))
                }
                (PageQuery::Cursor(_), Some(None)) => return Ok(true),
                // Paged by offset (Leen ignored the cursor, or refused it).
                _ => match page.total {
                    Some(total) if seen >= total => return Ok(true),
                    Some(total) if count == 0 => {
                        return Err(odd(format!(
                            "the list of connections stopped at {seen} of the {total} it counts"
                        )));
                    }
                    // No total: only an empty page ends it (Leen may answer fewer than
                    // asked on every page).
                    None if count == 0 => return Ok(true),
                    _ => PageQuery::Offset(seen),
                },
            };
        }
        Ok(false)
    }

    /// One page of the list of connections.
    async fn list_page(
        &self,
        region: Region,
        base: &str,
        query: &PageQuery,
        key: &ApiKey,
    ) -> Result<crate::leen::ListPage, LeenOutcome> {
        let url = Url::parse_with_params(base, query.params())
            .map(String::from)
            .unwrap_or_else(|_| base.to_string());
        self.call(
            Operation::List,
            region,
            url,
            None,
            key,
            |status, ra, body| {
                classify_answer(
                    status,
                    ra,
                    body,
                    &[200],
                    "a list of connections",
                    parse_page,
                )
            },
        )
        .await
    }

    /// A call about one known connection: its answer must name that connection.
    #[allow(clippy::too_many_arguments)]
    async fn about(
        &self,
        op: Operation,
        region: Region,
        url: String,
        body: Option<Value>,
        key: &ApiKey,
        (organization, connection): (Uuid, Uuid),
        secrets: &[String],
    ) -> LeenOutcome {
        let expected = Expected {
            organization,
            connection,
        };
        self.call_redacting(
            op,
            region,
            url,
            body,
            key,
            secrets,
            move |status, ra, body| match classify(expected, status, ra, body) {
                LeenOutcome::Success(c) => Ok(c),
                other => Err(other),
            },
        )
        .await
        .map(LeenOutcome::Success)
        .unwrap_or_else(|outcome| outcome)
    }

    /// The one place every request goes through: the 429 gate, the in-flight limit, the
    /// key header, redaction, metrics.
    async fn call<T>(
        &self,
        op: Operation,
        region: Region,
        url: String,
        body: Option<Value>,
        key: &ApiKey,
        classify: impl FnOnce(u16, Option<&str>, Result<&[u8], BodyError>) -> Result<T, LeenOutcome>,
    ) -> Result<T, LeenOutcome> {
        self.call_redacting(op, region, url, body, key, &[], classify)
            .await
    }

    /// [`Self::call`], also redacting these values (credentials sent) from the answer.
    #[allow(clippy::too_many_arguments)]
    async fn call_redacting<T>(
        &self,
        op: Operation,
        region: Region,
        url: String,
        body: Option<Value>,
        key: &ApiKey,
        secrets: &[String],
        classify: impl FnOnce(u16, Option<&str>, Result<&[u8], BodyError>) -> Result<T, LeenOutcome>,
    ) -> Result<T, LeenOutcome> {
        let limit = LimitKey::new(self.base_url(region), key.expose());
        // The slot first, then the gate: a call that waited for a slot while another was
        // answered 429 must see that pause, not go out on an admission given before it.
        // The semaphore is never closed, so acquire cannot fail; if it ever did, going on
        // without a permit is the lesser harm.
        let _permit = self.in_flight.acquire().await.ok();
        let admission = self.gate.admit(limit);
        if let Admission::Wait(rest) = admission {
            // Another call of this limit was answered 429: this one is not sent at all.
            self.metrics.leen_request_held(op.as_str());
            // Spread over half the pause again, so that the held calls do not all come
            // back in the same instant (the probe goes first in any case).
            let spread = rest.mul_f64(rand::random::<f64>() * 0.5);
            return Err(LeenOutcome::RateLimited {
                retry_after: Some(rest + spread),
            });
        }
        let started = std::time::Instant::now();
        let (status, result) = self.send(op, &url, body, key, secrets, classify).await;
        // Transport errors could quote what the server sent; the key must not reach status.
        let result = result.map_err(|o| {
            o.map_text(|mut text| {
                for secret in
                    std::iter::once(key.expose()).chain(secrets.iter().map(String::as_str))
                {
                    text = text.replace(secret, REDACTED);
                }
                text
            })
        });
        self.metrics
            .observe_leen_request(op.as_str(), status, started.elapsed());
        let retry_after = match &result {
            Err(LeenOutcome::RateLimited { retry_after }) => Some(*retry_after),
            _ => None,
        };
        self.gate.report(
            limit,
            admission,
            retry_after.is_some(),
            retry_after.flatten(),
            rand::random::<f64>(),
        );
        self.note_availability(limit, region, &url, key, &result);
        result
    }

    /// Keeps track of outages per limit: no answer (a time-out, a refused connection, a
    /// 5xx) marks one; any answer from Leen ends it, and callers watching
    /// [`Self::recoveries`] hear of it at once rather than at their next backoff step.
    fn note_availability<T>(
        &self,
        limit: LimitKey,
        region: Region,
        url: &str,
        key: &ApiKey,
        result: &Result<T, LeenOutcome>,
    ) {
        let Ok(mut outages) = self.outages.lock() else {
            return;
        };
        match result {
            Err(LeenOutcome::Unavailable { .. }) => {
                let entry = outages.entry(limit).or_default();
                if let Some(organization) = organization_in(url) {
                    entry.probe = Some(OutageProbe {
                        region,
                        organization,
                        key: key.clone(),
                    });
                }
            }
            // Any answer of Leen's (calls the 429 gate holds never get here).
            _ => {
                if outages.remove(&limit).is_some_and(|o| o.down) {
                    self.recoveries.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        }
    }

    /// A count that moves each time Leen answers again on a limit that had an outage.
    pub fn recoveries(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recoveries.subscribe()
    }

    /// While some limit has an outage, asks Leen every `every` with one cheap call per
    /// limit (`GET` the organization of a call that failed), so that the end of an outage
    /// is seen within seconds, not at the longest backoff of the calls waiting on it.
    /// Runs until the client's last clone is gone.
    pub async fn probe_outages(self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if Arc::strong_count(&self.outages) <= 1 {
                return;
            }
            let probes: Vec<(LimitKey, OutageProbe)> = self
                .outages
                .lock()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| v.probe.clone().map(|p| (*k, p)))
                        .collect()
                })
                .unwrap_or_default();
            for (limit, probe) in probes {
                let answer = self
                    .get_organization(probe.region, probe.organization, &probe.key)
                    .await;
                // The organization does not answer either: Leen is down, not one
                // connection failing. Its next answer wakes whoever waits on it.
                if let Err(LeenOutcome::Unavailable { .. }) = answer
                    && let Ok(mut outages) = self.outages.lock()
                    && let Some(outage) = outages.get_mut(&limit)
                {
                    outage.down = true;
                }
            }
        }
    }

    async fn send<T>(
        &self,
        op: Operation,
        url: &str,
        body: Option<Value>,
        key: &ApiKey,
        secrets: &[String],
        classify: impl FnOnce(u16, Option<&str>, Result<&[u8], BodyError>) -> Result<T, LeenOutcome>,
    ) -> (Option<u16>, Result<T, LeenOutcome>) {
        // ApiKey::new admits only keys that are valid header values.
        let Ok(mut header) = HeaderValue::from_str(key.expose()) else {
            return (
                None,
                Err(LeenOutcome::Unavailable {
                    status: None,
                    error: "the API key cannot be sent in a header".to_string(),
                }),
            );
        };
        header.set_sensitive(true);
        let mut request = self
            .http
            .request(op.method(), url)
            .header("X-API-KEY", header)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return (
                    None,
                    Err(LeenOutcome::Unavailable {
                        status: None,
                        error: describe_transport_error(&e),
                    }),
                );
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // A hostile or buggy server could echo the key back: redact it in the raw body,
        // before any normalisation or truncation could split it.
        let body = read_bounded(&mut response).await.map(|b| {
            secrets
                .iter()
                .fold(redact(b, key.expose().as_bytes()), |b, s| {
                    redact(b, s.as_bytes())
                })
        });
        let result = classify(
            status.as_u16(),
            retry_after.as_deref(),
            body.as_ref().map(Vec::as_slice).map_err(Clone::clone),
        );
        (Some(status.as_u16()), result)
    }
}

/// How one page of a list is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PageQuery {
    /// Cursor pagination: the first page, or the one after this cursor.
    Cursor(Option<String>),
    /// Offset pagination, from this many connections in.
    Offset(u64),
}

impl PageQuery {
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = vec![("limit", LIST_PAGE.to_string())];
        match self {
            PageQuery::Cursor(cursor) => {
                params.push(("enableCursor", "true".to_string()));
                if let Some(cursor) = cursor {
                    params.push(("cursor", cursor.clone()));
                }
            }
            PageQuery::Offset(offset) => params.push(("offset", offset.to_string())),
        }
        params
    }
}

/// A limit whose last call got no answer: how to probe it, and whether the probe failed
/// too (Leen is down, rather than one connection failing).
#[derive(Clone, Default)]
struct Outage {
    probe: Option<OutageProbe>,
    down: bool,
}

/// A call by which to see whether Leen answers again on a limit.
#[derive(Clone)]
struct OutageProbe {
    region: Region,
    organization: Uuid,
    key: ApiKey,
}

/// The organization a URL of the provisioning API is about.
fn organization_in(url: &str) -> Option<Uuid> {
    let rest = url.split("/provisioning/organizations/").nth(1)?;
    let id = rest.split(['/', '?']).next()?;
    Uuid::parse_str(id).ok()
}

/// One organization's proof: when it was last shown, and the lock of whoever asks now.
#[derive(Default)]
struct Proof {
    at: Option<Instant>,
    asking: Arc<tokio::sync::Mutex<()>>,
}

impl Proof {
    fn is_fresh(&self) -> bool {
        self.at
            .is_some_and(|at| at.elapsed() < ORGANIZATION_PROOF_TTL)
    }
}

/// How long an organization shown reachable stays proven (per endpoint, key and id).
pub const ORGANIZATION_PROOF_TTL: Duration = Duration::from_secs(60);

/// Connections asked for per page of the list.
pub const LIST_PAGE: u64 = 100;

/// Most pages of the list read when looking for an identifier.
pub const MAX_LIST_PAGES: u64 = 100;

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

async fn read_bounded(response: &mut reqwest::Response) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY_BYTES as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(BodyError::Read(describe_transport_error(&e))),
        }
    }
}

fn describe_transport_error(e: &reqwest::Error) -> String {
    // reqwest's Display names the URL; the source chain says what actually happened.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the body failed"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}
