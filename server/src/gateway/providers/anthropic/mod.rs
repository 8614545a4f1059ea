//! Anthropic's Messages API, natively for `/v1/messages` callers and
//! translated for chat completions callers.

mod stream;
#[cfg(test)]
mod tests;
mod to_chat;
mod to_messages;

use super::sse;
use super::{classify, ChunkStream, Kind, ProviderError, Reply, Usage};
use futures::StreamExt;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The API version every request names.
const VERSION: &str = "2023-06-01";

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
    http: &reqwest::Client,
    target: &Target<'_>,
    wire: Kind,
    body: Value,
    stream: bool,
    include_usage: bool,
) -> Result<Reply, ProviderError> {
    let chat = match wire {
        Kind::Messages => false,
        Kind::Chat => true,
        other => {
            return Err(ProviderError::Unsupported(format!(
                "Anthropic models serve chat completions and messages, not {other:?} calls"
            )))
        }
    };
    let mut body = if chat {
        to_messages::request(&body).map_err(ProviderError::Unsupported)?
    } else {
        body
    };
    set_model(&mut body, target)?;
    let (resp, url) = post(http, target, "/v1/messages", &body).await?;
    let created = unix_now();
    match (stream, chat) {
        (false, _) => {
            let reply: Value = resp.json().await.map_err(|e| classify(e, &url))?;
            if chat {
                let (body, usage) = to_chat::reply(&reply, created);
                return Ok(Reply::Json {
                    body,
                    usage: usage.unwrap_or_default(),
                });
            }
            let usage = Usage::from_anthropic(&reply["usage"]).unwrap_or_default();
            Ok(Reply::Json { body: reply, usage })
        }
        (true, false) => {
            let mut relay = stream::NativeStream::default();
            let chunks = sse::events(resp, url).map(move |e| e.and_then(|e| relay.chunk(e)));
            Ok(Reply::Stream(Box::pin(chunks)))
        }
        (true, true) => {
            let mut chat = to_chat::ChatStream::new(created, include_usage);
            let chunks = sse::events(resp, url).filter_map(move |e| {
                let chunk = e.and_then(|e| chat.chunk(&e.data)).transpose();
                futures::future::ready(chunk)
            });
            Ok(Reply::Stream(Box::pin(chunks) as ChunkStream))
        }
    }
}

/// Counts the input tokens of a Messages-shaped body: `{"input_tokens": N}`.
pub async fn count_tokens(
    http: &reqwest::Client,
    target: &Target<'_>,
    mut body: Value,
) -> Result<Value, ProviderError> {
    set_model(&mut body, target)?;
    if let Some(map) = body.as_object_mut() {
        // The counting endpoint refuses the fields that only steer generation.
        for k in GENERATION_ONLY {
            map.remove(k);
        }
    }
    let (resp, url) = post(http, target, "/v1/messages/count_tokens", &body).await?;
    resp.json().await.map_err(|e| classify(e, &url))
}

const GENERATION_ONLY: [&str; 9] = [
    "max_tokens",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "service_tier",
    "container",
];

fn set_model(body: &mut Value, target: &Target<'_>) -> Result<(), ProviderError> {
    let map = body.as_object_mut().ok_or_else(|| {
        ProviderError::Unsupported("the request body must be a JSON object".into())
    })?;
    map.insert("model".into(), Value::String(target.upstream_model.into()));
    Ok(())
}

/// POSTs `body` to `path` under the base URL; a non-2xx answer is a failure
/// that quotes the start of what the upstream said.
async fn post(
    http: &reqwest::Client,
    target: &Target<'_>,
    path: &str,
    body: &Value,
) -> Result<(reqwest::Response, String), ProviderError> {
    let url = format!("{}{path}", target.base_url.trim_end_matches('/'));
    let mut req = http
        .post(&url)
        .timeout(target.timeout)
        .header("anthropic-version", VERSION)
        .json(body);
    if let Some(key) = target.api_key_env.and_then(|v| std::env::var(v).ok()) {
        req = req.header("x-api-key", key);
    }
    let resp = req.send().await.map_err(|e| classify(e, &url))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(ProviderError::from_status(resp).await);
    }
    Ok((resp, url))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
