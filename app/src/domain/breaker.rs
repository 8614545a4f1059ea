//! Passive health for one deployment: a circuit breaker, and the choice of
//! deployment (weighted least outstanding requests among those that admit).
//!
//! A breaker opens on a failure that says the upstream cannot serve now
//! (connect error, timeout, 5xx, 429, quota or billing error), stays open for
//! a cool-down (what `Retry-After` asks for after a 429; otherwise 5 s,
//! doubling with each failure in a row up to 60 s; 60 s at least for a quota
//! error), then lets exactly one probe call through: its success closes the
//! breaker, its failure opens it again for longer.

use serde::{Deserialize, Serialize};

/// Why an attempt failed, as far as health goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Timeout,
    Server,
    RateLimited { retry_after_ms: Option<i64> },
    Quota,
}

pub const BASE_COOLDOWN_MS: i64 = 5_000;
pub const MAX_COOLDOWN_MS: i64 = 60_000;
/// The longest `Retry-After` honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER_MS: i64 = 600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Closed,
    Open {
        until_ms: i64,
    },
    /// One probe call is in flight.
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    pub state: State,
    /// Failures in a row (reset by a success).
    pub failures: u32,
}

/// Whether a breaker lets a call through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Only as the one probe after a cool-down.
    Probe,
    No,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            failures: 0,
        }
    }
}

impl Breaker {
    pub fn admits(&self, now_ms: i64) -> Admit {
        match self.state {
            State::Closed => Admit::Yes,
            State::Open { until_ms } if now_ms >= until_ms => Admit::Probe,
            _ => Admit::No,
        }
    }

    /// Marks the probe as started, so no other call is let through meanwhile.
    pub fn start_probe(&mut self) {
        self.state = State::HalfOpen;
    }

    pub fn success(&mut self) {
        *self = Breaker::default();
    }

    pub fn failure(&mut self, f: Failure, now_ms: i64) {
        if let State::Open { until_ms } = self.state {
            // Calls already in flight when the breaker opened: their failures
            // say nothing new, so they do not lengthen the cool-down (except
            // a longer Retry-After).
            if let Failure::RateLimited {
                retry_after_ms: Some(ms),
            } = f
            {
                let asked = now_ms.saturating_add(ms.clamp(1_000, MAX_RETRY_AFTER_MS));
                self.state = State::Open {
                    until_ms: until_ms.max(asked),
                };
            }
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let backoff = BASE_COOLDOWN_MS
            .saturating_mul(1i64 << (self.failures - 1).min(10))
            .min(MAX_COOLDOWN_MS);
        let cooldown = match f {
            Failure::RateLimited {
                retry_after_ms: Some(ms),
            } => ms.clamp(1_000, MAX_RETRY_AFTER_MS),
            Failure::Quota => backoff.max(MAX_COOLDOWN_MS),
            _ => backoff,
        };
        self.state = State::Open {
            until_ms: now_ms.saturating_add(cooldown),
        };
    }

    /// A probe that ended with no verdict (the caller went away, or the
    /// request itself was bad): the next call may probe again.
    pub fn abandon_probe(&mut self, now_ms: i64) {
        if self.state == State::HalfOpen {
            self.state = State::Open { until_ms: now_ms };
        }
    }
}

/// One deployment as the chooser sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub weight: u32,
    pub in_flight: u32,
    pub max_in_flight: Option<u32>,
    pub admit: Admit,
}

