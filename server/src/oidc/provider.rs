//! Talking to the OpenID provider: its discovery document and keys (cached
//! for an hour; the keys fetched again once when a token names a key not
//! among them), and the token endpoint. Every request has a timeout and a
//! size limit.

use super::token::{self, VerifyError};
use app::domain::oidc::{discovery_url, endpoint_allowed, Refusal};
use app::domain::text::percent_encode;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);
const CACHE_FOR: Duration = Duration::from_secs(3600);
/// The largest document read from the provider.
const MAX_BODY: usize = 1024 * 1024;

/// The part of a discovery document the flow uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

#[derive(Clone)]
struct Cached {
    at: Instant,
    discovery: Arc<Discovery>,
    keys: Arc<Vec<Value>>,
}

/// The provider's documents, per issuer.
pub struct Providers {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
}

/// A failure talking to the provider: the refusal shown, and the detail logged.
#[derive(Debug)]
pub struct Failure(pub Refusal, pub String);

fn unavailable(detail: String) -> Failure {
    Failure(Refusal::ProviderUnavailable, detail)
}

impl Providers {
    pub fn new(http: reqwest::Client) -> Self {
        Providers {
            http,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn read_json(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
        let mut resp = req
            .timeout(TIMEOUT)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!("the answer is larger than {MAX_BODY} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let json = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        Ok((status, json))
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        match self.read_json(self.http.get(url)).await? {
            (200, v) => Ok(v),
            (s, _) => Err(format!("{url} answered {s}")),
        }
    }

    fn cached(&self, issuer: &str) -> Option<Cached> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(issuer)
            .filter(|c| c.at.elapsed() < CACHE_FOR)
            .cloned()
    }

    fn store(&self, issuer: &str, c: Cached) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(issuer.to_string(), c);
        }
    }

    /// The issuer's discovery document, checked: the issuer it names is the
    /// configured one, exactly, and its endpoints use https (or loopback
    /// http for a loopback issuer).
    pub async fn discovery(&self, issuer: &str) -> Result<Arc<Discovery>, Failure> {
        Ok(self.provider(issuer).await?.discovery)
    }

    async fn provider(&self, issuer: &str) -> Result<Cached, Failure> {
        if let Some(c) = self.cached(issuer) {
            return Ok(c);
        }
        let url = discovery_url(issuer);
        let doc = self
            .get_json(&url)
            .await
            .map_err(|e| unavailable(format!("discovery at {url}: {e}")))?;
        let d: Discovery = serde_json::from_value(doc)
            .map_err(|e| unavailable(format!("discovery at {url}: {e}")))?;
        check_discovery(issuer, &d).map_err(unavailable)?;
        let keys = self.fetch_keys(&d.jwks_uri).await?;
        let c = Cached {
            at: Instant::now(),
            discovery: Arc::new(d),
            keys: Arc::new(keys),
        };
        self.store(issuer, c.clone());
        Ok(c)
    }

    async fn fetch_keys(&self, jwks_uri: &str) -> Result<Vec<Value>, Failure> {
        let doc = self
            .get_json(jwks_uri)
            .await
            .map_err(|e| unavailable(format!("keys at {jwks_uri}: {e}")))?;
        match doc.get("keys") {
            Some(Value::Array(keys)) => Ok(keys.clone()),
            _ => Err(unavailable(format!("keys at {jwks_uri}: no `keys` list"))),
        }
    }

    /// Verifies an ID token's signature against the issuer's keys, fetching
    /// them again once if none fits (the provider may have rotated them).
    pub async fn verify(&self, issuer: &str, id_token: &str) -> Result<Value, Failure> {
        let c = self.provider(issuer).await?;
        let invalid = |m: String| Failure(Refusal::TokenInvalid, m);
        match token::verify(id_token, &c.keys) {
            Ok(claims) => return Ok(claims),
            Err(VerifyError::Invalid(m)) => return Err(invalid(m)),
            Err(VerifyError::UnknownKey) => {}
        }
        let keys = Arc::new(self.fetch_keys(&c.discovery.jwks_uri).await?);
        self.store(
            issuer,
            Cached {
                keys: keys.clone(),
                ..c
            },
        );
        token::verify(id_token, &keys).map_err(|e| match e {
            VerifyError::Invalid(m) => invalid(m),
            VerifyError::UnknownKey => invalid("no published key fits the ID token".into()),
        })
    }

