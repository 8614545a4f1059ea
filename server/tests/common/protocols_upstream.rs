//! A mock upstream for the protocol tests: a chat-completions-only server
//! and a Responses-native one on the same port, both aware of function
//! tools, both reporting cached and reasoning tokens. Replies say how many
//! messages or items they were sent, so a chained call can be checked.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines
)]

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Seen {
    pub chat: Mutex<Vec<Value>>,
    pub responses: Mutex<Vec<Value>>,
}

pub struct ProtocolUpstream {
    pub base_url: String,
    pub seen: Arc<Seen>,
}

fn sse(events: &[Value], named: bool) -> Response {
    let mut body = String::new();
    for e in events {
        if named {
            body.push_str(&format!(
                "event: {}\n",
                e["type"].as_str().unwrap_or_default()
            ));
        }
        body.push_str(&format!("data: {e}\n\n"));
    }
    if !named {
        body.push_str("data: [DONE]\n\n");
    }
    ([("content-type", "text/event-stream")], body).into_response()
}

fn chat_usage() -> Value {
    json!({"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26,
        "prompt_tokens_details": {"cached_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 2}})
}

/// Whether to answer with a tool call: tools offered and no result yet.
fn wants_tool(tools: &Value, last_is_result: bool) -> Option<String> {
    let first = tools.as_array()?.first()?;
    let name = first["function"]["name"]
        .as_str()
        .or(first["name"].as_str())?;
    (!last_is_result).then(|| name.to_string())
}

async fn chat(State(seen): State<Arc<Seen>>, Json(body): Json<Value>) -> Response {
    seen.chat.lock().unwrap().push(body.clone());
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last_is_result = messages.last().is_some_and(|m| m["role"] == "tool");
    let tool = wants_tool(&body["tools"], last_is_result);
    let text = format!("seen {} messages", messages.len());
    if body["stream"] == true {
        let mut events = vec![
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
        ];
        let finish = match &tool {
            Some(name) => {
                events.push(json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}]}}]}));
                events.push(json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Oslo\"}"}}]}}]}));
                "tool_calls"
            }
            None => {
                for w in text.split_inclusive(' ') {
                    events.push(json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": w}}]}));
                }
                "stop"
            }
        };
        events.push(json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}));
        events
            .push(json!({"object": "chat.completion.chunk", "choices": [], "usage": chat_usage()}));
        return sse(&events, false);
    }
    let message = match &tool {
        Some(name) => {
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": "{\"city\":\"Oslo\"}"}}]})
        }
        None => json!({"role": "assistant", "content": text}),
    };
    Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": if tool.is_some() { "tool_calls" } else { "stop" }}],
        "usage": chat_usage()
    }))
    .into_response()
}

fn responses_usage() -> Value {
    json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 8},
        "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 26})
}

async fn responses(State(seen): State<Arc<Seen>>, Json(body): Json<Value>) -> Response {
    seen.responses.lock().unwrap().push(body.clone());
    let items = match &body["input"] {
        Value::Array(a) => a.clone(),
        v => vec![v.clone()],
    };
    let last_is_result = items
        .last()
        .is_some_and(|i| i["type"] == "function_call_output");
    let tool = wants_tool(&body["tools"], last_is_result);
    let text = format!("seen {} items", items.len());
    let item = match &tool {
        Some(name) => {
            json!({"type": "function_call", "id": "fc_up", "call_id": "call_1", "name": name, "arguments": "{\"city\":\"Oslo\"}", "status": "completed"})
        }
        None => {
            json!({"type": "message", "id": "msg_up", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]})
        }
    };
    let response = json!({"id": "resp_upstream", "object": "response", "created_at": 1, "status": "completed",
        "model": body["model"], "output": [item], "usage": responses_usage(), "store": false});
    if body["stream"] != true {
        return Json(response).into_response();
    }
    let mut start = response.clone();
    start["status"] = json!("in_progress");
    start["output"] = json!([]);
    start["usage"] = Value::Null;
    let mut events = vec![
        json!({"type": "response.created", "sequence_number": 0, "response": start}),
        json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": item}),
    ];
    if tool.is_none() {
        for w in text.split_inclusive(' ') {
            events.push(json!({"type": "response.output_text.delta", "sequence_number": events.len(), "item_id": "msg_up", "output_index": 0, "content_index": 0, "delta": w}));
        }
    }
    events.push(json!({"type": "response.output_item.done", "sequence_number": events.len(), "output_index": 0, "item": item}));
    events.push(json!({"type": "response.completed", "sequence_number": events.len(), "response": response}));
    sse(&events, true)
}

impl ProtocolUpstream {
    pub async fn start() -> ProtocolUpstream {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/responses", post(responses))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ProtocolUpstream {
            base_url: format!("http://{addr}/v1"),
            seen,
        }
    }
}
