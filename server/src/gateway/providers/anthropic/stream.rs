//! Reading Anthropic's streamed events: the usage they report as they go,
//! and the native relay (events passed on unchanged, with their usage).

use super::super::{Chunk, ProviderError, Usage};
use crate::gateway::providers::sse::SseEvent;
use serde_json::Value;

/// Usage of a streamed message as far as it is known: `message_start` gives
/// the input side (and a first output count), each `message_delta` the
/// cumulative output (and sometimes the input fields again). Until the
/// first `message_delta`, output is at least the content deltas seen, so a
/// stream cut short is never charged less than it delivered.
#[derive(Debug, Default)]
pub struct StreamUsage {
    reported: Option<Usage>,
    deltas: u64,
    output_final: bool,
}

impl StreamUsage {
    /// Reads the `usage` of a `message_start` (its `message.usage`) or a
    /// `message_delta`.
    pub fn merge(&mut self, u: &Value, from_delta: bool) {
        let Some(new) = Usage::from_anthropic(u) else {
            return;
        };
        let has = |k: &str| u.get(k).is_some_and(Value::is_number);
        let mut merged = self.reported.unwrap_or_default();
        if has("input_tokens") {
            merged.input = new.input;
        }
        if has("cache_read_input_tokens") {
            merged.cached_input = new.cached_input;
        }
        if has("cache_creation_input_tokens") {
            merged.cache_write = new.cache_write;
        }
        if has("output_tokens") {
            merged.output = new.output;
            self.output_final |= from_delta;
        }
        self.reported = Some(merged);
    }

    /// One content delta delivered.
    pub fn content(&mut self) {
        self.deltas += 1;
    }

    /// The usage so far, once the upstream has reported any.
    pub fn current(&self) -> Option<Usage> {
        let mut u = self.reported?;
        if !self.output_final {
            u.output = u.output.max(self.deltas);
        }
        Some(u)
    }
}

/// An `error` event as the stream's failure.
pub fn failure(json: &Value) -> ProviderError {
    let e = &json["error"];
    ProviderError::Failed(format!(
        "the upstream model server failed mid-stream: {}: {}",
        e["type"].as_str().unwrap_or("error"),
        e["message"].as_str().unwrap_or("no message")
    ))
}

/// The native relay: each event goes to the client as it came, named, with
/// the usage so far.
#[derive(Debug, Default)]
pub struct NativeStream {
    usage: StreamUsage,
}

impl NativeStream {
    pub fn chunk(&mut self, e: SseEvent) -> Result<Chunk, ProviderError> {
        let json: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
        let ty = json["type"].as_str().unwrap_or_default();
        let mut tokens = 0;
        match ty {
            "error" => return Err(failure(&json)),
            "message_start" => self.usage.merge(&json["message"]["usage"], false),
            "message_delta" => self.usage.merge(&json["usage"], true),
            "content_block_delta" => {
                self.usage.content();
                tokens = 1;
            }
            _ => {}
        }
        Ok(Chunk {
            event: e.event.or_else(|| Some(ty.to_string())),
            data: e.data,
            usage: self.usage.current(),
            tokens,
            forward: true,
        })
    }
}
