//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas only
//! one reconciles (and calls Leen). A leader that cannot renew within the lease duration
//! stops the process rather than risk two leaders.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
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

/// Decides what to do with the Lease. Pure.
pub fn lease_action(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseAction {
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
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let expired = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .is_none_or(|t| t.0 + duration < now);
    if expired {
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
}

impl LeaderElector {
    /// An elector for the Lease in `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// One round: acquire or renew if possible. `Ok(true)`: we hold the lease now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.config.name).await?;
        let action = lease_action(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.config.identity,
            now,
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
            Ok(_) => Ok(true),
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

    /// Renews until a renewal has not succeeded for a whole lease duration; then returns
    /// (the caller must stop leading).
    pub async fn hold(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!("leader election: the Lease was taken by another replica");
                    return;
                }
                Err(e) => warn!(error = %e, "leader election: renewing the Lease failed"),
            }
            // Stop a little before the others may take over.
            if last_renewed.elapsed() + self.config.retry_period >= self.config.lease_duration {
                return;
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

    fn spec(holder: Option<&str>, renewed_secs_ago: i64) -> LeaseSpec {
        let now = Timestamp::now();
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            ..Default::default()
        }
    }

    #[test]
    fn lease_table() {
        let now = Timestamp::now();
        assert_eq!(lease_action(None, "a", now), LeaseAction::Create);
        assert_eq!(
            lease_action(Some(&spec(Some("a"), 1)), "a", now),
            LeaseAction::Renew
        );
        assert_eq!(
            lease_action(Some(&spec(Some("b"), 1)), "a", now),
            LeaseAction::Wait { holder: "b".into() }
        );
        assert_eq!(
            lease_action(Some(&spec(Some("b"), 16)), "a", now),
            LeaseAction::TakeOver
        );
        assert_eq!(
            lease_action(Some(&spec(None, 1)), "a", now),
            LeaseAction::TakeOver
        );
        let mut no_time = spec(Some("b"), 0);
        no_time.renew_time = None;
        assert_eq!(
            lease_action(Some(&no_time), "a", now),
            LeaseAction::TakeOver
        );
    }
}
