//! How fresh the controller's cache is: a DELETE is decided from it ("another resource
//! still binds the connection", "no resource needs this key Secret"), so it must not be
//! decided while a watch is relisting after an error, or has heard nothing from the API
//! server for longer than a working watch is ever silent.
//!
//! Every watch request ends after `LEEN_WATCH_TIMEOUT` (the server closes it, kube's
//! watcher opens the next one), so a working watch hears from the API server at least that
//! often even when nothing changes: events, bookmarks, or the server's clean end of the
//! watch body at the timeout. Those arrive below the watcher (which hides bookmarks and
//! re-watches), so a tower layer on the watch client notes every chunk of a successful
//! LeenConnection response's body and its clean end. Not response headers: a proxy that
//! answers 200 and then forwards nothing is a stuck watch. Not a chunk carrying a watch
//! `ERROR` event either.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context as TaskContext, Poll},
    time::{Duration, Instant},
};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};

pub use crate::decision::Freshness;

/// What one watch (one namespace's, or the one over all) last showed.
#[derive(Debug)]
struct Scope {
    failing: Option<String>,
    heard: Instant,
}

impl Scope {
    fn new() -> Self {
        Scope {
            failing: None,
            heard: Instant::now(),
        }
    }
}

#[derive(Debug)]
struct State {
    listed: bool,
    /// The scopes being listed again.
    relisting: std::collections::BTreeSet<String>,
    /// Each watch's own health, by scope: its namespace, or "" for one watch over all. A
    /// working watch of one namespace says nothing of another's.
    scopes: std::collections::BTreeMap<String, Scope>,
}

/// The health of one kind's watches (one over all namespaces, or one per namespace).
#[derive(Debug)]
pub struct WatchHealth {
    kind: &'static str,
    state: Mutex<State>,
}

impl WatchHealth {
    fn new(kind: &'static str) -> Self {
        Self {
            kind,
            state: Mutex::new(State {
                listed: false,
                relisting: Default::default(),
                scopes: [(String::new(), Scope::new())].into(),
            }),
        }
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut state) = self.state.lock() {
            f(&mut state);
        }
    }

    /// The watches there are: one per namespace in `namespaces`, or one over all when it
    /// is empty. Each must be heard from on its own.
    pub fn expect_scopes(&self, namespaces: &[String]) {
        self.update(|s| {
            s.scopes = if namespaces.is_empty() {
                [(String::new(), Scope::new())].into()
            } else {
                namespaces
                    .iter()
                    .map(|ns| (ns.clone(), Scope::new()))
                    .collect()
            };
        });
    }

    /// The API server said something on the watch of `scope` (a successful response, an
    /// event, a bookmark): it works, whatever failed before. Unknown scopes are ignored.
    pub fn heard(&self, scope: &str) {
        self.update(|s| {
            if let Some(w) = s.scopes.get_mut(scope) {
                w.failing = None;
                w.heard = Instant::now();
            }
        });
    }

    /// A watcher started a (re)list of `scope` (its namespace, or "" for the first lists
    /// of them all): until it is done the cache may miss objects.
    pub fn relist_started(&self, scope: &str) {
        self.update(|s| {
            s.relisting.insert(scope.to_string());
            if let Some(w) = s.scopes.get_mut(scope) {
                w.heard = Instant::now();
            }
        });
    }

    /// The (re)list of `scope` is applied to the cache ("": every watch's).
    pub fn relist_done(&self, scope: &str) {
        self.update(|s| {
            s.listed = true;
            s.relisting.remove(scope);
            let now = Instant::now();
            for (name, w) in s.scopes.iter_mut() {
                if scope.is_empty() || name == scope {
                    w.failing = None;
                    w.heard = now;
                }
            }
        });
    }

    /// The watch of `scope` failed; the watcher retries with backoff, and the next
    /// successful answer ([`Self::heard`]) ends the failure. Unknown scopes are ignored.
    pub fn failed(&self, scope: &str, error: &str) {
        self.update(|s| {
            if let Some(w) = s.scopes.get_mut(scope) {
                w.failing = Some(crate::text::clip(error));
            }
        });
    }

    /// Whether decisions may rely on this kind's cache: every watch listed, none failing,
    /// relisting or silent too long.
    pub fn freshness(&self, silence_limit: Duration) -> Freshness {
        self.freshness_at(Instant::now(), silence_limit)
    }

    fn freshness_at(&self, now: Instant, silence_limit: Duration) -> Freshness {
        let Ok(state) = self.state.lock() else {
            return Freshness::Stale(format!("the {} watch's state is unreadable", self.kind));
        };
        let kind = self.kind;
        let of = |scope: &str| {
            if scope.is_empty() {
                String::new()
            } else {
                format!(" (namespace {scope})")
            }
        };
        if !state.listed {
            return Freshness::Stale(format!("the {kind} cache has not synced yet"));
        }
        for (scope, w) in &state.scopes {
            if let Some(error) = &w.failing {
                return Freshness::Stale(format!(
                    "the {kind} watch{} is failing ({error})",
                    of(scope)
                ));
            }
        }
        if let Some(scope) = state.relisting.iter().next() {
            return Freshness::Stale(format!("the {kind} cache is relisting{}", of(scope)));
        }
        for (scope, w) in &state.scopes {
            let silent = now.saturating_duration_since(w.heard);
            if silent > silence_limit {
                // No running count of seconds in the message: an identical repeat stays quiet.
                return Freshness::Stale(format!(
                    "the {kind} watch{} has heard nothing from the API server for more than {}s (a working one hears something at least that often)",
                    of(scope),
                    silence_limit.as_secs()
                ));
            }
        }
        Freshness::Fresh
    }
}

