//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas only
//! one reconciles (and calls Leen).
//!
//! As in client-go, a standby judges the holder's lease by its own clock: the lease has
//! expired when this replica has seen the record unchanged for a whole lease duration
//! (never by comparing the holder's `renewTime` with the local clock, which clock skew
//! between nodes would turn into a takeover of a healthy leader). The leader stops at its
//! renew deadline (two thirds of the lease duration after the start of its last successful
//! renewal), whatever its renew call is doing, so it has stopped before any standby may
//! take over.

use std::{sync::Mutex, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::time::Instant;
use tracing::{info, warn};

/// What to do with the Lease, given what it holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    TakeOver,
    /// Someone else holds a live lease.
    Wait {
        /// The holder.
        holder: String,
    },
}

/// Decides what to do with the Lease. Pure. `unchanged_for`: how long this replica has
/// seen the record as it is now.
pub fn lease_action(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> LeaseAction {
    let Some(spec) = spec else {
        return LeaseAction::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return LeaseAction::Renew;
    }
    if holder.is_empty() {
        return LeaseAction::TakeOver;
    }
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15));
    if unchanged_for > duration {
        LeaseAction::TakeOver
    } else {
        LeaseAction::Wait {
            holder: holder.to_string(),
        }
    }
}

/// Settings of leader election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease lives without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews, and a standby looks.
    pub retry_period: Duration,
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The record last seen, and when this replica first saw it.
    observed: Mutex<Option<(String, Instant)>>,
    /// Start of the last successful acquire or renew call.
    renewed: Mutex<Option<Instant>>,
}

/// What identifies a version of the Lease record.
fn record_key(lease: Option<&Lease>) -> String {
    let Some(lease) = lease else {
        return String::new();
    };
    let spec = lease.spec.clone().unwrap_or_default();
    format!(
        "{}|{:?}|{:?}|{:?}|{}",
        spec.holder_identity.unwrap_or_default(),
        spec.renew_time.map(|t| t.0),
        spec.acquire_time.map(|t| t.0),
        spec.lease_transitions,
        lease.metadata.resource_version.clone().unwrap_or_default()
    )
}

impl LeaderElector {
    /// An elector for the Lease in `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Mutex::new(None),
            renewed: Mutex::new(None),
        }
    }

    /// The renew deadline: a leader that has not renewed for this long stops leading.
    pub fn renew_deadline(&self) -> Duration {
        self.config.lease_duration.mul_f64(2.0 / 3.0)
    }

    /// How long this replica has seen the record as it is now.
    fn unchanged_for(&self, lease: Option<&Lease>) -> Duration {
        let key = record_key(lease);
        let Ok(mut observed) = self.observed.lock() else {
            return Duration::ZERO;
        };
        match observed.as_ref() {
            Some((seen, at)) if *seen == key => at.elapsed(),
            _ => {
                *observed = Some((key, Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// One round: acquire or renew if possible. `Ok(true)`: we hold the lease now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let started = Instant::now();
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.config.name).await?;
        let action = lease_action(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.config.identity,
            self.unchanged_for(current.as_ref()),
        );
        let duration = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let result = match (action, current) {
            (LeaseAction::Wait { .. }, _) => return Ok(false),
            (LeaseAction::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(duration),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (action, Some(mut lease)) => {
                // Replace carries the resourceVersion we read: a concurrent change makes
                // it fail with 409 instead of electing two leaders.
                let spec = lease.spec.get_or_insert_with(Default::default);
                if action == LeaseAction::TakeOver {
                    spec.holder_identity = Some(self.config.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(duration);
                spec.renew_time = Some(MicroTime(now));
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(lease) => {
                // What we wrote is what a standby sees next: it starts its clock then.
                self.unchanged_for(Some(&lease));
                if let Ok(mut renewed) = self.renewed.lock() {
                    *renewed = Some(started);
                }
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        let mut waiting_logged = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                    return;
                }
                Ok(false) => {
                    if !waiting_logged {
                        info!(lease = %self.config.name, "another replica leads; standing by");
                        waiting_logged = true;
                    }
                }
                Err(e) => warn!(error = %e, "leader election: reading the Lease failed"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews every retry period; returns at the renew deadline if no renewal succeeded by
    /// then, even while a renew call hangs (the caller must stop leading at once).
    pub async fn hold(&self) {
        loop {
            let last = self
                .renewed
                .lock()
                .ok()
                .and_then(|r| *r)
                .unwrap_or_else(Instant::now);
            let deadline = last + self.renew_deadline();
            let next = (Instant::now() + self.config.retry_period).min(deadline);
            tokio::time::sleep_until(next).await;
            if Instant::now() >= deadline {
                warn!("leader election: no renewal within the renew deadline; stopping");
                return;
            }
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    warn!("leader election: the Lease was taken by another replica");
                    return;
                }
                Ok(Err(e)) => warn!(error = %e, "leader election: renewing the Lease failed"),
                Err(_) => {
                    warn!(
                        "leader election: renewing the Lease hung past the renew deadline; stopping"
                    );
                    return;
                }
            }
        }
    }

    /// Gives the lease up so that a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!("released the leader Lease"),
            Err(e) => warn!(error = %e, "releasing the leader Lease failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            // A renewTime far in the future (a skewed clock) must not matter.
            renew_time: Some(MicroTime(
                Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(1),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn lease_table() {
        let secs = Duration::from_secs;
        assert_eq!(lease_action(None, "a", secs(0)), LeaseAction::Create);
        assert_eq!(
            lease_action(Some(&spec(Some("a"))), "a", secs(100)),
            LeaseAction::Renew
        );
        assert_eq!(
            lease_action(Some(&spec(Some("b"))), "a", secs(15)),
            LeaseAction::Wait { holder: "b".into() }
        );
        // Expiry is judged by how long this replica saw the record unchanged.
        assert_eq!(
            lease_action(Some(&spec(Some("b"))), "a", secs(16)),
            LeaseAction::TakeOver
        );
        assert_eq!(
            lease_action(Some(&spec(None)), "a", secs(0)),
            LeaseAction::TakeOver
        );
    }
}
