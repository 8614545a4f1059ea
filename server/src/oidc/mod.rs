//! Single sign-on with OpenID Connect: `GET /auth/oidc/start` sends the
//! browser to the provider (authorization code flow with PKCE S256, state
//! and nonce); `GET /auth/oidc/callback` takes the code back, exchanges it,
//! checks the ID token and signs the user in with a session, exactly as a
//! password sign-in does. These are GETs because they are navigation steps
//! of the protocol; the only state they change is the sign-in itself.
//!
//! Every refusal sends the browser to `/login?sso_error=CODE`, which shows
//! the reason; no session is created. Rules: `domain::oidc`; storage:
//! `ssr::oidc`; the provider's HTTP: `provider`; signatures: `token`.

mod provider;
mod token;

use app::domain::audit::{target, Action, Entry};
use app::domain::oidc::{
    check_claims, merge_userinfo, needs_userinfo, redirect_uri, refusal_location, AuthRequest,
    Expected, IdClaims, OidcSettings, Refusal, CALLBACK_PATH, START_PATH,
};
use app::domain::owner::Role;
use app::ssr::oidc::{self as store, SignInError, SignedIn};
use app::ssr::{audit, now_ms, session, AppContext};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use provider::{CodeExchange, Failure, Providers};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Clone)]
struct Sso {
    ctx: AppContext,
    providers: Arc<Providers>,
}

pub fn routes(ctx: AppContext, http: reqwest::Client) -> Router {
    Router::new()
        .route(START_PATH, get(start))
        .route(CALLBACK_PATH, get(callback))
        .with_state(Sso {
            ctx,
            providers: Arc::new(Providers::new(http)),
        })
}

/// A 303 to `location`, never cached, with these cookies.
fn redirect(location: &str, cookies: &[String]) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            headers.append(header::SET_COOKIE, v);
        }
    }
    (StatusCode::SEE_OTHER, headers).into_response()
}

async fn refused(ctx: &AppContext, f: Failure, addr: &str) -> Response {
    let Failure(reason, detail) = f;
    tracing::warn!("single sign-on refused ({}): {detail}", reason.code());
    record_refusal(ctx, reason, addr).await;
    // An answer that names no sign-in of ours leaves the browser's own
    // sign-in in progress: a forged link cannot cancel it.
    let keep = matches!(reason, Refusal::StateMissing | Refusal::StateUnknown);
    let cookies = if keep {
        Vec::new()
    } else {
        vec![store::clear_cookie(ctx.secure_cookies())]
    };
    redirect(&refusal_location(reason), &cookies)
}

/// A refused single sign-on in the audit trail, under the actor `sso` (the
/// account is not known, or not trusted, when a sign-in fails). Anyone can
/// send forged answers as fast as they like, so the same refusal from the
/// same address is recorded once per `audit::REPEAT_WINDOW_MS`.
async fn record_refusal(ctx: &AppContext, reason: Refusal, addr: &str) {
    let entry = Entry::new("sso", Action::SignInFailed, target("sso", "oidc"))
        .addr(addr)
        .detail(format!("single sign-on refused: {}", reason.code()));
    let repeated = audit::failed_sign_in_recorded_since(&ctx.db, &entry, now_ms())
        .await
        .unwrap_or_else(|e| {
            tracing::error!("cannot look up recent failed sign-ins in the audit trail: {e}");
            false
        });
    if !repeated {
        audit::record(&ctx.db, entry).await;
    }
}

/// Text from outside (the provider, the address bar) as it may go into the
/// log: at most `max` characters, control characters escaped, so it cannot
/// forge log lines.
fn untrusted(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure(Refusal::Internal, e.to_string())
}

fn oidc_settings(ctx: &AppContext) -> Result<(Arc<app::ssr::LoadedConfig>, OidcSettings), Failure> {
    let loaded = ctx.config.load_full();
    let settings = loaded
        .config
        .auth
        .oidc
        .clone()
        .ok_or_else(|| Failure(Refusal::NotConfigured, "auth.oidc is not configured".into()))?;
    Ok((loaded, settings))
}

fn client_addr(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default()
}

async fn start(State(s): State<Sso>, req: Request) -> Response {
    let addr = client_addr(&req);
    match begin(&s, &addr).await {
        Ok((url, cookie)) => redirect(&url, &[cookie]),
        Err(f) => refused(&s.ctx, f, &addr).await,
    }
}

/// Records the sign-in and builds the provider's address and our cookie.
async fn begin(s: &Sso, addr: &str) -> Result<(String, String), Failure> {
    let (_, o) = oidc_settings(&s.ctx)?;
    let d = s.providers.discovery(o.issuer.as_str()).await?;
    let started = store::begin(&s.ctx.db, o.issuer.as_str(), addr, now_ms())
        .await
        .map_err(internal)?
        .map_err(|r| Failure(r, format!("too many sign-ins in progress (from `{addr}`)")))?;
    let verifier = store::pkce_verifier(&started.secret);
    let url = AuthRequest {
        authorization_endpoint: &d.authorization_endpoint,
        client_id: o.client_id.as_str(),
        redirect_uri: &redirect_uri(&s.ctx.public_url),
        scope: &o.scope_param(),
        state: &started.state,
        nonce: &store::nonce(&started.secret),
        code_challenge: &store::pkce_challenge(&verifier),
    }
    .url();
    Ok((
        url,
        store::set_cookie(&started.secret, s.ctx.secure_cookies()),
    ))
}

