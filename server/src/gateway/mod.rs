//! The OpenAI-compatible JSON API under `/v1`. Handlers are thin: they
//! authenticate, then hand the call to `proxy`, which checks access, reserves
//! coins, calls the provider and settles.

pub mod accountant;
pub mod directory;
pub mod error;
pub mod limiter;
pub mod protocol;
pub mod providers;
mod proxy;
mod stored;

use accountant::Accountant;
use app::domain::money::micro_to_coins;
use app::domain::policy::Verdict;
use app::ssr::keys::{AuthError, KeyOwner};
use app::ssr::owners::OwnerKind;
use app::ssr::{now_ms, pools, AppContext};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use error::ApiError;
use providers::Kind;
use serde_json::{json, Value};

#[derive(Clone)]
pub struct Gateway {
    pub ctx: AppContext,
    pub accountant: Accountant,
    pub directory: directory::Directory,
    pub limiter: limiter::Limiter,
    pub http: reqwest::Client,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// The id of one request, sent back as `x-request-id` and written to the ledger.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub fn router(gw: Gateway) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/balance", get(balance))
        .route("/v1/chat/completions", metered(Kind::Chat))
        .route("/v1/completions", metered(Kind::Completions))
        .route("/v1/embeddings", metered(Kind::Embeddings))
        .route("/v1/responses", metered(Kind::Responses))
        .route("/v1/messages", metered(Kind::Messages))
        .route("/v1/messages/count_tokens", post(proxy::count_tokens))
        // Matched before the catch-all below: a literal prefix wins over `{*rest}`.
        .route(
            "/v1/responses/{id}",
            get(stored::retrieve)
                .delete(stored::delete)
                .fallback(method_not_allowed),
        )
        .route("/v1/{*rest}", axum::routing::any(not_found))
        // The server-wide limit (`crate::body_limit`) has already refused
        // larger bodies with 413; this only lifts axum's 2 MB default for
        // the JSON extractor to the same size.
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::body_limit::API_BODY_LIMIT,
        ))
        .with_state(gw)
}

/// Gives every response an `x-request-id` (the caller's, if it sent a sane one).
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| caller_request_id_ok(v))
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Whether a caller's `x-request-id` may be used as is: short, plain, and not
/// in the shape of the ids the gateway writes itself (`lease-…` rows charge an
/// orphaned lease; a caller must not be able to make a call look like one).
fn caller_request_id_ok(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !v
            .to_ascii_lowercase()
            .starts_with(app::ssr::ledger::SYSTEM_ROW_PREFIX)
}

fn new_request_id() -> String {
    let mut b = [0u8; 12];
    if getrandom::fill(&mut b).is_err() {
        // Uniqueness, not secrecy, is what matters here.
        let t = now_ms().to_be_bytes();
        b[..8].copy_from_slice(&t);
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("req_{hex}")
}

async fn not_found() -> ApiError {
    ApiError::InvalidRequest("no such endpoint; see docs/api.md for /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, /v1/messages and /v1/balance".into())
}

/// Another method on `/v1/responses/{id}`: 405 with `Allow`, and an
/// OpenAI-shaped body like every other error of the API.
async fn method_not_allowed() -> Response {
    let mut resp = axum::response::IntoResponse::into_response(ApiError::MethodNotAllowed(
        "a stored response can only be read (GET) or deleted (DELETE)".into(),
    ));
    resp.headers_mut().insert(
        axum::http::header::ALLOW,
        HeaderValue::from_static("GET, HEAD, DELETE"),
    );
    resp
}

pub(crate) async fn auth(gw: &Gateway, headers: &HeaderMap) -> Result<KeyOwner, ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110, section 11.1).
            let (scheme, credentials) = v.trim_start().split_once([' ', '\t'])?;
            scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
        })
        // Anthropic's SDKs send the key as `x-api-key`.
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ApiError::InvalidApiKey(AuthError::Missing.to_string()));
    };
    let now = now_ms();
    let (owner, touch) = gw
        .directory
        .authenticate(presented, now)
        .await
        .map_err(|e| match e {
            AuthError::Unavailable => ApiError::AccountingUnavailable(e.to_string()),
            e => ApiError::InvalidApiKey(e.to_string()),
        })?;
    if touch {
        gw.accountant.touch(owner.key_id);
    }
    Ok(owner)
}

/// The owner of the API key a request presents: authentication as an
/// extractor, so a handler that takes a `Caller` cannot forget it.
pub struct Caller(pub KeyOwner);

impl axum::extract::FromRequestParts<Gateway> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        gw: &Gateway,
    ) -> Result<Self, ApiError> {
        auth(gw, &parts.headers).await.map(Caller)
    }
}

