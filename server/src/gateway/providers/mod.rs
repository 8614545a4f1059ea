//! Model providers: the built-in `dummy` and any OpenAI-compatible endpoint.

pub mod anthropic;
pub mod dummy;
pub mod openai;
pub mod sse;

use futures::Stream;
use std::pin::Pin;

pub use app::domain::bound::Kind;

pub use app::domain::usage::Usage;

/// One streamed event.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The SSE `event:` name, for protocols that name their events (the
    /// Responses API and Anthropic's); `None` for chat completions.
    pub event: Option<String>,
    /// The JSON payload of one `data:` line, forwarded as is.
    pub data: String,
    /// Usage, when this chunk reports it.
    pub usage: Option<Usage>,
    /// Output tokens this chunk carried (one per content delta), used to
    /// charge a stream that ends before usage is reported.
    pub tokens: u64,
    /// Whether the client sees this chunk (a usage chunk it did not ask for is hidden).
    pub forward: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Timeout(String),
    /// The upstream answered with an error status.
    #[error("{message}")]
    Status {
        status: u16,
        /// What `Retry-After` asked for, in milliseconds.
        retry_after_ms: Option<i64>,
        /// An insufficient-quota or billing error (402, or OpenAI's
        /// `insufficient_quota` 429).
        quota: bool,
        message: String,
    },
    /// No deployment could take the call (all cooling down, or full).
    #[error("{0}")]
    Unavailable(String),
    /// The request cannot be expressed in the upstream's protocol (say,
    /// `n: 3` for Anthropic): the caller's error, answered with 400.
    #[error("{0}")]
    Unsupported(String),
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, ProviderError>> + Send>>;

pub enum Reply {
    Json {
        body: serde_json::Value,
        usage: Usage,
    },
    Stream(ChunkStream),
}

pub(crate) fn classify(e: reqwest::Error, what: &str) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout(format!(
            "the upstream model server did not answer in time ({what})"
        ))
    } else if e.is_connect() {
        ProviderError::Failed(format!(
            "cannot connect to the upstream model server ({what})"
        ))
    } else {
        ProviderError::Failed(format!("the upstream model server failed ({what}): {e}"))
    }
}

impl ProviderError {
    /// Reads an upstream's error reply: its status, `Retry-After`, whether
    /// it is about quota or billing, and a short snippet for the message.
    pub async fn from_status(resp: reqwest::Response) -> ProviderError {
        let status = resp.status();
        let retry_after_ms = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| (s * 1000.0).min(i64::MAX as f64) as i64);
        let text = resp.text().await.unwrap_or_default();
        let quota = status.as_u16() == 402
            || text.contains("insufficient_quota")
            || text.contains("billing_error");
        let snippet: String = text.chars().take(300).collect();
        ProviderError::Status {
            status: status.as_u16(),
            retry_after_ms,
            quota,
            message: format!("the upstream model server answered {status}: {snippet}"),
        }
    }

    /// How this error bears on the deployment's health: `None` when the
    /// upstream is fine and the request was at fault (another deployment
    /// would refuse it too, so it is not retried either).
    pub fn failure(&self) -> Option<app::domain::breaker::Failure> {
        use app::domain::breaker::Failure;
        match self {
            ProviderError::Failed(_) => Some(Failure::Connect),
            ProviderError::Timeout(_) => Some(Failure::Timeout),
            ProviderError::Status { quota: true, .. } => Some(Failure::Quota),
            ProviderError::Status {
                status: 429,
                retry_after_ms,
                ..
            } => Some(Failure::RateLimited {
                retry_after_ms: *retry_after_ms,
            }),
            ProviderError::Status { status, .. } if *status >= 500 || *status == 408 => {
                Some(Failure::Server)
            }
            ProviderError::Status { .. }
            | ProviderError::Unsupported(_)
            | ProviderError::Unavailable(_) => None,
        }
    }
}
