//! The protocols callers speak (chat completions, completions, embeddings,
//! the Responses API, Anthropic's Messages API) and the translations between
//! them and what an upstream speaks. Chat completions is the hub: a
//! Responses or Messages call to an upstream that does not speak it natively
//! is translated to chat, and the reply translated back.

pub mod messages;
pub mod responses;

use super::providers::Kind;
use app::domain::config::Provider;
use axum::body::Bytes;
use serde_json::Value;

/// What a call in protocol `kind` is sent upstream as: the caller's own
/// protocol when the upstream speaks it, or chat completions. `None` when
/// the provider cannot serve it at all.
pub fn upstream_wire(kind: Kind, provider: &Provider) -> Option<Kind> {
    match (provider, kind) {
        (Provider::Anthropic { .. }, Kind::Completions | Kind::Embeddings) => None,
        (Provider::Anthropic { .. }, Kind::Messages) => Some(Kind::Messages),
        (
            Provider::OpenAi {
                native_responses: true,
                ..
            },
            Kind::Responses,
        ) => Some(Kind::Responses),
        (_, Kind::Responses | Kind::Messages) => Some(Kind::Chat),
        (_, k) => Some(k),
    }
}

/// Turns one upstream stream's events into the caller's protocol.
pub trait Transcode: Send {
    /// The caller's events for one upstream event.
    fn event(&mut self, data: &Value, out: &mut Vec<Value>);
    /// The caller's closing events once the upstream stream ended cleanly.
    fn finish(&mut self, out: &mut Vec<Value>);
    /// The caller's events when the upstream failed mid-stream.
    fn fail(&mut self, code: &str, message: &str, out: &mut Vec<Value>);
}

/// One SSE frame in the caller's protocol. Chat completions frames are bare
/// `data:` lines; the Responses and Messages APIs name each event after its
/// `type`.
pub fn frame(kind: Kind, data: &str, event: Option<&str>) -> Bytes {
    match (kind, event) {
        (Kind::Responses | Kind::Messages, Some(ev)) => {
            Bytes::from(format!("event: {ev}\ndata: {data}\n\n"))
        }
        _ => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// A frame for an event built by the gateway.
pub fn frame_value(kind: Kind, v: &Value) -> Bytes {
    frame(kind, &v.to_string(), v["type"].as_str())
}

/// What ends a stream in the caller's protocol, if anything.
pub fn end_frame(kind: Kind) -> Option<Bytes> {
    match kind {
        Kind::Responses | Kind::Messages => None,
        _ => Some(Bytes::from_static(b"data: [DONE]\n\n")),
    }
}

/// An error event mid-stream, in the caller's protocol.
pub fn stream_error(kind: Kind, code: &str, message: &str) -> Value {
    match kind {
        Kind::Messages => serde_json::json!({
            "type": "error",
            "error": {"type": "api_error", "message": message, "code": code}
        }),
        Kind::Responses => serde_json::json!({
            "type": "error", "code": code, "message": message, "param": null
        }),
        _ => serde_json::json!({"error": {"message": message, "type": "api_error", "code": code}}),
    }
}

/// A fresh id with a protocol's prefix (`resp_`, `msg_`, …).
pub fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 12];
    if getrandom::fill(&mut b).is_err() {
        let t = app::ssr::now_ms().to_be_bytes();
        b[..8].copy_from_slice(&t);
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}")
}

/// Seconds since the epoch, as `created` fields carry it.
pub fn now_secs() -> i64 {
    app::ssr::now_ms() / 1000
}

/// Copies the fields a request gives from one protocol's names to another's.
pub fn copy_fields(from: &Value, to: &mut serde_json::Map<String, Value>, names: &[(&str, &str)]) {
    for (f, t) in names {
        if !from[*f].is_null() {
            to.insert((*t).into(), from[*f].clone());
        }
    }
}

/// Text of chat `content`: a string, or the text of its parts.
pub fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;
