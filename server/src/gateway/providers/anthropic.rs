//! Anthropic's Messages API, natively for `/v1/messages` callers and
//! translated for chat completions callers.

use super::{Kind, ProviderError, Reply};
use serde_json::Value;
use std::time::Duration;

pub struct Target<'a> {
    /// As Anthropic's SDKs take it, without `/v1`.
    pub base_url: &'a str,
    pub api_key_env: Option<&'a str>,
    pub upstream_model: &'a str,
    pub timeout: Duration,
}

/// Sends a call whose body is in the protocol `wire`: `Kind::Messages` goes
/// upstream as it is; `Kind::Chat` is translated to a Messages request and
/// its reply (JSON or stream) back to chat completions.
pub async fn call(
    _http: &reqwest::Client,
    _target: &Target<'_>,
    wire: Kind,
    _body: Value,
    _stream: bool,
    _include_usage: bool,
) -> Result<Reply, ProviderError> {
    Err(ProviderError::Unsupported(format!(
        "the anthropic provider does not serve {wire:?} calls yet"
    )))
}

/// Asks Anthropic to count a Messages request's input tokens (free upstream).
pub async fn count_tokens(
    _http: &reqwest::Client,
    _target: &Target<'_>,
    _body: Value,
) -> Result<Value, ProviderError> {
    Err(ProviderError::Unsupported(
        "counting tokens upstream is not built yet".into(),
    ))
}
