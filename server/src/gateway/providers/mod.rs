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
