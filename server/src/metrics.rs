//! Prometheus metrics: counters and histograms kept in atomics, recorded at
//! a few choke points (the `track` layer for every `/v1` request, the
//! accountant for every ledger row, dispatch for every failed upstream
//! attempt), and written out in the text exposition format by `scrape`.
//!
//! Label values come from fixed sets only: endpoints, status codes, error
//! codes, call outcomes, and the names of models in the catalog. A request
//! for a model the catalog does not have is counted under `model=""`, so a
//! caller cannot grow the series by inventing names.

mod histogram;
mod scrape;

use crate::gateway::error::{ApiError, ErrorCode};
use app::domain::outcome::CallOutcome;
use app::domain::usage::Usage;
use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use histogram::Histogram;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use scrape::metrics;

/// The `/v1` endpoints, as the `endpoint` label names them.
pub const ENDPOINTS: [&str; 11] = [
    "chat_completions",
    "completions",
    "embeddings",
    "responses",
    "responses_get",
    "responses_delete",
    "messages",
    "count_tokens",
    "models",
    "balance",
    "other",
];

/// Status codes counted as themselves; any other is counted as its class
/// (`2xx`, `4xx`, `5xx`, …).
const STATUSES: [u16; 19] = [
    200, 201, 204, 400, 401, 402, 403, 404, 405, 408, 409, 413, 415, 422, 429, 500, 502, 503, 504,
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const STATUS_SLOTS: usize = STATUSES.len() + CLASSES.len();

/// Why an upstream attempt failed, as the `reason` label says.
pub const UPSTREAM_REASONS: [&str; 5] = [
    "status",
    "timeout",
    "failed",
    "unsupported",
    "no_deployment",
];

/// The model a `/v1` call asked for, when it is in the catalog: set on the
/// response by the handler, read by `track`.
#[derive(Debug, Clone)]
pub struct CallModel(pub String);

/// Time spent waiting on upstream servers before the response head was
/// ready: set on the response by the metered call, read by `track`.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTime(pub Duration);

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Everything counted per model.
pub struct ModelSeries {
    requests: [[AtomicU64; STATUS_SLOTS]; ENDPOINTS.len()],
    /// Ledger rows queued, by `CallOutcome`.
    calls: [AtomicU64; CallOutcome::ALL.len()],
    input_fresh: AtomicU64,
    input_cached: AtomicU64,
    input_cache_write: AtomicU64,
    output: AtomicU64,
    reasoning: AtomicU64,
    coins_micro: AtomicU64,
    upstream_errors: [AtomicU64; UPSTREAM_REASONS.len()],
}

impl Default for ModelSeries {
    fn default() -> Self {
        ModelSeries {
            requests: std::array::from_fn(|_| zeros()),
            calls: zeros(),
            input_fresh: AtomicU64::new(0),
            input_cached: AtomicU64::new(0),
            input_cache_write: AtomicU64::new(0),
            output: AtomicU64::new(0),
            reasoning: AtomicU64::new(0),
            coins_micro: AtomicU64::new(0),
            upstream_errors: zeros(),
        }
    }
}

/// The latency of one endpoint: the whole request (until the response head
/// is ready: the first byte of a stream), the part spent waiting on
/// upstreams, and the rest, the gateway's own overhead.
#[derive(Default)]
struct Latency {
    total: Histogram,
    upstream: Histogram,
    overhead: Histogram,
}

#[derive(Default)]
pub struct Metrics {
    /// Copy-on-write: readers never lock; a model seen for the first time
    /// takes `grow` and swaps in a bigger map.
    models: ArcSwap<HashMap<String, Arc<ModelSeries>>>,
    grow: Mutex<()>,
    latency: [Latency; ENDPOINTS.len()],
    errors: [[AtomicU64; ApiError::CODES.len()]; ENDPOINTS.len()],
}

fn status_slot(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or_else(|| STATUSES.len() + usize::from((status / 100).clamp(1, 5) - 1))
}

fn status_label(slot: usize) -> String {
    STATUSES.get(slot).map_or_else(
        || CLASSES[slot - STATUSES.len()].to_string(),
        u16::to_string,
    )
}

/// The `endpoint` label of a request, or `None` outside `/v1`.
pub fn endpoint_of(method: &Method, path: &str) -> Option<usize> {
    let rest = path.strip_prefix("/v1/")?;
    let name = match rest {
        "chat/completions" => "chat_completions",
        "completions" => "completions",
        "embeddings" => "embeddings",
        "responses" => "responses",
        "messages" => "messages",
        "messages/count_tokens" => "count_tokens",
        "models" => "models",
        "balance" => "balance",
        r if r
            .strip_prefix("responses/")
            .is_some_and(|id| !id.contains('/')) =>
        {
            if method == Method::DELETE {
                "responses_delete"
            } else {
                "responses_get"
            }
        }
        _ => "other",
    };
    ENDPOINTS.iter().position(|e| *e == name)
}

impl Metrics {
    /// The series of a model. Callers pass only names from the catalog (or
    /// "" for none), which keeps the label bounded.
    pub fn model(&self, name: &str) -> Arc<ModelSeries> {
        if let Some(s) = self.models.load().get(name) {
            return s.clone();
        }
        let _grow = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = (**self.models.load()).clone();
        let s = map.entry(name.to_string()).or_default().clone();
        self.models.store(Arc::new(map));
        s
    }

    /// One ledger row: a call settled (or refused) on `model`.
    pub fn ledger_row(&self, model: &str, outcome: CallOutcome, usage: &Usage, coins: i64) {
        let s = self.model(model);
        if let Some(i) = CallOutcome::ALL.iter().position(|o| *o == outcome) {
            add(&s.calls[i], 1);
        }
        add(&s.input_fresh, usage.input);
        add(&s.input_cached, usage.cached_input);
        add(&s.input_cache_write, usage.cache_write);
        add(&s.output, usage.output);
        add(&s.reasoning, usage.reasoning);
        add(&s.coins_micro, u64::try_from(coins).unwrap_or(0));
    }

    /// One failed upstream attempt for `model`; `reason` is one of `UPSTREAM_REASONS`.
    pub fn upstream_error(&self, model: &str, reason: &str) {
        if let Some(i) = UPSTREAM_REASONS.iter().position(|r| *r == reason) {
            add(&self.model(model).upstream_errors[i], 1);
        }
    }

    fn request(&self, endpoint: usize, resp: &Response, total: Duration) {
        let model = resp.extensions().get::<CallModel>().map_or("", |m| &m.0);
        add(
            &self.model(model).requests[endpoint][status_slot(resp.status().as_u16())],
            1,
        );
        if let Some(ErrorCode(code)) = resp.extensions().get::<ErrorCode>() {
            if let Some(i) = ApiError::CODES.iter().position(|c| c == code) {
                add(&self.errors[endpoint][i], 1);
            }
        }
        let l = &self.latency[endpoint];
        l.total.observe(total);
        let upstream = resp
            .extensions()
            .get::<UpstreamTime>()
            .map_or(Duration::ZERO, |u| u.0.min(total));
        if !upstream.is_zero() {
            l.upstream.observe(upstream);
        }
        l.overhead.observe(total - upstream);
    }
}

/// Counts every `/v1` request by endpoint, model and status, with its
/// latency and, for an error, its code. Outermost but for the request id,
/// so the body limit's 413s are counted too.
pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let Some(endpoint) = endpoint_of(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let started = Instant::now();
    let resp = next.run(req).await;
    m.request(endpoint, &resp, started.elapsed());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_statuses_map_to_fixed_labels() {
        let e = |m: Method, p: &str| endpoint_of(&m, p).map(|i| ENDPOINTS[i]);
        assert_eq!(
            e(Method::POST, "/v1/chat/completions"),
            Some("chat_completions")
        );
        assert_eq!(
            e(Method::GET, "/v1/responses/resp_1"),
            Some("responses_get")
        );
        assert_eq!(
            e(Method::DELETE, "/v1/responses/resp_1"),
            Some("responses_delete")
        );
        assert_eq!(e(Method::GET, "/v1/responses/a/b"), Some("other"));
        assert_eq!(e(Method::GET, "/v1/anything"), Some("other"));
        assert_eq!(e(Method::GET, "/healthz"), None);
        assert_eq!(status_label(status_slot(404)), "404");
        assert_eq!(status_label(status_slot(418)), "4xx");
        assert_eq!(status_label(status_slot(599)), "5xx");
        assert_eq!(status_label(status_slot(0)), "1xx");
    }
}
