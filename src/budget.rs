//! The deletion budget: at most `LEEN_MAX_DELETIONS` DELETE calls start per
//! `LEEN_DELETION_WINDOW` across the whole installation, so that a GitOps mistake (a wrong
//! path, a cascade delete, a reinstall) cannot wipe a security team's integrations at once.
//!
//! The count lives in the API server, on a Lease the operator owns (`<lease name>-deletion-
//! budget`): one annotation holds how many DELETE calls started in each of about 60 time
//! buckets of the window, so the record stays a few kilobytes however many deletions a
//! window holds. Every replica and every restart reads and updates the same record, with
//! the resourceVersion as a guard, so the budget is one for the installation. A replica
//! under load reserves several starts in one write and hands them out itself, so that
//! deletions do not queue behind one Lease write each. A record that cannot be read
//! counts as spent: the budget fails closed.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use serde::{Deserialize, Serialize};

/// Annotation of the budget Lease that holds the deletions started within the window.
pub const STARTED_ANNOTATION: &str = "leen.dev/deletions-started";

/// Buckets a window is counted in.
pub const BUCKETS: u64 = 60;

/// Most starts one replica reserves in one Lease write.
pub const MAX_BATCH: u32 = 32;

/// How long reserved starts may be handed out: they were counted when reserved, so they
/// must start soon after.
pub const RESERVATION_TTL: Duration = Duration::from_secs(2);

/// Settings of the budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    /// DELETE calls allowed per window; 0: no budget.
    pub max_deletions: u32,
    /// The sliding window.
    pub window: Duration,
    /// Whether held deletions proceed on their own once the window frees the budget.
    pub resume_held: bool,
    /// Namespace of the budget Lease.
    pub namespace: String,
    /// Name of the budget Lease.
    pub name: String,
}

/// The record on the Lease: DELETE calls started per time bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Length of a bucket, in seconds.
    pub bucket_seconds: u64,
    /// Starts per bucket, by the bucket's start (Unix seconds).
    pub counts: BTreeMap<i64, u32>,
}

/// One DELETE started, in the record's first format (a list of them): read on upgrade.
#[derive(Clone, Debug, Deserialize)]
struct Started {
    at: DateTime<Utc>,
}

impl Record {
    /// Reads the annotation: the bucket record, or the first format (a list of starts).
    pub fn parse(value: &str, window: Duration) -> Result<Self, String> {
        if let Ok(record) = serde_json::from_str::<Record>(value) {
            if record.bucket_seconds == 0 {
                return Err("bucketSeconds is 0".to_string());
            }
            return Ok(record);
        }
        match serde_json::from_str::<Vec<Started>>(value) {
            Ok(starts) => {
                let mut record = Record::empty(window);
                for s in starts {
                    record.add(s.at, 1);
                }
                Ok(record)
            }
            Err(e) => Err(format!(
                "annotation {STARTED_ANNOTATION} is not a budget record: {e}"
            )),
        }
    }

    /// An empty record with buckets of about a sixtieth of `window`.
    pub fn empty(window: Duration) -> Self {
        Self {
            bucket_seconds: (window.as_secs() / BUCKETS).max(1),
            counts: BTreeMap::new(),
        }
    }

    fn bucket(&self, at: DateTime<Utc>) -> i64 {
        let len = i64::try_from(self.bucket_seconds)
            .unwrap_or(i64::MAX)
            .max(1);
        at.timestamp().div_euclid(len) * len
    }

    fn add(&mut self, at: DateTime<Utc>, n: u32) {
        let bucket = self.bucket(at);
        let count = self.counts.entry(bucket).or_insert(0);
        *count = count.saturating_add(n);
    }

    /// Forgets the buckets wholly outside the window ending `now`.
    fn prune(&mut self, window: Duration, now: DateTime<Utc>) {
        let len = i64::try_from(self.bucket_seconds).unwrap_or(i64::MAX);
        let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        let start = now.timestamp().saturating_sub(window);
        self.counts.retain(|b, _| b.saturating_add(len) > start);
    }