/// The caller's pool; a key whose owner has none yet is refused as blocked.
pub(crate) fn pool_of(owner: &KeyOwner) -> Result<&app::ssr::entities::pool::Model, ApiError> {
    owner.pool.as_ref().ok_or_else(|| {
        ApiError::PoolBlocked(format!(
            "{} `{}` has no coin pool yet; ask an admin to check the config",
            owner.kind.as_str(),
            owner.name
        ))
    })
}

/// Where consent for this owner is recorded in the UI.
pub(crate) fn consent_url(gw: &Gateway, owner: &KeyOwner) -> String {
    match owner.kind {
        OwnerKind::Client => format!("{}/clients/{}", gw.ctx.public_url, owner.name),
        OwnerKind::User => format!("{}/me", gw.ctx.public_url),
    }
}

async fn models(State(gw): State<Gateway>, Caller(owner): Caller) -> Result<Json<Value>, ApiError> {
    let snapshot = gw.ctx.config.load_full();
    let (settings, _) = proxy::settings_for(&snapshot.config, &owner);
    let consented = gw
        .directory
        .consents(owner.kind, owner.owner_id)
        .await
        .map_err(|e| {
            ApiError::AccountingUnavailable(format!("the database is unavailable: {e}"))
        })?;
    let data: Vec<Value> = snapshot
        .config
        .models
        .keys()
        .filter(|m| settings.access.decide(m, consented.contains(*m)).verdict == Verdict::Allowed)
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "tollgate"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn balance(
    State(gw): State<Gateway>,
    Caller(owner): Caller,
) -> Result<Json<Value>, ApiError> {
    let pool = pool_of(&owner)?;
    // Calls this instance finished are written behind their responses: wait
    // for them, so a balance read right after a call reflects it.
    gw.accountant.flush(std::time::Duration::from_secs(2)).await;
    let st = pools::current(&gw.ctx.db, pool, now_ms())
        .await
        .map_err(|e| {
            ApiError::AccountingUnavailable(format!("the database is unavailable: {e}"))
        })?;
    // What can be spent; `stored` also counts coins a lowered max or a block
    // holds back (they come back when the config allows).
    let available = if st.limit.is_blocked() { 0 } else { st.balance };
    let (max, unlimited) = match st.limit {
        app::domain::config::PoolLimit::Unlimited => (Value::Null, true),
        app::domain::config::PoolLimit::Limited(m) => (json!(micro_to_coins(m)), false),
    };
    Ok(Json(json!({
        "object": "balance",
        "owner": {"kind": owner.kind.as_str(), "name": owner.name},
        "balance": micro_to_coins(available),
        "stored": micro_to_coins(st.balance + st.held),
        "max": max,
        "refresh": micro_to_coins(st.refresh_micro),
        "unlimited": unlimited,
        "blocked": st.limit.is_blocked(),
    })))
}

pub(crate) type JsonBody = Result<Json<Value>, axum::extract::rejection::JsonRejection>;

/// A metered endpoint: `proxy::call` for one kind of call, its response
/// with the rate-limit headers its admission left.
fn metered(kind: Kind) -> axum::routing::MethodRouter<Gateway> {
    post(
        move |State(gw): State<Gateway>,
              Extension(id): Extension<RequestId>,
              caller: Result<Caller, ApiError>,
              body: JsonBody| {
            limiter::reporting(async move {
                let model = catalog_model(&gw, &body);
                let result = match caller {
                    Ok(caller) => proxy::call(gw, id, caller, body, kind).await,
                    Err(e) => Err(e),
                };
                with_model(result.unwrap_or_else(|e| error::render(kind, e)), model)
            })
        },
    )
}

/// The model a call asks for, if the catalog has it: the metrics' `model`
/// label, which must not grow with names callers make up.
pub(crate) fn catalog_model(gw: &Gateway, body: &JsonBody) -> Option<String> {
    let Ok(Json(v)) = body else { return None };
    let name = v.get("model")?.as_str()?;
    gw.ctx
        .config
        .load()
        .config
        .models
        .contains_key(name)
        .then(|| name.to_string())
}

pub(crate) fn with_model(mut resp: Response, model: Option<String>) -> Response {
    if let Some(m) = model {
        resp.extensions_mut().insert(crate::metrics::CallModel(m));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::caller_request_id_ok;

    #[test]
    fn a_caller_s_request_id_cannot_pose_as_a_system_row() {
        assert!(caller_request_id_ok("job-42_retry"));
        for bad in ["lease-7", "LEASE-7", "Lease-1", "", "a b", &"x".repeat(65)] {
            assert!(!caller_request_id_ok(bad), "{bad:?}");
        }
    }
}
