//! Each deployment's live state on this instance (calls in flight, its
//! circuit breaker, its last error) and the choice of deployment for a call.
//! Passive health: what calls see is all it knows; nothing probes on a timer.

use super::now_ms;
use crate::domain::breaker::{self, Admit, Breaker, Candidate, Failure};
use crate::domain::config::{Deployment, ModelSpec};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
pub struct DeploymentState {
    in_flight: AtomicU32,
    served: AtomicU64,
    failed: AtomicU64,
    breaker: Mutex<Breaker>,
    last_error: Mutex<Option<(i64, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A call's hold on a deployment: counted in flight until dropped, and the
/// one probe of a recovering deployment until it reports.
pub struct Attempt {
    pub deployment: String,
    state: Arc<DeploymentState>,
    probe: bool,
    reported: bool,
}

impl Attempt {
    pub fn succeeded(mut self) -> Attempt {
        self.reported = true;
        self.state.served.fetch_add(1, Ordering::Relaxed);
        lock(&self.state.breaker).success();
        self
    }

    pub fn failed(mut self, f: Option<Failure>, message: &str) {
        self.reported = true;
        let now = now_ms();
        *lock(&self.state.last_error) = Some((now, message.chars().take(300).collect()));
        match f {
            Some(f) => {
                self.state.failed.fetch_add(1, Ordering::Relaxed);
                lock(&self.state.breaker).failure(f, now);
            }
            // The request was at fault, not the upstream.
            None => lock(&self.state.breaker).abandon_probe(now),
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.probe && !self.reported {
            lock(&self.state.breaker).abandon_probe(now_ms());
        }
    }
}

/// One deployment's health, for `/healthz` and the console.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub model: String,
    pub deployment: String,
    /// `closed`, `open` or `probing`.
    pub breaker: &'static str,
    pub open_for_ms: i64,
    pub in_flight: u32,
    pub served: u64,
    pub failed: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

/// One model's deployments as last seen, with their states.
type ModelStates = Vec<(Deployment, Arc<DeploymentState>)>;

#[derive(Default, Clone)]
pub struct Balancer {
    states: Arc<Mutex<HashMap<String, ModelStates>>>,
}

impl Balancer {
    /// The states of a model's deployments, looked up by the model's name
    /// (no allocation on the call path). A deployment's state is kept while
    /// its name and settings stay the same; a changed one starts afresh, and
    /// the states of deployments no longer listed are dropped.
    fn states(&self, spec: &ModelSpec) -> Vec<Arc<DeploymentState>> {
        let mut map = lock(&self.states);
        if let Some(known) = map.get(&spec.name) {
            if known.len() == spec.deployments.len()
                && known
                    .iter()
                    .zip(&spec.deployments)
                    .all(|((d, _), s)| d == s)
            {
                return known.iter().map(|(_, st)| st.clone()).collect();
            }
        }
        let old = map.remove(&spec.name).unwrap_or_default();
        let fresh: ModelStates = spec
            .deployments
            .iter()
            .map(|d| {
                let kept = old.iter().find(|(o, _)| o == d).map(|(_, st)| st.clone());
                (d.clone(), kept.unwrap_or_default())
            })
            .collect();
        let out = fresh.iter().map(|(_, st)| st.clone()).collect();
        map.insert(spec.name.clone(), fresh);
        out
    }

    /// Picks a deployment not yet `tried` for this call and counts the call
    /// in flight there; `None` when none can take it now.
    pub fn begin(&self, spec: &ModelSpec, tried: &[usize]) -> Option<(usize, Attempt)> {
        let states = self.states(spec);
        let now = now_ms();
        let candidates: Vec<Candidate> = spec
            .deployments
            .iter()
            .zip(&states)
            .map(|(d, s)| Candidate {
                weight: d.weight,
                in_flight: s.in_flight.load(Ordering::Relaxed),
                max_in_flight: d.max_in_flight,
                admit: lock(&s.breaker).admits(now),
            })
            .collect();
        let i = breaker::choose(&candidates, tried)?;
        let state = states[i].clone();
        let probe = {
            let mut b = lock(&state.breaker);
            match b.admits(now) {
                Admit::Yes => false,
                Admit::Probe => {
                    b.start_probe();
                    true
                }
                // Another call took the probe meanwhile.
                Admit::No => return None,
            }
        };
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Some((
            i,
            Attempt {
                deployment: spec.deployments[i].name.clone(),
                state,
                probe,
                reported: false,
            },
        ))
    }

    /// Every known deployment of the models in `specs`, in catalog order.
    pub fn health<'a>(&self, specs: impl Iterator<Item = &'a ModelSpec>) -> Vec<Health> {
        let now = now_ms();
        let mut out = Vec::new();
        for spec in specs {
            for (d, s) in spec.deployments.iter().zip(self.states(spec)) {
                let b = *lock(&s.breaker);
                let (state, open_for_ms) = match b.state {
                    breaker::State::Closed => ("closed", 0),
                    breaker::State::Open { until_ms } => ("open", (until_ms - now).max(0)),
                    breaker::State::HalfOpen => ("probing", 0),
                };
                let last = lock(&s.last_error).clone();
                out.push(Health {
                    model: spec.name.clone(),
                    deployment: d.name.clone(),
                    breaker: state,
                    open_for_ms,
                    in_flight: s.in_flight.load(Ordering::Relaxed),
                    served: s.served.load(Ordering::Relaxed),
                    failed: s.failed.load(Ordering::Relaxed),
                    last_error_at: last.as_ref().map(|l| l.0),
                    last_error: last.map(|l| l.1),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::Provider;

    fn spec(url: &str) -> ModelSpec {
        let d = |name: &str| Deployment {
            name: name.into(),
            provider: Provider::OpenAi {
                base_url: url.into(),
                api_key_env: None,
                upstream_model: "m".into(),
                native_responses: false,
            },
            timeout_secs: None,
            weight: 1,
            max_in_flight: None,
        };
        ModelSpec {
            name: "m".into(),
            deployments: vec![d("a"), d("b")],
            fallbacks: Vec::new(),
            price: Default::default(),
            max_output_tokens: None,
            consent_notice: None,
            timeout_secs: None,
            media: Default::default(),
            pass_through: Default::default(),
        }
    }

    #[test]
    fn state_lives_as_long_as_the_deployment_is_unchanged() {
        let b = Balancer::default();
        let s = spec("http://one/v1");
        let (i, attempt) = b.begin(&s, &[]).unwrap_or_else(|| panic!("a deployment"));
        attempt.failed(Some(Failure::Server), "boom");
        let open = |s: &ModelSpec| {
            b.health(std::iter::once(s))
                .iter()
                .filter(|h| h.breaker == "open")
                .count()
        };
        assert_eq!(open(&s), 1);
        assert_eq!(
            b.begin(&s, &[]).map(|(j, _)| j),
            Some(1 - i),
            "the open one is passed over"
        );
        assert_eq!(open(&s), 1, "the same config keeps the state");
        assert_eq!(
            open(&spec("http://two/v1")),
            0,
            "a changed upstream starts afresh"
        );
    }
}