    /// Exchanges the code for tokens.
    pub async fn exchange(&self, d: &Discovery, req: &CodeExchange<'_>) -> Result<Tokens, Failure> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", req.code),
            ("redirect_uri", req.redirect_uri),
            ("code_verifier", req.verifier),
            ("client_id", req.client_id),
        ];
        let mut http = self.http.post(&d.token_endpoint);
        if uses_post(d) {
            form.push(("client_secret", req.client_secret));
        } else {
            // RFC 6749 §2.3.1: both form-encoded before Basic encoding.
            http = http.basic_auth(
                percent_encode(req.client_id),
                Some(percent_encode(req.client_secret)),
            );
        }
        let (status, body) = self
            .read_json(http.form(&form))
            .await
            .map_err(|e| unavailable(format!("token endpoint: {e}")))?;
        if status != 200 {
            let error = body.get("error").and_then(Value::as_str).unwrap_or("?");
            return Err(Failure(
                Refusal::ProviderError,
                format!(
                    "token endpoint answered {status} ({})",
                    error.escape_debug().take(100).collect::<String>()
                ),
            ));
        }
        let Some(Value::String(id_token)) = body.get("id_token") else {
            return Err(Failure(
                Refusal::TokenInvalid,
                "the token endpoint gave no id_token".into(),
            ));
        };
        Ok(Tokens {
            id_token: id_token.clone(),
            access_token: body
                .get("access_token")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// The userinfo endpoint's answer for an access token: a JSON object.
    pub async fn userinfo(&self, endpoint: &str, access_token: &str) -> Result<Value, Failure> {
        let req = self.http.get(endpoint).bearer_auth(access_token);
        match self.read_json(req).await {
            Ok((200, info)) if info.is_object() => Ok(info),
            Ok((status, _)) => Err(unavailable(format!(
                "userinfo answered {status}, or not with a JSON object"
            ))),
            Err(e) => Err(unavailable(format!("userinfo: {e}"))),
        }
    }
}

/// What the token endpoint gave.
pub struct Tokens {
    pub id_token: String,
    pub access_token: Option<String>,
}

/// What the token endpoint is sent.
pub struct CodeExchange<'a> {
    pub code: &'a str,
    pub redirect_uri: &'a str,
    pub verifier: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
}

/// client_secret_basic unless the provider lists only client_secret_post.
fn uses_post(d: &Discovery) -> bool {
    d.token_endpoint_auth_methods_supported
        .as_ref()
        .is_some_and(|m| {
            !m.iter().any(|x| x == "client_secret_basic")
                && m.iter().any(|x| x == "client_secret_post")
        })
}

fn check_discovery(issuer: &str, d: &Discovery) -> Result<(), String> {
    if d.issuer != issuer {
        return Err(format!(
            "the discovery document names issuer `{}`, not the configured `{issuer}`",
            d.issuer.escape_debug().take(200).collect::<String>()
        ));
    }
    let userinfo = d.userinfo_endpoint.iter().map(|u| ("userinfo_endpoint", u));
    let endpoints = [
        ("authorization_endpoint", &d.authorization_endpoint),
        ("token_endpoint", &d.token_endpoint),
        ("jwks_uri", &d.jwks_uri),
    ];
    for (name, url) in endpoints.into_iter().chain(userinfo) {
        if !endpoint_allowed(issuer, url) {
            return Err(format!(
                "{name} `{}` must be an https:// URL",
                url.escape_debug().take(200).collect::<String>()
            ));
        }
    }
    if let Some(methods) = &d.code_challenge_methods_supported {
        if !methods.iter().any(|m| m == "S256") {
            return Err("the provider does not support PKCE with S256".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(issuer: &str) -> Discovery {
        Discovery {
            issuer: issuer.into(),
            authorization_endpoint: format!("{issuer}/auth"),
            token_endpoint: format!("{issuer}/token"),
            jwks_uri: format!("{issuer}/jwks"),
            userinfo_endpoint: None,
            token_endpoint_auth_methods_supported: None,
            code_challenge_methods_supported: None,
        }
    }

    #[test]
    fn discovery_documents_are_checked() {
        let i = "https://id.example.com";
        assert_eq!(check_discovery(i, &doc(i)), Ok(()));
        let e = check_discovery(i, &doc("https://evil.example.com")).unwrap_err();
        assert!(e.contains("not the configured"), "{e}");
        assert!(
            check_discovery(&format!("{i}/"), &doc(i)).is_err(),
            "exact match"
        );
        let mut d = doc(i);
        d.token_endpoint = "http://id.example.com/token".into();
        assert!(check_discovery(i, &d)
            .unwrap_err()
            .contains("token_endpoint"));
        let mut d = doc(i);
        d.userinfo_endpoint = Some("http://id.example.com/userinfo".into());
        assert!(check_discovery(i, &d)
            .unwrap_err()
            .contains("userinfo_endpoint"));
        let mut d = doc(i);
        d.code_challenge_methods_supported = Some(vec!["plain".into()]);
        assert!(check_discovery(i, &d).unwrap_err().contains("S256"));
    }

    #[test]
    fn client_authentication_method() {
        let mut d = doc("https://x");
        assert!(!uses_post(&d), "basic by default");
        d.token_endpoint_auth_methods_supported = Some(vec!["client_secret_post".into()]);
        assert!(uses_post(&d));
        d.token_endpoint_auth_methods_supported = Some(vec![
            "client_secret_post".into(),
            "client_secret_basic".into(),
        ]);
        assert!(!uses_post(&d));
    }
}
