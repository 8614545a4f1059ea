//! Cross-site request forgery defence for the web console: a state-changing
//! request (anything but GET, HEAD and OPTIONS) outside the bearer-token API
//! must come from our own origin. Browsers send `Origin` on such requests;
//! when it is absent (non-browser clients), a foreign `Referer` still refuses.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

#[derive(Clone)]
pub struct OriginPolicy {
    public_origin: String,
}

fn origin_of(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let host = rest.split('/').next().unwrap_or(rest);
    format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase()
    )
}

impl OriginPolicy {
    pub fn new(public_url: &str) -> Self {
        OriginPolicy {
            public_origin: origin_of(public_url),
        }
    }

    fn allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin_of(origin);
        origin == self.public_origin
            || host.is_some_and(|h| {
                let h = h.to_ascii_lowercase();
                origin == format!("http://{h}") || origin == format!("https://{h}")
            })
    }
}

pub async fn check(State(policy): State<OriginPolicy>, req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe || req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let claimed = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match claimed {
        Some(o) if o != "null" && policy.allowed(o, host) => next.run(req).await,
        None => next.run(req).await,
        Some(_) => (
            StatusCode::FORBIDDEN,
            "Cross-site request refused: this form must be submitted from Tollgate's own pages.",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let p = OriginPolicy::new("https://gate.example.org/");
        assert!(p.allowed("https://gate.example.org", None));
        assert!(p.allowed("https://gate.example.org/clients", None));
        assert!(!p.allowed("https://evil.example", None));
        assert!(p.allowed("http://127.0.0.1:3000", Some("127.0.0.1:3000")));
        assert!(!p.allowed("http://127.0.0.1:3001", Some("127.0.0.1:3000")));
    }
}
