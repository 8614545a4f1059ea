//! A fast mock OpenAI-compatible upstream for the benchmark: answers every
//! chat completion at once with a fixed reply and usage.
//! Usage: mock_upstream 127.0.0.1:18081
#![allow(clippy::print_stdout)]

use axum::routing::post;
use axum::Router;

const REPLY: &str = r#"{"id":"bench","object":"chat.completion","created":0,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|| async { ([("content-type", "application/json")], REPLY) }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    println!("mock upstream on http://{addr}");
    axum::serve(listener, app).await
}
