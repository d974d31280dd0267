//! The deletion budget: at most `LEEN_MAX_DELETIONS` DELETE calls start per
//! `LEEN_DELETION_WINDOW` across the whole installation, so that a GitOps mistake (a wrong
//! path, a cascade delete, a reinstall) cannot wipe a security team's integrations at once.
//!
//! The count lives in the API server, on a Lease the operator owns (`<lease name>-deletion-
//! budget`): one annotation holds the start time and resource uid of every DELETE started
//! within the window. Every replica and every restart reads and updates the same record,
//! with the resourceVersion as a guard, so the budget is one for the installation.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use serde::{Deserialize, Serialize};

/// Annotation of the budget Lease that holds the deletions started within the window.
pub const STARTED_ANNOTATION: &str = "leen.dev/deletions-started";

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

/// One DELETE started: which resource, when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The resource's uid.
    pub uid: String,
    /// When the call was allowed to start (RFC 3339).
    pub at: DateTime<Utc>,
}

/// What the budget says to one deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Call Leen (counted now, or counted before for this resource).
    Go,
    /// Do not call: the budget is spent.
    Held {
        /// DELETE calls started within the window.
        started: u32,
        /// When the oldest of them leaves the window.
        frees_at: DateTime<Utc>,
    },
}

/// Decides one deletion against the recorded starts, and the starts to record. Pure.
pub fn judge(
    mut started: Vec<Started>,
    uid: &str,
    max: u32,
    window: Duration,
    now: DateTime<Utc>,
) -> (Verdict, Option<Vec<Started>>) {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    started.retain(|s| s.at + window > now);
    if started.iter().any(|s| s.uid == uid) {
        // A retry of a deletion already counted.
        return (Verdict::Go, None);
    }
    if u32::try_from(started.len()).unwrap_or(u32::MAX) >= max {
        let oldest = started.iter().map(|s| s.at).min().unwrap_or(now);
        return (
            Verdict::Held {
                started: u32::try_from(started.len()).unwrap_or(u32::MAX),
                frees_at: oldest + window,
            },
            None,
        );
    }
    started.push(Started {
        uid: uid.to_string(),
        at: now,
    });
    (Verdict::Go, Some(started))
}

/// The installation's deletion budget, kept on a Lease in the API server.
#[derive(Clone)]
pub struct DeletionBudget {
    api: Api<Lease>,
    config: BudgetConfig,
}

impl DeletionBudget {
    /// The budget of `config`, read and written through `client`.
    pub fn new(client: Client, config: BudgetConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Asks to start the DELETE of the resource `uid`; records it when allowed. A conflict
    /// with another replica's write is retried with what that replica wrote.
    pub async fn admit(&self, uid: &str) -> Result<Verdict, kube::Error> {
        if self.config.max_deletions == 0 {
            return Ok(Verdict::Go);
        }
        let mut conflicts = 0;
        loop {
            let now = Utc::now();
            let current = self.api.get_opt(&self.config.name).await?;
            let started = current
                .as_ref()
                .and_then(|l| l.metadata.annotations.as_ref())
                .and_then(|a| a.get(STARTED_ANNOTATION))
                .and_then(|v| serde_json::from_str::<Vec<Started>>(v).ok())
                .unwrap_or_default();
            let (verdict, record) = judge(
                started,
                uid,
                self.config.max_deletions,
                self.config.window,
                now,
            );
            let Some(record) = record else {
                return Ok(verdict);
            };
            let value = serde_json::to_string(&record).unwrap_or_else(|_| "[]".to_string());
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
                Ok(_) => return Ok(verdict),
                Err(kube::Error::Api(s)) if (s.code == 409) && conflicts < 10 => {
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
        let mut record = Vec::new();
        for (i, uid) in ["a", "b"].iter().enumerate() {
            let (verdict, next) = judge(record.clone(), uid, 2, window, at(i as i64));
            assert_eq!(verdict, Verdict::Go);
            record = next.expect("recorded");
        }
        // The third within the window is held until the first leaves it.
        let (verdict, next) = judge(record.clone(), "c", 2, window, at(100));
        assert_eq!(
            verdict,
            Verdict::Held {
                started: 2,
                frees_at: at(600)
            }
        );
        assert!(next.is_none());
        // A retry of a counted deletion is not counted again.
        assert_eq!(
            judge(record.clone(), "a", 2, window, at(100)),
            (Verdict::Go, None)
        );
        // Once the window has moved past the first, the third may start.
        let (verdict, next) = judge(record, "c", 2, window, at(600));
        assert_eq!(verdict, Verdict::Go);
        let uids: Vec<String> = next.expect("recorded").into_iter().map(|s| s.uid).collect();
        assert_eq!(uids, ["b", "c"]);
    }
}