    /// Starts counted in the window ending `now` (a bucket partly inside counts whole:
    /// the budget errs on the side of holding), and when the oldest of them leaves it.
    fn within(&self, window: Duration, now: DateTime<Utc>) -> (u32, DateTime<Utc>) {
        let len = i64::try_from(self.bucket_seconds).unwrap_or(i64::MAX);
        let window_secs = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        let start = now.timestamp().saturating_sub(window_secs);
        let live = self
            .counts
            .iter()
            .filter(|(b, n)| b.saturating_add(len) > start && **n > 0);
        let count = live.clone().fold(0u32, |a, (_, n)| a.saturating_add(*n));
        let frees = live
            .map(|(b, _)| b.saturating_add(len).saturating_add(window_secs))
            .min()
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .unwrap_or(now);
        (count, frees)
    }
}

/// What the budget says to one deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Call Leen (counted now).
    Go,
    /// Do not call: the budget is spent.
    Held {
        /// DELETE calls started within the window.
        started: u32,
        /// When the oldest of them leaves the window.
        frees_at: DateTime<Utc>,
    },
    /// Do not call: the record cannot be read, so the budget counts as spent.
    Unreadable(String),
}

/// Decides a reservation of up to `want` starts against the record, and the record to
/// write. Pure. `Ok(granted)`: that many starts (at least one) are now counted.
pub fn judge(
    mut record: Record,
    want: u32,
    max: u32,
    window: Duration,
    now: DateTime<Utc>,
) -> (Result<u32, Verdict>, Record) {
    record.prune(window, now);
    let (started, frees_at) = record.within(window, now);
    if started >= max {
        return (Err(Verdict::Held { started, frees_at }), record);
    }
    let granted = want.clamp(1, max - started);
    record.add(now, granted);
    (Ok(granted), record)
}

/// Starts reserved by this replica and not handed out yet.
#[derive(Debug)]
struct Pool {
    slots: u32,
    reserved: Instant,
    /// The Lease as this replica last wrote it: the next write goes out without reading it
    /// first, and a conflict (another replica wrote since) reads it again.
    lease: Option<Lease>,
}

/// The installation's deletion budget, kept on a Lease in the API server.
#[derive(Clone)]
pub struct DeletionBudget {
    api: Api<Lease>,
    config: BudgetConfig,
    pool: Arc<tokio::sync::Mutex<Pool>>,
    waiting: Arc<AtomicUsize>,
}