/// The provider's answer: a code, or an error.
#[derive(Debug, Default, Deserialize)]
struct Answer {
    state: Option<String>,
    code: Option<String>,
    /// RFC 9207: the issuer that answered, when the provider says.
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(State(s): State<Sso>, req: Request) -> Response {
    let addr = client_addr(&req);
    let answer = axum::extract::Query::<Answer>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let secret = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(store::secret_from_cookie_header);
    match finish(&s, answer, secret).await {
        Ok(signed) => {
            tracing::info!(
                "`{}` signed in with single sign-on as {}",
                signed.username,
                signed.role.as_str()
            );
            audit::record(
                &s.ctx.db,
                Entry::new(
                    &signed.username,
                    Action::SignIn,
                    target("user", &signed.username),
                )
                .addr(&addr)
                .detail(format!("single sign-on as {}", signed.role.as_str())),
            )
            .await;
            let secure = s.ctx.secure_cookies();
            let to = if signed.role == Role::User {
                "/me"
            } else {
                "/clients"
            };
            redirect(
                to,
                &[
                    session::set_cookie(&signed.token, secure),
                    store::clear_cookie(secure),
                ],
            )
        }
        Err(f) => refused(&s.ctx, f, &addr).await,
    }
}

/// Takes the started sign-in back (once), then the provider's answer, the
/// tokens, the checks, and the user.
async fn finish(s: &Sso, answer: Answer, secret: Option<String>) -> Result<SignedIn, Failure> {
    let (_, o) = oidc_settings(&s.ctx)?;
    let state = answer.state.unwrap_or_default();
    let pending = store::finish(&s.ctx.db, &state, secret.as_deref(), now_ms())
        .await
        .map_err(internal)?
        .map_err(|r| Failure(r, "the state did not check out".into()))?;
    if pending.issuer != o.issuer.as_str() {
        return Err(Failure(
            Refusal::ConfigChanged,
            format!("started at `{}`", pending.issuer),
        ));
    }
    if answer
        .iss
        .as_deref()
        .is_some_and(|i| i != o.issuer.as_str())
    {
        return Err(Failure(
            Refusal::IssuerMismatch,
            "the answer's `iss` parameter names another issuer".into(),
        ));
    }
    if let Some(error) = answer.error {
        let description = answer.error_description.unwrap_or_default();
        return Err(Failure(
            Refusal::ProviderError,
            format!(
                "the provider answered `{}`: {}",
                untrusted(&error, 100),
                untrusted(&description, 300)
            ),
        ));
    }
    let code = answer
        .code
        .filter(|c| !c.is_empty() && c.len() <= 4096)
        .ok_or_else(|| Failure(Refusal::ProviderError, "no code".into()))?;
    // `finish` checked the cookie against the row, so it is there.
    let secret = secret.unwrap_or_default();
    let claims = id_token_claims(s, &o, &code, &secret).await?;
    let subject = claims.get("sub").and_then(|v| v.as_str()).unwrap_or("");
    store::sign_in(&s.ctx, &o, subject, &claims)
        .await
        .map_err(|e| match e {
            SignInError::Refused(r) => Failure(r, format!("subject `{}`", untrusted(subject, 100))),
            SignInError::Db(e) => internal(e),
        })
}

/// Exchanges the code and returns the ID token's claims, verified and checked.
async fn id_token_claims(
    s: &Sso,
    o: &OidcSettings,
    code: &str,
    secret: &str,
) -> Result<serde_json::Value, Failure> {
    let issuer = o.issuer.as_str();
    let var = o.client_secret_env.as_str();
    let client_secret = std::env::var(var)
        .map_err(|_| internal(format!("the environment variable `{var}` is not set")))?;
    let d = s.providers.discovery(issuer).await?;
    let tokens = s
        .providers
        .exchange(
            &d,
            &CodeExchange {
                code,
                redirect_uri: &redirect_uri(&s.ctx.public_url),
                verifier: &store::pkce_verifier(secret),
                client_id: o.client_id.as_str(),
                client_secret: &client_secret,
            },
        )
        .await?;
    let mut claims = s.providers.verify(issuer, &tokens.id_token).await?;
    let parsed: IdClaims = serde_json::from_value(claims.clone())
        .map_err(|e| Failure(Refusal::TokenInvalid, format!("claims: {e}")))?;
    let expected = Expected {
        issuer,
        client_id: o.client_id.as_str(),
        nonce: &store::nonce(secret),
        leeway_secs: i64::from(o.leeway_secs.0),
        now_secs: now_ms() / 1000,
    };
    check_claims(&parsed, &expected).map_err(|r| {
        Failure(
            r,
            format!(
                "iss `{}`, exp {}, iat {}, now {}",
                untrusted(&parsed.iss, 100),
                parsed.exp,
                parsed.iat,
                expected.now_secs
            ),
        )
    })?;
    if needs_userinfo(&claims, o) {
        if let (Some(endpoint), Some(access_token)) = (&d.userinfo_endpoint, &tokens.access_token) {
            let info = s.providers.userinfo(endpoint, access_token).await?;
            tracing::debug!("single sign-on: claims completed from the userinfo endpoint");
            merge_userinfo(&mut claims, &info)
                .map_err(|r| Failure(r, "the userinfo answer is about another subject".into()))?;
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::untrusted;

    #[test]
    fn outside_text_cannot_forge_log_lines() {
        assert_eq!(
            untrusted("denied\nWARN forged", 100),
            "denied\\nWARN forged"
        );
        assert_eq!(untrusted("äöü", 2), "äö");
        assert_eq!(untrusted("\u{1b}[31m", 10), "\\u{1b}[31m");
    }
}
