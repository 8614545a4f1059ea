//! A mock OpenAI-compatible upstream whose behaviour a test switches at
//! will: healthy, failing with 500, hanging, 429 with `Retry-After`, 402,
//! streaming a chunk then breaking off, or stopped altogether (its port
//! closed, so connections are refused) and started again on the same port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    Fail500,
    Hang,
    TooMany {
        retry_after_secs: u64,
    },
    Quota,
    /// Streams one chunk, then the connection breaks.
    BreakMidStream,
}

pub struct Flaky {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub mode: Arc<Mutex<Mode>>,
    pub calls: Arc<AtomicU64>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

#[derive(Clone)]
struct St {
    name: &'static str,
    mode: Arc<Mutex<Mode>>,
    calls: Arc<AtomicU64>,
}

fn reply(name: &str, stream: bool) -> Response {
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    if stream {
        let chunk = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": format!("from {name}")}}]});
        let fin = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        let u = json!({"object": "chat.completion.chunk", "choices": [], "usage": usage});
        let body = format!("data: {chunk}\n\ndata: {fin}\n\ndata: {u}\n\ndata: [DONE]\n\n");
        return ([("content-type", "text/event-stream")], body).into_response();
    }
    Json(json!({
        "id": "x", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("from {name}")}, "finish_reason": "stop"}],
        "usage": usage
    }))
    .into_response()
}

async fn chat(State(st): State<St>, Json(body): Json<Value>) -> Response {
    st.calls.fetch_add(1, Ordering::SeqCst);
    let mode = *st.mode.lock().unwrap();
    let stream = body["stream"] == true;
    match mode {
        Mode::Ok => reply(st.name, stream),
        Mode::Fail500 => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            reply(st.name, stream)
        }
        Mode::TooMany { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after_secs.to_string())],
            r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
        )
            .into_response(),
        Mode::Quota => (
            StatusCode::PAYMENT_REQUIRED,
            r#"{"error":{"message":"out of credit","code":"insufficient_quota"}}"#,
        )
            .into_response(),
        Mode::BreakMidStream => {
            let chunk = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "partial words here"}}]});
            let first = Bytes::from(format!("data: {chunk}\n\n"));
            let s = futures::stream::unfold(0, move |i| {
                let first = first.clone();
                async move {
                    match i {
                        0 => Some((Ok::<Bytes, std::io::Error>(first), 1)),
                        1 => {
                            // Let the first chunk reach the gateway before the break.
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            Some((Err(std::io::Error::other("cut")), 2))
                        }
                        _ => None,
                    }
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(s))
                .unwrap()
        }
    }
}

impl Flaky {
    pub async fn start(name: &'static str) -> Flaky {
        let f = Flaky {
            name,
            addr: "127.0.0.1:0".parse().unwrap(),
            mode: Arc::new(Mutex::new(Mode::Ok)),
            calls: Arc::new(AtomicU64::new(0)),
            stop: Mutex::new(None),
        };
        f.serve_on("127.0.0.1:0".parse().unwrap()).await
    }

    async fn serve_on(mut self, addr: SocketAddr) -> Flaky {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let st = St {
            name: self.name,
            mode: self.mode.clone(),
            calls: self.calls.clone(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(st);
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        *self.stop.lock().unwrap() = Some(tx);
        self
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Closes the port: new connections are refused.
    pub async fn stop(&self) {
        if let Some(tx) = self.stop.lock().unwrap().take() {
            let _ = tx.send(());
        }
        // Wait until the port no longer accepts.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} did not stop", self.name);
    }

    /// Serves again on the same port.
    pub async fn restart(self) -> Flaky {
        let addr = self.addr;
        self.serve_on(addr).await
    }
}
