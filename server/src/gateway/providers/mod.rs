//! Model providers: the built-in `dummy` and any OpenAI-compatible endpoint.

pub mod dummy;
pub mod openai;

use futures::Stream;
use std::pin::Pin;

pub use app::domain::bound::Kind;

pub use app::domain::usage::Usage;

/// One streamed event.
#[derive(Debug, Clone)]
pub struct Chunk {
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
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, ProviderError>> + Send>>;

pub enum Reply {
    Json {
        body: serde_json::Value,
        usage: Usage,
    },
    Stream(ChunkStream),
}
