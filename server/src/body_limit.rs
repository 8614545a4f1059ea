//! One limit on request bodies for the whole server, applied before any
//! handler runs, so that no request can make the server buffer, hash or store
//! more than this. `/v1` calls carry whole conversations (and may carry
//! images as base64), so they get 8 MiB; the console's server functions and
//! forms hold a few short fields, so everything else gets 64 KiB.
//!
//! A body over the limit is answered 413 whether it announces its length or
//! not: the body is read here, up to the limit, before the request goes on (what follows is
//! read and thrown away, within bounds, so the client can read the answer).
//! On `/v1` the answer is OpenAI-shaped JSON with the code `request_too_large`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::json;

/// The largest body accepted on `/v1/…`.
pub const API_BODY_LIMIT: usize = 8 * 1024 * 1024;
/// The largest body accepted anywhere else (server functions, forms).
pub const CONSOLE_BODY_LIMIT: usize = 64 * 1024;

fn limit_for(path: &str) -> usize {
    if path.starts_with("/v1/") {
        API_BODY_LIMIT
    } else {
        CONSOLE_BODY_LIMIT
    }
}

pub(crate) fn too_large(path: &str, limit: usize) -> Response {
    let mut resp = too_large_body(path, limit);
    if path.starts_with("/v1/") {
        resp.extensions_mut()
            .insert(crate::gateway::error::ErrorCode("request_too_large"));
    }
    resp
}

fn too_large_body(path: &str, limit: usize) -> Response {
    let message = format!(
        "the request body is larger than {} KiB, the most this endpoint accepts",
        limit / 1024
    );
    if path.starts_with("/v1/messages") {
        // Anthropic's shape, as on every /v1/messages error.
        let body = json!({
            "type": "error",
            "error": {"type": "request_too_large", "message": message, "code": "request_too_large"}
        });
        (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response()
    } else if path.starts_with("/v1/") {
        let body = json!({
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": null,
                "code": "request_too_large",
            }
        });
        (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response()
    } else {
        (StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
    }
}

/// After refusing a body, up to this much more of it is read and thrown
/// away (for at most `DRAIN_TIME`), so that the client, still sending, gets
/// to read the 413 instead of a reset connection. Beyond that the
/// connection is simply closed.
const DRAIN_LIMIT: usize = 32 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

async fn drain(mut stream: axum::body::BodyDataStream, mut read: usize) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

pub async fn limit(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let limit = limit_for(&path);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > limit as u64) {
        drain(stream, 0).await;
        return too_large(&path, limit);
    }
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("cannot read a request body: {e}");
                return (
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                )
                    .into_response();
            }
        };
        if buf.len() + chunk.len() > limit {
            drain(stream, buf.len() + chunk.len()).await;
            return too_large(&path, limit);
        }
        buf.extend_from_slice(&chunk);
    }
    next.run(Request::from_parts(parts, Body::from(buf))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_by_path() {
        assert_eq!(limit_for("/v1/chat/completions"), API_BODY_LIMIT);
        assert_eq!(limit_for("/api/login"), CONSOLE_BODY_LIMIT);
        assert_eq!(limit_for("/v1"), CONSOLE_BODY_LIMIT);
    }
}
