//! How long to wait before trying again, by kind of failure.

use std::time::Duration;

use super::Reason;

/// How long to wait before trying again, by kind of failure.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// First delay after a transient failure (5xx, timeout, 429 without Retry-After).
    pub transient_base: Duration,
    /// Longest delay after transient failures.
    pub transient_cap: Duration,
    /// First delay after 401/403 (a Secret change retries at once anyway).
    pub unauthorized_base: Duration,
    /// Longest delay after 401/403.
    pub unauthorized_cap: Duration,
    /// Delay after a 422 or an invalid spec: these do not heal by themselves.
    pub slow_retry: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            transient_base: Duration::from_secs(2),
            transient_cap: Duration::from_secs(300),
            unauthorized_base: Duration::from_secs(30),
            unauthorized_cap: Duration::from_secs(600),
            slow_retry: Duration::from_secs(900),
        }
    }
}

impl RetryPolicy {
    /// Capped exponential backoff with jitter: attempt 1 waits about `base`, each further
    /// attempt doubles it up to `cap`; the delay is drawn from [d/2, d] with `jitter` in [0, 1].
    pub fn backoff(base: Duration, cap: Duration, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = base.saturating_mul(1u32 << exp).min(cap);
        let jitter = jitter.clamp(0.0, 1.0);
        raw.div_f64(2.0) + raw.div_f64(2.0).mul_f64(jitter)
    }

    /// The delay after the `attempt`-th consecutive failure with this reason.
    pub fn delay(
        &self,
        reason: Reason,
        retry_after: Option<Duration>,
        attempt: u32,
        jitter: f64,
    ) -> Duration {
        match reason {
            Reason::RateLimited if retry_after.is_some() => {
                retry_after.unwrap_or_default().max(Duration::from_secs(1))
            }
            Reason::Unauthorized => Self::backoff(
                self.unauthorized_base,
                self.unauthorized_cap,
                attempt,
                jitter,
            ),
            Reason::Rejected
            | Reason::InvalidSpec
            | Reason::ImmutableFieldChanged
            | Reason::IdentifierInUse => {
                self.slow_retry.mul_f64(0.9 + 0.2 * jitter.clamp(0.0, 1.0))
            }
            // The cache catches up by itself, usually within seconds: a short, fixed wait
            // (not Leen's backoff, which would delay the deletion long after it has).
            Reason::CacheStale => {
                Duration::from_secs(5).mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
            }
            // Looked up again with backoff, but not later than when absence is proof.
            Reason::CreatePending => {
                let backoff =
                    Self::backoff(self.transient_base, self.transient_cap, attempt, jitter);
                retry_after
                    .map_or(backoff, |until| until.min(backoff))
                    .max(Duration::from_secs(1))
            }
            _ => Self::backoff(self.transient_base, self.transient_cap, attempt, jitter),
        }
    }
}
