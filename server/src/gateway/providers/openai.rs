//! Any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server).
//! Unknown request fields pass through; streams are relayed chunk by chunk,
//! with `stream_options.include_usage` requested so streamed usage is exact.

use super::{Chunk, ChunkStream, Kind, ProviderError, Reply, Usage};
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;

pub struct Target<'a> {
    pub base_url: &'a str,
    pub api_key_env: Option<&'a str>,
    pub upstream_model: &'a str,
    pub timeout: Duration,
}

fn classify(e: reqwest::Error, what: &str) -> ProviderError {
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

pub async fn call(
    http: &reqwest::Client,
    target: &Target<'_>,
    kind: Kind,
    mut body: Value,
    stream: bool,
    include_usage: bool,
) -> Result<Reply, ProviderError> {
    body["model"] = Value::String(target.upstream_model.to_string());
    if stream {
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
        let text = resp.text().await.unwrap_or_default();
        let snippet: String = text.chars().take(300).collect();
        return Err(ProviderError::Failed(format!(
            "the upstream model server answered {status}: {snippet}"
        )));
    }
    if !stream {
        let body: Value = resp.json().await.map_err(|e| classify(e, &url))?;
        let usage = Usage::from_openai(&body["usage"]).unwrap_or_default();
        return Ok(Reply::Json { body, usage });
    }
    Ok(Reply::Stream(sse_chunks(resp, url, include_usage)))
}

/// Splits an SSE byte stream into events and reads usage and content deltas.
fn sse_chunks(resp: reqwest::Response, url: String, include_usage: bool) -> ChunkStream {
    let bytes = resp.bytes_stream();
    let state = (bytes, Vec::<u8>::new(), false);
    let s = futures::stream::unfold(state, move |(mut bytes, mut buf, mut done)| {
        let url = url.clone();
        async move {
            loop {
                if let Some(event) = take_event(&mut buf) {
                    match read_event(&event, include_usage) {
                        Event::Empty => continue,
                        Event::Done => {
                            done = true;
                            buf.clear();
                            continue;
                        }
                        Event::Data(chunk) => return Some((Ok(chunk), (bytes, buf, done))),
                    }
                }
                if done {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(b)) => buf.extend_from_slice(&b),
                    Some(Err(e)) => {
                        done = true;
                        return Some((Err(classify(e, &url)), (bytes, buf, done)));
                    }
                    None => {
                        done = true;
                        if buf.iter().all(u8::is_ascii_whitespace) {
                            return None;
                        }
                        buf.extend_from_slice(b"\n\n");
                    }
                }
            }
        }
    });
    Box::pin(s)
}

/// One SSE event, read.
enum Event {
    /// No `data:` lines (a comment or a keep-alive).
    Empty,
    /// `data: [DONE]`: the stream is over.
    Done,
    Data(Chunk),
}

fn read_event(event: &str, include_usage: bool) -> Event {
    let data: Vec<&str> = event
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    if data.is_empty() {
        return Event::Empty;
    }
    let payload = data.join("\n");
    if payload == "[DONE]" {
        return Event::Done;
    }
    let json: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
    let usage = Usage::from_openai(&json["usage"]);
    let usage_only = usage.is_some() && json["choices"].as_array().is_some_and(|c| c.is_empty());
    Event::Data(Chunk {
        tokens: content_deltas(&json),
        data: payload,
        usage,
        forward: include_usage || !usage_only,
    })
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
                })
                .count() as u64
        })
        .unwrap_or(0)
}

/// Removes and returns the first complete SSE event from `buf`.
fn take_event(buf: &mut Vec<u8>) -> Option<String> {
    let text = std::str::from_utf8(buf).ok()?;
    let (end, sep) = [("\r\n\r\n", 4), ("\n\n", 2)]
        .iter()
        .filter_map(|(s, n)| text.find(s).map(|i| (i, *n)))
        .min_by_key(|(i, _)| *i)?;
    let event = text[..end].to_string();
    buf.drain(..end + sep);
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::take_event;

    #[test]
    fn splits_events() {
        let mut buf = b"data: {\"a\":1}\n\ndata: [DONE]\r\n\r\npartial".to_vec();
        assert_eq!(take_event(&mut buf).as_deref(), Some("data: {\"a\":1}"));
        assert_eq!(take_event(&mut buf).as_deref(), Some("data: [DONE]"));
        assert_eq!(take_event(&mut buf), None);
        assert_eq!(buf, b"partial");
    }
}