impl DeletionBudget {
    /// The budget of `config`, read and written through `client`.
    pub fn new(client: Client, config: BudgetConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            pool: Arc::new(tokio::sync::Mutex::new(Pool {
                slots: 0,
                reserved: Instant::now(),
                lease: None,
            })),
            waiting: Arc::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Asks to start one DELETE; counts it when allowed. Deletions asking at once share
    /// one Lease write: the first reserves starts for those waiting behind it. A conflict
    /// with another replica's write is retried with what that replica wrote.
    pub async fn admit(&self, _uid: &str) -> Result<Verdict, kube::Error> {
        if self.config.max_deletions == 0 {
            return Ok(Verdict::Go);
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut pool = self.pool.lock().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if pool.slots > 0 && pool.reserved.elapsed() < RESERVATION_TTL {
            pool.slots -= 1;
            return Ok(Verdict::Go);
        }
        pool.slots = 0;
        let behind = u32::try_from(self.waiting.load(Ordering::SeqCst)).unwrap_or(u32::MAX);
        let want = behind.saturating_add(1).min(MAX_BATCH);
        match self.reserve(want, &mut pool.lease).await? {
            Ok(granted) => {
                pool.slots = granted - 1;
                pool.reserved = Instant::now();
                Ok(Verdict::Go)
            }
            Err(verdict) => Ok(verdict),
        }
    }

    /// Reserves up to `want` starts in the Lease. `cached`: the Lease as last written here.
    async fn reserve(
        &self,
        want: u32,
        cached: &mut Option<Lease>,
    ) -> Result<Result<u32, Verdict>, kube::Error> {
        let mut conflicts = 0;
        loop {
            let now = Utc::now();
            let from_cache = cached.is_some();
            let current = match cached.take() {
                Some(lease) => Some(lease),
                None => self.api.get_opt(&self.config.name).await?,
            };
            let value = current
                .as_ref()
                .and_then(|l| l.metadata.annotations.as_ref())
                .and_then(|a| a.get(STARTED_ANNOTATION));
            let record = match value {
                None => Record::empty(self.config.window),
                Some(v) => match Record::parse(v, self.config.window) {
                    Ok(record) => record,
                    Err(problem) => return Ok(Err(Verdict::Unreadable(problem))),
                },
            };
            let (granted, record) = judge(
                record,
                want,
                self.config.max_deletions,
                self.config.window,
                now,
            );
            if granted.is_err() {
                // "Spent" from this replica's own last write: the Lease may have changed
                // since (a person reset the count), and a first hold is durable, so it is
                // read once more before saying so.
                if from_cache {
                    continue;
                }
                return Ok(granted);
            }
            let value = serde_json::to_string(&record).unwrap_or_else(|_| "{}".to_string());
            let result = match current {
                Some(mut lease) => {
                    lease
                        .metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(STARTED_ANNOTATION.to_string(), value);
                    self.api
                        .replace(&self.config.name, &PostParams::default(), &lease)
                        .await
                }
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(self.config.name.clone()),
                            annotations: Some([(STARTED_ANNOTATION.to_string(), value)].into()),
                            ..Default::default()
                        },
                        spec: None,
                    };
                    self.api.create(&PostParams::default(), &lease).await
                }
            };
            match result {
                Ok(written) => {
                    *cached = Some(written);
                    return Ok(granted);
                }
                // Another replica wrote it, it was created meanwhile, or (404) removed since
                // this replica last wrote it: read it again.
                Err(kube::Error::Api(s)) if (s.code == 409 || s.code == 404) && conflicts < 10 => {
                    conflicts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    #[test]
    fn counts_within_the_window_and_frees_as_it_moves() {
        let window = Duration::from_secs(600);
        let mut record = Record::empty(window);
        assert_eq!(record.bucket_seconds, 10);
        for i in 0..2 {
            let (granted, next) = judge(record.clone(), 1, 2, window, at(i));
            assert_eq!(granted, Ok(1));
            record = next;
        }
        // The third within the window is held until the first bucket leaves it.
        let (verdict, next) = judge(record.clone(), 1, 2, window, at(100));
        assert_eq!(
            verdict,
            Err(Verdict::Held {
                started: 2,
                frees_at: at(610)
            })
        );
        assert_eq!(next.counts.values().sum::<u32>(), 2);
        // Once the window has moved past it, the third may start.
        let (verdict, next) = judge(record, 1, 2, window, at(610));
        assert_eq!(verdict, Ok(1));
        assert_eq!(
            next.counts.values().sum::<u32>(),
            1,
            "the old bucket pruned"
        );
    }

    #[test]
    fn a_reservation_gets_what_is_left_and_the_record_stays_small() {
        let window = Duration::from_secs(600);
        let (granted, record) = judge(Record::empty(window), 32, 5, window, at(0));
        assert_eq!(granted, Ok(5), "no more than the budget holds");
        let (verdict, _) = judge(record, 1, 5, window, at(1));
        assert!(matches!(verdict, Err(Verdict::Held { started: 5, .. })));
        // Thousands of starts over a window: at most one entry per bucket.
        let mut record = Record::empty(window);
        for i in 0..6000 {
            record = judge(record, 1, u32::MAX, window, at(i / 5)).1;
        }
        assert!(record.counts.len() <= 61, "{}", record.counts.len());
        let text = serde_json::to_string(&record).expect("json");
        assert!(text.len() < 4096, "{} bytes", text.len());
    }

    #[test]
    fn the_first_format_is_read_and_anything_else_fails_closed() {
        let window = Duration::from_secs(600);
        let old =
            r#"[{"uid":"a","at":"2027-01-15T08:00:00Z"},{"uid":"b","at":"2027-01-15T08:00:05Z"}]"#;
        let record = Record::parse(old, window).expect("first format");
        assert_eq!(record.counts.values().sum::<u32>(), 2);
        for bad in [
            "",
            "{",
            "42",
            r#"{"bucketSeconds":0,"counts":{}}"#,
            "[{\"at\":1}]",
        ] {
            assert!(Record::parse(bad, window).is_err(), "{bad:?}");
        }
    }
}