/// Weighted least outstanding requests: among the deployments that admit a
/// call and have room, the one with the fewest calls in flight for its
/// weight (`(in_flight + 1) / weight`); ties go to the heavier, then the
/// first. A deployment due a probe is chosen first: one call at a time
/// tests a recovering upstream (and if the probe fails, the call is retried
/// on another deployment like any failed attempt).
pub fn choose(candidates: &[Candidate], tried: &[usize]) -> Option<usize> {
    let usable = |i: &usize| {
        let c = &candidates[*i];
        !tried.contains(i) && c.max_in_flight.is_none_or(|m| c.in_flight < m)
    };
    let best = |admit: Admit| {
        (0..candidates.len())
            .filter(usable)
            .filter(|i| candidates[*i].admit == admit)
            .min_by(|a, b| {
                let (ca, cb) = (&candidates[*a], &candidates[*b]);
                // (ia+1)/wa < (ib+1)/wb  ⇔  (ia+1)·wb < (ib+1)·wa
                let la = u64::from(ca.in_flight + 1) * u64::from(cb.weight.max(1));
                let lb = u64::from(cb.in_flight + 1) * u64::from(ca.weight.max(1));
                la.cmp(&lb).then(cb.weight.cmp(&ca.weight)).then(a.cmp(b))
            })
    };
    best(Admit::Probe).or_else(|| best(Admit::Yes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(weight: u32, in_flight: u32) -> Candidate {
        Candidate {
            weight,
            in_flight,
            max_in_flight: None,
            admit: Admit::Yes,
        }
    }

    #[test]
    fn opens_cools_down_probes_once_and_closes() {
        let mut b = Breaker::default();
        b.failure(Failure::Server, 0);
        assert_eq!(b.admits(4_999), Admit::No);
        assert_eq!(b.admits(5_000), Admit::Probe);
        b.start_probe();
        assert_eq!(b.admits(5_001), Admit::No, "one probe at a time");
        b.failure(Failure::Timeout, 5_001);
        assert_eq!(
            b.admits(5_001 + 9_999),
            Admit::No,
            "the second failure in a row waits twice as long"
        );
        assert_eq!(b.admits(5_001 + 10_000), Admit::Probe);
        b.start_probe();
        b.success();
        assert_eq!((b.admits(0), b.failures), (Admit::Yes, 0));
    }

    #[test]
    fn failures_of_calls_already_in_flight_do_not_stretch_the_cool_down() {
        let mut b = Breaker::default();
        b.failure(Failure::Connect, 0);
        for _ in 0..5 {
            b.failure(Failure::Connect, 100);
        }
        assert_eq!((b.failures, b.admits(5_000)), (1, Admit::Probe));
    }

    #[test]
    fn honours_retry_after_and_waits_longer_on_quota() {
        let mut b = Breaker::default();
        b.failure(
            Failure::RateLimited {
                retry_after_ms: Some(30_000),
            },
            0,
        );
        assert_eq!(b.admits(29_999), Admit::No);
        assert_eq!(b.admits(30_000), Admit::Probe);
        let mut q = Breaker::default();
        q.failure(Failure::Quota, 0);
        assert_eq!(q.admits(59_999), Admit::No);
        for _ in 0..50 {
            q.start_probe();
            q.failure(Failure::Connect, 0);
        }
        assert_eq!(
            q.admits(MAX_COOLDOWN_MS),
            Admit::Probe,
            "the cool-down is capped"
        );
    }

    #[test]
    fn weighted_least_outstanding() {
        assert_eq!(choose(&[c(1, 3), c(1, 1), c(1, 2)], &[]), Some(1));
        // weight 3 with 2 in flight (1.0) beats weight 1 with 0 in flight (1.0)? tie → heavier.
        assert_eq!(choose(&[c(1, 0), c(3, 2)], &[]), Some(1));
        assert_eq!(choose(&[c(1, 0), c(3, 3)], &[]), Some(0));
        assert_eq!(
            choose(&[c(1, 0), c(1, 0)], &[0]),
            Some(1),
            "tried ones are skipped"
        );
        let full = Candidate {
            max_in_flight: Some(2),
            ..c(5, 2)
        };
        assert_eq!(
            choose(&[full, c(1, 9)], &[]),
            Some(1),
            "a full deployment takes no more"
        );
        let probe = Candidate {
            admit: Admit::Probe,
            ..c(1, 0)
        };
        let shut = Candidate {
            admit: Admit::No,
            ..c(1, 0)
        };
        assert_eq!(
            choose(&[c(1, 0), probe], &[]),
            Some(1),
            "a due probe goes first"
        );
        assert_eq!(choose(&[shut, probe], &[]), Some(1));
        assert_eq!(choose(&[shut], &[]), None);
    }
}
