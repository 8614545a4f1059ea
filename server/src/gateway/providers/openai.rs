//! Any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server).
//! Unknown request fields pass through; streams are relayed chunk by chunk,
//! with `stream_options.include_usage` requested so streamed usage is exact.

use super::sse::{self, SseEvent};
use super::{classify, Chunk, ChunkStream, Kind, ProviderError, Reply, Usage};
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;

pub struct Target<'a> {
    pub base_url: &'a str,
    pub api_key_env: Option<&'a str>,
    pub upstream_model: &'a str,
    pub timeout: Duration,
}

pub async fn call(
    http: &reqwest::Client,
    target: &Target<'_>,
    kind: Kind,
    mut body: Value,
    stream: bool,
    include_usage: bool,
) -> Result<Reply, ProviderError> {
    body["model"] = Value::String(target.upstream_model.to_string());
    if stream && kind != Kind::Responses {
        let mut opts = body
            .get("stream_options")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        opts["include_usage"] = Value::Bool(true);
        body["stream_options"] = opts;
    }
    let url = format!("{}{}", target.base_url, kind.path());
    let mut req = http.post(&url).timeout(target.timeout).json(&body);
    if let Some(var) = target.api_key_env {
        if let Ok(key) = std::env::var(var) {
            req = req.bearer_auth(key);
        }
    }
    let resp = req.send().await.map_err(|e| classify(e, &url))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(ProviderError::from_status(resp).await);
    }
    if !stream {
        let body: Value = resp.json().await.map_err(|e| classify(e, &url))?;
        let usage = if kind == Kind::Responses {
            Usage::from_responses(&body["usage"])
        } else {
            Usage::from_openai(&body["usage"])
        };
        let usage = usage.unwrap_or_default();
        return Ok(Reply::Json { body, usage });
    }
    Ok(Reply::Stream(sse_chunks(resp, url, kind, include_usage)))
}

/// Reads the upstream's events into chunks: usage and content deltas.
fn sse_chunks(
    resp: reqwest::Response,
    url: String,
    kind: Kind,
    include_usage: bool,
) -> ChunkStream {
    Box::pin(sse::events(resp, url).map(move |e| e.map(|e| read_event(e, kind, include_usage))))
}

fn read_event(e: SseEvent, kind: Kind, include_usage: bool) -> Chunk {
    let json: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
    if kind == Kind::Responses {
        // Named events; usage comes with the final response object.
        let ty = json["type"].as_str().unwrap_or_default().to_string();
        let usage = matches!(
            ty.as_str(),
            "response.completed" | "response.incomplete" | "response.failed"
        )
        .then(|| Usage::from_responses(&json["response"]["usage"]))
        .flatten();
        return Chunk {
            tokens: u64::from(ty.ends_with(".delta")),
            event: e.event.or(Some(ty)),
            data: e.data,
            usage,
            forward: true,
        };
    }
    let usage = Usage::from_openai(&json["usage"]);
    let usage_only = usage.is_some() && json["choices"].as_array().is_some_and(|c| c.is_empty());
    Chunk {
        event: None,
        tokens: content_deltas(&json),
        data: e.data,
        usage,
        forward: include_usage || !usage_only,
    }
}

/// Choices in a chunk that carry content: one token each.
fn content_deltas(json: &Value) -> u64 {
    json["choices"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| {
                    c["delta"]["content"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty())
                        || c["text"].as_str().is_some_and(|s| !s.is_empty())
                        || c["delta"]["tool_calls"].is_array()
                })
                .count() as u64
        })
        .unwrap_or(0)
}
