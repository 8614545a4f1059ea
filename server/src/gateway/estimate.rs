//! Worst-case token estimates for reservations. Input: every byte of the
//! prompt text could be a token (a BPE token is at least one byte), plus a
//! margin for each message's chat template. Output: the call's `max_tokens`,
//! capped by the model's `max_output_tokens`.

use super::providers::dummy::content_text;
use super::providers::Kind;
use serde_json::Value;

/// Output tokens allowed when neither the call nor the model sets a limit.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;
const PER_MESSAGE: u64 = 8;

fn text_bytes(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Array(a) => a.iter().map(text_bytes).sum::<u64>() + a.len() as u64,
        Value::Null => 0,
        other => other.to_string().len() as u64,
    }
}

pub fn input_upper_bound(kind: Kind, body: &Value) -> u64 {
    match kind {
        Kind::Chat => {
            body["messages"]
                .as_array()
                .map(|ms| {
                    ms.iter()
                        .map(|m| content_text(&m["content"]).len() as u64 + PER_MESSAGE)
                        .sum::<u64>()
                })
                .unwrap_or(0)
                + PER_MESSAGE
        }
        Kind::Completions => text_bytes(&body["prompt"]) + PER_MESSAGE,
        Kind::Embeddings => text_bytes(&body["input"]) + PER_MESSAGE,
    }
}

/// A typical rather than worst-case input count (about four bytes a token),
/// used only when a stream ends before the upstream reported usage.
pub fn input_typical(kind: Kind, body: &Value) -> u64 {
    input_upper_bound(kind, body).div_ceil(4)
}

/// The output limit for this call, and the field that carries it upstream.
pub fn output_limit(kind: Kind, body: &Value, model_max: Option<u32>) -> (u64, &'static str) {
    if kind == Kind::Embeddings {
        return (0, "max_tokens");
    }
    let cap = model_max.map_or(DEFAULT_MAX_OUTPUT_TOKENS, u64::from);
    let (asked, field) = match (
        body.get("max_completion_tokens").and_then(Value::as_u64),
        body.get("max_tokens").and_then(Value::as_u64),
    ) {
        (Some(n), _) => (Some(n), "max_completion_tokens"),
        (None, n) => (n, "max_tokens"),
    };
    (asked.map_or(cap, |n| n.min(cap)), field)
}
