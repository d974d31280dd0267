//! One gate per Leen rate limit: a 429 pauses every call that shares the limit (the same
//! endpoint and API key), not only the resource that got it. When the pause ends, one call
//! probes; the rest follow only when the probe was not rate limited. During a sustained 429
//! the requests Leen receives therefore grow with time, not with the number of resources.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

/// First pause after a 429 without a usable `Retry-After`.
pub const BASE_PAUSE: Duration = Duration::from_secs(2);

/// Longest pause after repeated 429s without a usable `Retry-After`.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);

/// The limit a call shares with others: the endpoint and the key. The key is kept only as
/// a hash, in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LimitKey(u64);

impl LimitKey {
    /// The limit of calls to `base_url` with `api_key`.
    pub fn new(base_url: &str, api_key: &str) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        base_url.hash(&mut h);
        api_key.hash(&mut h);
        Self(h.finish())
    }
}

/// What the gate allows one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The limit is open: call.
    Go,
    /// The pause is over and this call is the one probe: call, and report the answer.
    Probe,
    /// The limit is paused (or another call is probing): do not call; the pause ends in
    /// about this long.
    Wait(Duration),
}

#[derive(Debug, Default)]
struct Limit {
    paused_until: Option<Instant>,
    /// When the probe in flight started, if one is.
    probing: Option<Instant>,
    /// Consecutive 429s, for the pause without `Retry-After`.
    strikes: u32,
}

/// The gates of every limit the client has met. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct RateGate {
    limits: Arc<Mutex<HashMap<LimitKey, Limit>>>,
}

/// How long a probe may take before another call may probe instead (a probe whose task
/// was dropped never reports).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a call waits while another probes: a probe takes about one request.
const WHILE_PROBING: Duration = Duration::from_secs(1);

impl RateGate {
    /// Asks to make one call under `key`.
    pub fn admit(&self, key: LimitKey) -> Admission {
        self.admit_at(key, Instant::now())
    }

    fn admit_at(&self, key: LimitKey, now: Instant) -> Admission {
        let Ok(mut limits) = self.limits.lock() else {
            return Admission::Go;
        };
        let Some(limit) = limits.get_mut(&key) else {
            return Admission::Go;
        };
        match limit.paused_until {
            None => Admission::Go,
            Some(until) if now < until => Admission::Wait(until - now),
            // Should the probe never report (its task dropped), another probes later.
            Some(_) if limit.probing.is_some_and(|at| now < at + PROBE_TIMEOUT) => {
                Admission::Wait(WHILE_PROBING)
            }
            Some(_) => {
                limit.probing = Some(now);
                Admission::Probe
            }
        }
    }

    /// Reports the answer of a call admitted under `key`: `rate_limited` with Leen's
    /// `Retry-After` (if any) pauses the limit; any other answer to the probe opens it.
    pub fn report(
        &self,
        key: LimitKey,
        admission: Admission,
        rate_limited: bool,
        retry_after: Option<Duration>,
        jitter: f64,
    ) {
        self.report_at(
            key,
            admission,
            rate_limited,
            retry_after,
            jitter,
            Instant::now(),
        );
    }

    fn report_at(
        &self,
        key: LimitKey,
        admission: Admission,
        rate_limited: bool,
        retry_after: Option<Duration>,
        jitter: f64,
        now: Instant,
    ) {
        let Ok(mut limits) = self.limits.lock() else {
            return;
        };
        if rate_limited {
            let limit = limits.entry(key).or_default();
            limit.strikes = limit.strikes.saturating_add(1);
            let pause = retry_after.unwrap_or_else(|| pause_after(limit.strikes, jitter));
            let until = now + pause;
            // Several calls in flight may all be answered 429: the latest end wins.
            limit.paused_until = Some(limit.paused_until.map_or(until, |u| u.max(until)));
            if admission == Admission::Probe {
                limit.probing = None;
                limit.paused_until = Some(until);
            }
        } else if admission == Admission::Probe {
            limits.remove(&key);
        }
    }
}

/// Pause after the `strikes`-th consecutive 429 without `Retry-After`: doubling from
/// [`BASE_PAUSE`] up to [`MAX_PAUSE`], drawn from [d/2, d].
pub fn pause_after(strikes: u32, jitter: f64) -> Duration {
    let exp = strikes.saturating_sub(1).min(16);
    let raw = BASE_PAUSE.saturating_mul(1 << exp).min(MAX_PAUSE);
    raw.div_f64(2.0) + raw.div_f64(2.0).mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_pauses_every_call_of_the_limit_then_one_probes() {
        let gate = RateGate::default();
        let key = LimitKey::new("https://api.leen.dev/v1", "k");
        let other = LimitKey::new("https://api.leen.dev/v1", "other-key");
        let t0 = Instant::now();
        assert_eq!(gate.admit_at(key, t0), Admission::Go);
        gate.report_at(
            key,
            Admission::Go,
            true,
            Some(Duration::from_secs(10)),
            0.5,
            t0,
        );
        // Every other call of the limit waits for the rest of the pause; another key does not.
        assert_eq!(
            gate.admit_at(key, t0 + Duration::from_secs(4)),
            Admission::Wait(Duration::from_secs(6))
        );
        assert_eq!(gate.admit_at(other, t0), Admission::Go);
        // After it, exactly one probe; the others keep waiting for its answer.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(gate.admit_at(key, t1), Admission::Probe);
        // The others wait a moment for its answer, not for the probe's time-out.
        assert_eq!(
            gate.admit_at(key, t1 + Duration::from_millis(10)),
            Admission::Wait(WHILE_PROBING)
        );
        // The probe is rate limited again: a new pause, a new probe after it.
        gate.report_at(key, Admission::Probe, true, None, 1.0, t1);
        assert_eq!(
            gate.admit_at(key, t1 + Duration::from_secs(1)),
            Admission::Wait(Duration::from_secs(3))
        );
        let t2 = t1 + Duration::from_secs(4);
        assert_eq!(gate.admit_at(key, t2), Admission::Probe);
        gate.report_at(key, Admission::Probe, false, None, 1.0, t2);
        assert_eq!(gate.admit_at(key, t2), Admission::Go);
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced_after_its_time_out() {
        let gate = RateGate::default();
        let key = LimitKey::new("https://api.leen.dev/v1", "k");
        let t0 = Instant::now();
        gate.report_at(
            key,
            Admission::Go,
            true,
            Some(Duration::from_secs(1)),
            0.5,
            t0,
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(gate.admit_at(key, t1), Admission::Probe);
        assert_eq!(
            gate.admit_at(key, t1 + PROBE_TIMEOUT - Duration::from_millis(1)),
            Admission::Wait(WHILE_PROBING)
        );
        assert_eq!(gate.admit_at(key, t1 + PROBE_TIMEOUT), Admission::Probe);
    }

    #[test]
    fn pauses_without_retry_after_double_and_are_capped() {
        assert_eq!(pause_after(1, 1.0), BASE_PAUSE);
        assert_eq!(pause_after(2, 1.0), BASE_PAUSE * 2);
        assert_eq!(pause_after(30, 1.0), MAX_PAUSE);
        assert_eq!(pause_after(1, 0.0), BASE_PAUSE / 2);
    }
}