/// The watches decisions rely on, and how long a working one can be silent. Both kinds of
/// decision ("still referenced", "no resource needs this key Secret") come from the
/// LeenConnection cache: the Secret watches only wake reconciliations, and a Secret patched
/// from a stale copy fails on its resourceVersion.
#[derive(Debug)]
pub struct Watches {
    /// The LeenConnection watch.
    pub connections: WatchHealth,
    /// How long one watch request lasts (`LEEN_WATCH_TIMEOUT`).
    pub timeout: Duration,
}

impl Watches {
    /// Watches whose requests last `timeout`.
    pub fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            connections: WatchHealth::new("LeenConnection"),
            timeout,
        })
    }

    /// Silence longer than this means a stuck watch: one whole watch request, half of one
    /// more for the server's and the watcher's own delays, and a few seconds of slack.
    pub fn silence_limit(&self) -> Duration {
        self.timeout + self.timeout / 2 + Duration::from_secs(5)
    }

    /// Whether the LeenConnection cache can be relied on.
    pub fn connections(&self) -> Freshness {
        self.connections.freshness(self.silence_limit())
    }

    /// Whether a request of the watch client is one of a LeenConnection watch (a list or
    /// a watch of the collection), and if so its scope: the namespace in the path, or "".
    fn watches_connections(uri: &http::Uri) -> Option<String> {
        let path = uri.path().strip_suffix("/leenconnections")?;
        Some(match path.rsplit_once("/namespaces/") {
            Some((_, ns)) if !ns.contains('/') => ns.to_string(),
            _ => String::new(),
        })
    }
}

/// A tower layer for the watch client: notes what the API server says on each watch.
#[derive(Clone, Debug)]
pub struct HeardLayer(pub Arc<Watches>);

impl<S> tower::Layer<S> for HeardLayer {
    type Service = Heard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Heard {
            inner,
            watches: self.0.clone(),
        }
    }
}

