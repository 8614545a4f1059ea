//! Anthropic's replies as chat completions: a message as a
//! `chat.completion`, a stream of events as `chat.completion.chunk`s ending
//! in a usage chunk, as an OpenAI upstream sends with
//! `stream_options.include_usage`.

use super::stream::{failure, StreamUsage};
use crate::gateway::providers::{Chunk, ProviderError, Usage};
use serde_json::{json, Value};

/// Anthropic's `stop_reason` as a chat `finish_reason`.
fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

fn completion_id(message_id: &Value) -> String {
    format!("chatcmpl-{}", message_id.as_str().unwrap_or_default())
}

/// A Messages reply as a chat completion, and its usage if it reported any.
pub fn reply(msg: &Value, created: u64) -> (Value, Option<Usage>) {
    let blocks = msg["content"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let joined = |ty: &str, field: &str| -> Option<String> {
        let parts: Vec<&str> = blocks
            .iter()
            .filter(|b| b["type"] == ty)
            .filter_map(|b| b[field].as_str())
            .collect();
        (!parts.is_empty()).then(|| parts.concat())
    };
    let mut message = json!({"role": "assistant", "content": joined("text", "text")});
    let calls: Vec<Value> = blocks
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| {
            let arguments = b["input"].to_string();
            json!({"id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": arguments}})
        })
        .collect();
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if let Some(thinking) = joined("thinking", "thinking") {
        message["reasoning_content"] = Value::String(thinking);
    }
    let usage = Usage::from_anthropic(&msg["usage"]);
    let mut body = json!({
        "id": completion_id(&msg["id"]),
        "object": "chat.completion",
        "created": created,
        "model": msg["model"],
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": msg["stop_reason"].as_str().map(finish_reason),
        }],
    });
    if let Some(u) = usage {
        body["usage"] = u.to_openai();
    }
    (body, usage)
}

/// Turns one Anthropic stream into chat completion chunks, event by event.
#[derive(Debug)]
pub struct ChatStream {
    id: String,
    model: Value,
    created: u64,
    include_usage: bool,
    usage: StreamUsage,
    /// The content block index of each tool call, by tool call index.
    tool_blocks: Vec<u64>,
}

impl ChatStream {
    pub fn new(created: u64, include_usage: bool) -> ChatStream {
        ChatStream {
            id: completion_id(&Value::Null),
            model: Value::Null,
            created,
            include_usage,
            usage: StreamUsage::default(),
            tool_blocks: Vec::new(),
        }
    }

    /// The chunk for one event's `data`, if it makes one.
    pub fn chunk(&mut self, data: &str) -> Result<Option<Chunk>, ProviderError> {
        let json: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        Ok(match json["type"].as_str().unwrap_or_default() {
            "error" => return Err(failure(&json)),
            "message_start" => {
                let m = &json["message"];
                self.id = completion_id(&m["id"]);
                self.model = m["model"].clone();
                self.usage.merge(&m["usage"], false);
                Some(self.delta(json!({"role": "assistant", "content": ""}), 0))
            }
            "content_block_start" => self.block_start(&json),
            "content_block_delta" => self.block_delta(&json),
            "message_delta" => {
                self.usage.merge(&json["usage"], true);
                let stop = json["delta"]["stop_reason"].as_str();
                let mut chunk = self.chunk_with(json!({}), stop.map(finish_reason), 0);
                chunk.forward = stop.is_some();
                Some(chunk)
            }
            "message_stop" => self.usage.current().map(|u| self.usage_chunk(u)),
            _ => None,
        })
    }

    fn block_start(&mut self, json: &Value) -> Option<Chunk> {
        let block = &json["content_block"];
        match block["type"].as_str()? {
            "tool_use" => {
                let index = self.tool_blocks.len();
                self.tool_blocks.push(json["index"].as_u64()?);
                let call = json!({"index": index, "id": block["id"], "type": "function",
                    "function": {"name": block["name"], "arguments": ""}});
                Some(self.content(json!({"tool_calls": [call]})))
            }
            "text" => {
                let text = block["text"].as_str().filter(|t| !t.is_empty())?;
                Some(self.content(json!({"content": text})))
            }
            _ => None,
        }
    }

    fn block_delta(&mut self, json: &Value) -> Option<Chunk> {
        let d = &json["delta"];
        let delta = match d["type"].as_str()? {
            "text_delta" => json!({"content": d["text"]}),
            "thinking_delta" => json!({"reasoning_content": d["thinking"]}),
            "input_json_delta" => {
                let block = json["index"].as_u64()?;
                let index = self.tool_blocks.iter().position(|b| *b == block)?;
                json!({"tool_calls": [{"index": index, "function": {"arguments": d["partial_json"]}}]})
            }
            _ => return None,
        };
        Some(self.content(delta))
    }

    /// A chunk that delivers content: one token for the meter.
    fn content(&mut self, delta: Value) -> Chunk {
        self.usage.content();
        self.delta(delta, 1)
    }

    fn delta(&self, delta: Value, tokens: u64) -> Chunk {
        self.chunk_with(delta, None, tokens)
    }

    fn chunk_with(&self, delta: Value, finish: Option<&str>, tokens: u64) -> Chunk {
        let data = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        Chunk {
            event: None,
            data: data.to_string(),
            usage: self.usage.current(),
            tokens,
            forward: true,
        }
    }

    /// The closing usage chunk, shown only to a caller that asked for it.
    fn usage_chunk(&self, usage: Usage) -> Chunk {
        let data = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [], "usage": usage.to_openai(),
        });
        Chunk {
            event: None,
            data: data.to_string(),
            usage: Some(usage),
            tokens: 0,
            forward: self.include_usage,
        }
    }
}
