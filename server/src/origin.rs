//! Cross-site request forgery defence for the web console: a state-changing
//! request (anything but GET, HEAD and OPTIONS) outside the bearer-token API
//! must come from our own origin. Browsers send `Origin` on such requests;
//! when it is absent (non-browser clients), a foreign `Referer` still refuses.
//!
//! When `server.public_url` is set, it is the only origin accepted. Without
//! it, the address the server listens on is accepted, and so is the origin
//! that names the `Host` the request was sent to (a local install reached as
//! `localhost` or by its IP). An `Origin` or `Referer` that is not a
//! well-formed http(s) origin is refused.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

#[derive(Clone)]
pub struct OriginPolicy {
    public_origin: String,
    /// Whether the `Host` header may vouch for an origin (no `public_url`).
    trust_host: bool,
}

/// `scheme://host[:port]`, lower-cased, from a URL; `None` unless it is
/// http(s) with a plain host. With `allow_path` false (an `Origin` header)
/// nothing may follow the authority.
fn parse_origin(url: &str, allow_path: bool) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !allow_path && !tail.is_empty() {
        return None;
    }
    let valid = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    valid.then(|| format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

impl OriginPolicy {
    /// `configured` is `server.public_url`; `listening` the URL actually served.
    pub fn new(configured: Option<&str>, listening: &str) -> Self {
        let url = configured.unwrap_or(listening);
        OriginPolicy {
            public_origin: parse_origin(url, true).unwrap_or_else(|| url.to_ascii_lowercase()),
            trust_host: configured.is_none(),
        }
    }

    fn allowed(&self, origin: &str, host: Option<&str>) -> bool {
        origin == self.public_origin
            || (self.trust_host
                && host.is_some_and(|h| {
                    let h = h.to_ascii_lowercase();
                    origin == format!("http://{h}") || origin == format!("https://{h}")
                }))
    }

    /// Whether a state-changing request with these headers may go on.
    fn permits(&self, headers: &HeaderMap) -> bool {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let claimed = match (headers.get(header::ORIGIN), headers.get(header::REFERER)) {
            (Some(o), _) => o.to_str().ok().and_then(|o| parse_origin(o, false)),
            (None, Some(r)) => r.to_str().ok().and_then(|r| parse_origin(r, true)),
            // Not a browser: nothing to forge with.
            (None, None) => return true,
        };
        claimed.is_some_and(|o| self.allowed(&o, host))
    }
}

pub async fn check(State(policy): State<OriginPolicy>, req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe || req.uri().path().starts_with("/v1/") || policy.permits(req.headers()) {
        return next.run(req).await;
    }
    (
        StatusCode::FORBIDDEN,
        "Cross-site request refused: this form must be submitted from Tollgate's own pages.",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn origins() {
        let p = OriginPolicy::new(Some("https://gate.example.org/"), "http://127.0.0.1:3000");
        assert!(p.allowed("https://gate.example.org", None));
        assert!(!p.allowed("https://evil.example", None));
        assert!(
            !p.allowed("http://127.0.0.1:3000", Some("127.0.0.1:3000")),
            "with a public URL, Host vouches for nothing"
        );
        let local = OriginPolicy::new(None, "http://127.0.0.1:3000");
        assert!(local.allowed("http://127.0.0.1:3000", None));
        assert!(local.allowed("http://localhost:3000", Some("localhost:3000")));
        assert!(!local.allowed("http://127.0.0.1:3001", Some("127.0.0.1:3000")));
    }

    #[test]
    fn malformed_origins_are_refused() {
        let p = OriginPolicy::new(None, "http://127.0.0.1:3000");
        let host: &[u8] = b"127.0.0.1:3000";
        let ok = headers(&[
            (header::HOST, host),
            (header::ORIGIN, b"http://127.0.0.1:3000"),
        ]);
        assert!(p.permits(&ok));
        for bad in [
            &b"null"[..],
            b"http://127.0.0.1:3000/",
            b"http://127.0.0.1:3000/clients",
            b"127.0.0.1:3000",
            b"ftp://127.0.0.1:3000",
            b"http://user@127.0.0.1:3000",
            b"http://",
            b"http://127.0.0.1:3000\xff",
        ] {
            let h = headers(&[(header::HOST, host), (header::ORIGIN, bad)]);
            assert!(!p.permits(&h), "{}", String::from_utf8_lossy(bad));
        }
        let referer = headers(&[
            (header::HOST, host),
            (header::REFERER, b"http://127.0.0.1:3000/me"),
        ]);
        assert!(p.permits(&referer));
        let foreign = headers(&[
            (header::HOST, host),
            (header::REFERER, b"https://evil.example/x"),
        ]);
        assert!(!p.permits(&foreign));
        assert!(p.permits(&headers(&[(header::HOST, host)])));
    }
}
