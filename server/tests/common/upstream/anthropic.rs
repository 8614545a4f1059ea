//! Anthropic's Messages API, as the mock upstream serves it: the headers
//! Anthropic requires, a message or a correct event stream reporting input,
//! cache reads, cache writes and output, and a `tool_use` block when the
//! request offers tools and is not already answering one.
//!
//! Upstream models: `fail` answers 500; `stream-error` streams a little,
//! then an `error` event; any other model answers normally.

use super::Recorded;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The API key the mock accepts in `x-api-key`.
pub const ANTHROPIC_KEY: &str = "sk-ant-mock";

/// What every reply reports: 11 fresh input tokens, 200 read from the cache,
/// 30 written to it, 7 output.
pub const USAGE: (u64, u64, u64, u64) = (11, 200, 30, 7);

fn error(status: StatusCode, ty: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": ty, "message": message}});
    (status, Json(body)).into_response()
}

/// Refuses a request without `anthropic-version`, or with a wrong key.
fn check_headers(headers: &HeaderMap) -> Option<Response> {
    if headers
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok())
        != Some("2023-06-01")
    {
        let msg = "anthropic-version: header is required";
        return Some(error(StatusCode::BAD_REQUEST, "invalid_request_error", msg));
    }
    match headers.get("x-api-key") {
        Some(k) if k != ANTHROPIC_KEY => Some(error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        )),
        _ => None,
    }
}

fn record(rec: &Recorded, headers: HeaderMap, body: &Value) {
    rec.calls.fetch_add(1, Ordering::SeqCst);
    *rec.last_body.lock().unwrap() = Some(body.clone());
    *rec.last_headers.lock().unwrap() = Some(headers);
}

/// The tool to call: the first one offered, unless the last user turn
/// already carries a tool result.
fn tool_to_call(body: &Value) -> Option<String> {
    let name = body["tools"][0]["name"].as_str()?.to_string();
    let last = body["messages"].as_array()?.last()?;
    let answering = last["content"]
        .as_array()
        .is_some_and(|bs| bs.iter().any(|b| b["type"] == "tool_result"));
    (!answering).then_some(name)
}

pub async fn messages(
    State(rec): State<Arc<Recorded>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = check_headers(&headers) {
        return refused;
    }
    record(&rec, headers, &body);
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let stream = body["stream"].as_bool() == Some(true);
    let tool = tool_to_call(&body);
    match model.as_str() {
        "fail" => error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "boom"),
        "stream-error" if stream => sse(broken_stream(&model)),
        "stream-error" => error(
            StatusCode::from_u16(529).unwrap(),
            "overloaded_error",
            "Overloaded",
        ),
        _ if stream => sse(stream_events(&model, tool.as_deref())),
        _ => Json(message(&model, tool.as_deref())).into_response(),
    }
}

/// Answers `{"input_tokens": 17}`, refusing the fields that only steer
/// generation, as Anthropic does.
pub async fn count_tokens(
    State(rec): State<Arc<Recorded>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = check_headers(&headers) {
        return refused;
    }
    record(&rec, headers, &body);
    if let Some(k) = ["max_tokens", "stream"]
        .iter()
        .find(|k| body.get(**k).is_some())
    {
        let msg = format!("{k}: Extra inputs are not permitted");
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", &msg);
    }
    Json(json!({"input_tokens": 17})).into_response()
}

fn usage(output: u64) -> Value {
    let (input, read, write, _) = USAGE;
    json!({"input_tokens": input, "cache_read_input_tokens": read, "cache_creation_input_tokens": write, "output_tokens": output})
}

fn message(model: &str, tool: Option<&str>) -> Value {
    let mut content = vec![json!({"type": "text", "text": "Hello from Claude"})];
    if let Some(name) = tool {
        content.push(
            json!({"type": "tool_use", "id": "toolu_1", "name": name, "input": {"city": "Paris"}}),
        );
    }
    json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": content,
        "stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" },
        "stop_sequence": null,
        "usage": usage(USAGE.3),
    })
}

fn message_start(model: &str) -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": usage(1),
    }})
}

fn text_delta(index: u64, text: &str) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})
}

fn stream_events(model: &str, tool: Option<&str>) -> Vec<Value> {
    let mut events = vec![
        message_start(model),
        json!({"type": "ping"}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        text_delta(0, "Hello"),
        text_delta(0, " from"),
        text_delta(0, " Claude"),
        json!({"type": "content_block_stop", "index": 0}),
    ];
    if let Some(name) = tool {
        let json_delta = |part: &str| json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}});
        events.extend([
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}}),
            json_delta("{\"city\":"),
            json_delta("\"Paris\"}"),
            json!({"type": "content_block_stop", "index": 1}),
        ]);
    }
    let stop = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    events.extend([
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": USAGE.3}}),
        json!({"type": "message_stop"}),
    ]);
    events
}

fn broken_stream(model: &str) -> Vec<Value> {
    vec![
        message_start(model),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        text_delta(0, "Hel"),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ]
}

/// Named events, as Anthropic sends them.
fn sse(events: Vec<Value>) -> Response {
    let body: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    ([("content-type", "text/event-stream")], body).into_response()
}