/// The service of [`HeardLayer`].
#[derive(Clone, Debug)]
pub struct Heard<S> {
    inner: S,
    watches: Arc<Watches>,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Heard<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<HeardBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let watched = Watches::watches_connections(request.uri());
        let watches = self.watches.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let watched = watched.filter(|_| response.status().is_success());
            Ok(response.map(|body| HeardBody {
                body,
                watches,
                watched,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that notes each chunk it yields.
    pub struct HeardBody<B> {
        #[pin]
        body: B,
        watches: Arc<Watches>,
        // The scope of a LeenConnection watch's successful response; None: not one.
        watched: Option<String>,
    }
}

/// Whether a chunk of a watch body carries an `ERROR` event (a 410 Gone, a 504 from a
/// lagging API server): no evidence that the watch works.
fn carries_error(data: &[u8]) -> bool {
    const ERROR: &[u8] = br#""type":"ERROR""#;
    data.windows(ERROR.len()).any(|w| w == ERROR)
}

impl<B: Body> Body for HeardBody<B>
where
    B::Data: AsRef<[u8]>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.body.poll_frame(cx);
        if let Some(scope) = this.watched.as_deref() {
            match &frame {
                Poll::Ready(Some(Ok(frame))) => {
                    let error = frame
                        .data_ref()
                        .is_some_and(|data| carries_error(data.as_ref()));
                    if !error {
                        this.watches.connections.heard(scope);
                    }
                }
                // The server ended the body cleanly (a watch at its timeout, a list).
                Poll::Ready(None) => this.watches.connections.heard(scope),
                _ => {}
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_is_stale_until_listed_while_relisting_or_failing() {
        let watches = Watches::new(Duration::from_secs(60));
        assert!(matches!(watches.connections(), Freshness::Stale(m) if m.contains("not synced")));
        watches.connections.relist_done("");
        assert_eq!(watches.connections(), Freshness::Fresh);
        watches.connections.failed("", "connection reset");
        assert!(
            matches!(watches.connections(), Freshness::Stale(m) if m.contains("failing (connection reset)"))
        );
        watches.connections.heard("");
        assert_eq!(watches.connections(), Freshness::Fresh);
        watches.connections.relist_started("");
        assert!(matches!(watches.connections(), Freshness::Stale(m) if m.contains("relisting")));
        watches.connections.relist_done("");
        assert_eq!(watches.connections(), Freshness::Fresh);
    }

    #[test]
    fn a_silent_watch_is_stale() {
        let watch = WatchHealth::new("LeenConnection");
        watch.relist_done("");
        let limit = Duration::from_secs(60);
        let later = |by: u64| Instant::now() + Duration::from_secs(by);
        assert_eq!(watch.freshness_at(later(59), limit), Freshness::Fresh);
        assert!(
            matches!(watch.freshness_at(later(61), limit), Freshness::Stale(m) if m.contains("heard nothing"))
        );
    }

    #[test]
    fn each_namespace_watch_must_be_healthy_on_its_own() {
        let watch = WatchHealth::new("LeenConnection");
        watch.expect_scopes(&["team-a".to_string(), "team-b".to_string()]);
        watch.relist_started("");
        watch.relist_done("");
        let limit = Duration::from_secs(60);
        assert_eq!(watch.freshness(limit), Freshness::Fresh);
        // team-a fails while team-b keeps talking: still stale, and says which.
        watch.failed("team-a", "403 forbidden");
        watch.heard("team-b");
        assert!(
            matches!(watch.freshness(limit), Freshness::Stale(m) if m.contains("(namespace team-a) is failing"))
        );
        watch.heard("team-a");
        assert_eq!(watch.freshness(limit), Freshness::Fresh);
        // team-b goes silent while team-a is heard: stale. (The sleep only ages team-b's
        // last word past a 200 ms limit; team-a is heard right before the check.)
        std::thread::sleep(Duration::from_millis(400));
        watch.heard("team-a");
        assert!(
            matches!(watch.freshness_at(Instant::now(), Duration::from_millis(200)), Freshness::Stale(m) if m.contains("(namespace team-b) has heard nothing"))
        );
        watch.heard("team-b");
        // One namespace relisting is stale; its end clears only its own failure.
        watch.failed("team-b", "reset");
        watch.relist_started("team-a");
        assert!(matches!(watch.freshness(limit), Freshness::Stale(_)));
        watch.relist_done("team-a");
        assert!(matches!(watch.freshness(limit), Freshness::Stale(m) if m.contains("team-b")));
        // Unknown scopes change nothing.
        watch.failed("elsewhere", "x");
        watch.heard("team-b");
        assert_eq!(watch.freshness(limit), Freshness::Fresh);
    }

    #[test]
    fn the_scope_of_a_watch_request_is_its_namespace() {
        let scope = |u: &str| Watches::watches_connections(&u.parse().expect("uri"));
        assert_eq!(
            scope("https://a/apis/leen.dev/v1alpha1/namespaces/team-a/leenconnections?watch=true")
                .as_deref(),
            Some("team-a")
        );
        assert_eq!(
            scope("https://a/apis/leen.dev/v1alpha1/leenconnections?watch=true").as_deref(),
            Some("")
        );
        assert_eq!(scope("https://a/api/v1/namespaces/x/secrets"), None);
    }

    #[test]
    fn a_watch_error_event_is_no_sign_of_life() {
        assert!(carries_error(
            br#"{"type":"ERROR","object":{"kind":"Status","code":410}}"#
        ));
        assert!(!carries_error(
            br#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"7"}}}"#
        ));
        assert!(!carries_error(br#"{"type":"MODIFIED","object":{}}"#));
    }

    #[test]
    fn the_silence_limit_covers_one_watch_and_a_half() {
        let watches = Watches::new(Duration::from_secs(60));
        assert_eq!(watches.silence_limit(), Duration::from_secs(95));
    }

    #[test]
    fn only_requests_for_leenconnections_are_heard() {
        let watched =
            |s: &str| Watches::watches_connections(&s.parse::<http::Uri>().expect("uri")).is_some();
        assert!(watched(
            "https://k/apis/leen.dev/v1alpha1/leenconnections?watch=true"
        ));
        assert!(watched(
            "https://k/apis/leen.dev/v1alpha1/namespaces/a/leenconnections?limit=500"
        ));
        assert!(!watched("https://k/api/v1/namespaces/a/secrets?watch=1"));
    }
}
