//! The JSON API's one error type. Every error is OpenAI-shaped,
//! `{"error":{"message","type","code"}}`, with a stable `code` and a message
//! that says what to do. Internal details go to the log, not the client.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidApiKey(String),
    #[error("{0}")]
    ModelNotFound(String),
    #[error("{0}")]
    ModelNotAllowed(String),
    #[error("{0}")]
    ConsentRequired(String),
    #[error("{0}")]
    PoolBlocked(String),
    #[error("{0}")]
    InsufficientCoins(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// A method the path does not serve (with an `Allow` header, see
    /// `gateway::method_not_allowed`).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A stored response this key's owner cannot see: missing, expired,
    /// deleted or another owner's, all alike.
    #[error("{0}")]
    ResponseNotFound(String),
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    UpstreamTimeout(String),
    #[error("{0}")]
    UpstreamUnavailable(String),
    #[error("{0}")]
    AccountingUnavailable(String),
    /// Over a rate limit: `retry_after` seconds until the window ends;
    /// `what` is `requests` or `tokens`, OpenAI's error type.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: u64,
        what: &'static str,
    },
}

/// The `code` of an error response, kept on the response for the metrics
/// layer (`crate::metrics::track`), which counts refusals by code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl ApiError {
    /// Every `code` an error response can carry: the codes of `ApiError`, and
    /// `request_too_large` from the body limit (`crate::body_limit`).
    pub const CODES: [&'static str; 15] = [
        "invalid_api_key",
        "model_not_found",
        "model_not_allowed",
        "consent_required",
        "pool_blocked",
        "insufficient_coins",
        "invalid_request",
        "method_not_allowed",
        "response_not_found",
        "upstream_error",
        "upstream_timeout",
        "upstream_unavailable",
        "accounting_unavailable",
        "rate_limit_exceeded",
        "request_too_large",
    ];

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidApiKey(_) => StatusCode::UNAUTHORIZED,
            ApiError::ModelNotFound(_) | ApiError::ResponseNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::ModelNotAllowed(_)
            | ApiError::ConsentRequired(_)
            | ApiError::PoolBlocked(_) => StatusCode::FORBIDDEN,
            ApiError::InsufficientCoins(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::UpstreamUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::AccountingUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidApiKey(_) => "invalid_api_key",
            ApiError::ModelNotFound(_) => "model_not_found",
            ApiError::ModelNotAllowed(_) => "model_not_allowed",
            ApiError::ConsentRequired(_) => "consent_required",
            ApiError::PoolBlocked(_) => "pool_blocked",
            ApiError::InsufficientCoins(_) => "insufficient_coins",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::ResponseNotFound(_) => "response_not_found",
            ApiError::Upstream(_) => "upstream_error",
            ApiError::UpstreamTimeout(_) => "upstream_timeout",
            ApiError::UpstreamUnavailable(_) => "upstream_unavailable",
            ApiError::AccountingUnavailable(_) => "accounting_unavailable",
            ApiError::RateLimited { .. } => "rate_limit_exceeded",
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidApiKey(_) => "authentication_error",
            ApiError::ModelNotAllowed(_)
            | ApiError::ConsentRequired(_)
            | ApiError::PoolBlocked(_) => "permission_error",
            ApiError::InsufficientCoins(_) => "insufficient_quota",
            ApiError::ModelNotFound(_)
            | ApiError::InvalidRequest(_)
            | ApiError::MethodNotAllowed(_)
            | ApiError::ResponseNotFound(_) => "invalid_request_error",
            ApiError::Upstream(_)
            | ApiError::UpstreamTimeout(_)
            | ApiError::UpstreamUnavailable(_)
            | ApiError::AccountingUnavailable(_) => "api_error",
            ApiError::RateLimited { what, .. } => what,
        }
    }

    /// `Retry-After` for a rate-limited call.
    fn with_retry_after(&self, mut resp: Response) -> Response {
        if let ApiError::RateLimited { retry_after, .. } = self {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "message": self.to_string(), "type": self.kind(), "param": null, "code": self.code() }
        });
        let code = ErrorCode(self.code());
        let mut resp = (self.status(), Json(body)).into_response();
        resp.extensions_mut().insert(code);
        self.with_retry_after(resp)
    }
}

/// Malformed JSON bodies become `invalid_request` instead of axum's plain text.
pub fn invalid_json(e: axum::extract::rejection::JsonRejection) -> ApiError {
    ApiError::InvalidRequest(format!(
        "the request body is not valid JSON for this endpoint: {}",
        e.body_text()
    ))
}

/// An error in the caller's protocol: Anthropic's shape on `/v1/messages`,
/// OpenAI's everywhere else. Both carry the same stable `code`.
pub fn render(kind: crate::gateway::providers::Kind, e: ApiError) -> Response {
    if kind != crate::gateway::providers::Kind::Messages {
        return e.into_response();
    }
    let ty = match e.status().as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        _ => "api_error",
    };
    let body = json!({
        "type": "error",
        "error": {"type": ty, "message": e.to_string(), "code": e.code()}
    });
    let mut resp = (e.status(), Json(body)).into_response();
    resp.extensions_mut().insert(ErrorCode(e.code()));
    e.with_retry_after(resp)
}

#[cfg(test)]
mod tests {
    use super::ApiError;

    #[test]
    fn every_code_is_listed() {
        let all = [
            ApiError::InvalidApiKey(String::new()),
            ApiError::ModelNotFound(String::new()),
            ApiError::ModelNotAllowed(String::new()),
            ApiError::ConsentRequired(String::new()),
            ApiError::PoolBlocked(String::new()),
            ApiError::InsufficientCoins(String::new()),
            ApiError::InvalidRequest(String::new()),
            ApiError::MethodNotAllowed(String::new()),
            ApiError::ResponseNotFound(String::new()),
            ApiError::Upstream(String::new()),
            ApiError::UpstreamTimeout(String::new()),
            ApiError::UpstreamUnavailable(String::new()),
            ApiError::AccountingUnavailable(String::new()),
            ApiError::RateLimited {
                message: String::new(),
                retry_after: 1,
                what: "requests",
            },
        ];
        for e in &all {
            assert!(ApiError::CODES.contains(&e.code()), "{}", e.code());
        }
        assert_eq!(all.len() + 1, ApiError::CODES.len());
    }
}
