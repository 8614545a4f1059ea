//! A mock upstream: a real HTTP server standing in for the outside world,
//! OpenAI-compatible under `/v1/chat/completions` and Anthropic's Messages
//! API under `/v1/messages` (see `anthropic`), with call counting and the
//! last request body and headers recorded.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod anthropic;

#[derive(Default)]
pub struct Recorded {
    pub calls: AtomicU64,
    /// Chunks the slow stream actually produced before the gateway stopped reading.
    pub streamed: AtomicU64,
    pub last_body: Mutex<Option<Value>>,
    pub last_headers: Mutex<Option<axum::http::HeaderMap>>,
}

pub struct Upstream {
    /// OpenAI-style, with `/v1`.
    pub base_url: String,
    /// Without `/v1`, as Anthropic's SDKs (and `provider: anthropic`) take it.
    pub root_url: String,
    pub rec: Arc<Recorded>,
}

fn sse(events: Vec<String>) -> Response {
    let body: String = events
        .into_iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect();
    ([("content-type", "text/event-stream")], body).into_response()
}

async fn chat(State(rec): State<Arc<Recorded>>, Json(body): Json<Value>) -> Response {
    rec.calls.fetch_add(1, Ordering::SeqCst);
    *rec.last_body.lock().unwrap() = Some(body.clone());
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let stream = body["stream"].as_bool() == Some(true);
    match model.as_str() {
        "fail" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        // Reports far more usage than any reservation allows for.
        "greedy" => Json(json!({
            "id": "up-3", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "a lot"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 100000, "total_tokens": 100011}
        }))
        .into_response(),
        // Reports cached prompt tokens and reasoning, inside their totals.
        "cached" => Json(json!({
            "id": "up-4", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "thought about it"}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": 40, "completion_tokens": 30, "total_tokens": 70,
                "prompt_tokens_details": {"cached_tokens": 32, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
            }
        }))
        .into_response(),
        "no-usage" => Json(json!({
            "id": "up-2", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from upstream"}, "finish_reason": "stop"}]
        }))
        .into_response(),
        "hang" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (StatusCode::OK, "late").into_response()
        }
        "slow-stream" => {
            let rec = rec.clone();
            let s = futures::stream::unfold(0u64, move |i| {
                let rec = rec.clone();
                async move {
                    if i >= 200 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    rec.streamed.fetch_add(1, Ordering::SeqCst);
                    let chunk = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "tok "}}]});
                    Some((Ok::<Bytes, std::io::Error>(Bytes::from(format!("data: {chunk}\n\n"))), i + 1))
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(s))
                .unwrap()
        }
        _ if stream => {
            let mut events: Vec<String> = ["Hello", " from", " upstream"]
                .iter()
                .map(|t| json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": t}}]}).to_string())
                .collect();
            events.push(json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).to_string());
            events.push(json!({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}).to_string());
            events.push("[DONE]".into());
            sse(events)
        }
        _ => Json(json!({
            "id": "up-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from upstream"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        }))
        .into_response(),
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let rec = Arc::new(Recorded::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/messages", post(anthropic::messages))
            .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
            .with_state(rec.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Upstream {
            base_url: format!("http://{addr}/v1"),
            root_url: format!("http://{addr}"),
            rec,
        }
    }

    pub fn calls(&self) -> u64 {
        self.rec.calls.load(Ordering::SeqCst)
    }

    /// The body of the last request.
    pub fn last_body(&self) -> Value {
        self.rec.last_body.lock().unwrap().clone().unwrap()
    }

    /// A header of the last request that recorded its headers.
    pub fn last_header(&self, name: &str) -> Option<String> {
        let headers = self.rec.last_headers.lock().unwrap();
        headers
            .as_ref()?
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}
