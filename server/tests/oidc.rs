//! Single sign-on over real HTTP against a stand-in OpenID provider (an
//! outside service: discovery, keys and a token endpoint that checks PKCE
//! and the client secret, signing ID tokens with a test RSA key). The test
//! plays the browser: it follows `/auth/oidc/start` to the provider's
//! address, and comes back to `/auth/oidc/callback` with a code. The same
//! flow against the real `oidc-provider` package, in Chromium, is
//! end2end/tests/oidc.spec.ts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const KEY_DER: &[u8] = include_bytes!("../src/oidc/test_key.der");
const KEY_N: &str = include_str!("../src/oidc/test_key.n");
const SECRET: &str = "s3cret: with spaces & symbols";

fn jwk(kid: &str) -> Value {
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": KEY_N.trim(), "e": "AQAB"})
}

fn sign(kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.to_string());
    encode(&h, claims, &EncodingKey::from_rsa_der(KEY_DER)).unwrap()
}

fn now() -> i64 {
    app::ssr::now_ms() / 1000
}

#[derive(Default)]
struct Provider {
    base: Mutex<String>,
    /// code → (PKCE challenge, ID token)
    codes: Mutex<HashMap<String, (String, String)>>,
    /// Whether discovery names a userinfo endpoint, and its answers by access token.
    userinfo_on: std::sync::atomic::AtomicBool,
    userinfo: Mutex<HashMap<String, Value>>,
    keys: Mutex<Vec<Value>>,
    jwks_fetches: AtomicU64,
    last_basic: Mutex<Option<String>>,
}

async fn discovery(State(p): State<Arc<Provider>>) -> Json<Value> {
    let base = p.base.lock().unwrap().clone();
    let mut doc = json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/auth"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "code_challenge_methods_supported": ["S256"],
    });
    if p.userinfo_on.load(Ordering::SeqCst) {
        doc["userinfo_endpoint"] = json!(format!("{base}/userinfo"));
    }
    Json(doc)
}

async fn userinfo(State(p): State<Arc<Provider>>, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match p.userinfo.lock().unwrap().get(token) {
        Some(info) => Json(info.clone()).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn jwks(State(p): State<Arc<Provider>>) -> Json<Value> {
    p.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "keys": *p.keys.lock().unwrap() }))
}

async fn token(
    State(p): State<Arc<Provider>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    *p.last_basic.lock().unwrap() = basic.clone();
    let refuse = |e: &str| (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response();
    // tollgate:<secret>, each form-encoded, then Basic.
    let expected = format!(
        "Basic {}",
        base64_std(format!("tollgate:{}", app::domain::text::percent_encode(SECRET)).as_bytes())
    );
    if basic.as_deref() != Some(expected.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return refuse("unsupported_grant_type");
    }
    let code = form.get("code").cloned().unwrap_or_default();
    let Some((challenge, id_token)) = p.codes.lock().unwrap().remove(&code) else {
        return refuse("invalid_grant");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if app::ssr::oidc::pkce_challenge(&verifier) != challenge {
        return refuse("invalid_grant");
    }
    Json(
        json!({"access_token": format!("at-{code}"), "token_type": "Bearer", "id_token": id_token}),
    )
    .into_response()
}

fn base64_std(bytes: &[u8]) -> String {
    let url = app::ssr::oidc::base64url(bytes);
    let mut s: String = url
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !s.len().is_multiple_of(4) {
        s.push('=');
    }
    s
}

async fn provider() -> (String, Arc<Provider>) {
    let p = Arc::new(Provider::default());
    p.keys.lock().unwrap().push(jwk("k1"));
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/token", post(token))
        .route("/userinfo", get(userinfo))
        .with_state(p.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *p.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, p)
}

fn config(issuer: &str, create_users: bool, local: bool) -> String {
    format!(
        "\
models:
  dummy: {{ provider: dummy, price: {{ input: 0, output: 0 }} }}
users:
  default: {{ max: 5, starting: 5, model_access: {{ whitelist: [dummy] }} }}
auth:
  local: {local}
  oidc:
    issuer: {issuer}
    client_id: tollgate
    client_secret_env: TG_TEST_OIDC_SECRET
    display_name: Test IdP
    role_claim: groups
    roles: {{ admin: [admins], manager: [managers] }}
    create_users: {create_users}
"
    )
}

async fn app_with(
    backend: Backend,
    create_users: bool,
    local: bool,
) -> (TestApp, String, Arc<Provider>) {
    let (issuer, p) = provider().await;
    let app = TestApp::builder(backend)
        .config(&config(&issuer, create_users, local))
        .env("TG_TEST_OIDC_SECRET", SECRET)
        .spawn()
        .await;
    (app, issuer, p)
}

/// A sign-in started as a browser would: the provider's address and our cookie.
struct Started {
    state: String,
    nonce: String,
    challenge: String,
    cookie: String,
}

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

async fn start(app: &TestApp, issuer: &str) -> Started {
    let resp = app
        .http
        .get(format!("{}/auth/oidc/start", app.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "{}", app.log());
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{issuer}/auth?")),
        "{location}"
    );
    let url = reqwest::Url::parse(&location).unwrap();
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "tollgate");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(
        q["redirect_uri"],
        format!("{}/auth/oidc/callback", app.url())
    );
    assert_eq!(q["scope"], "openid");
    let cookie = set_cookies(&resp)
        .into_iter()
        .find(|c| c.starts_with("tg_oidc="))
        .expect("the binding cookie");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && cookie.contains("Max-Age=600"),
        "{cookie}"
    );
    Started {
        state: q["state"].clone(),
        nonce: q["nonce"].clone(),
        challenge: q["code_challenge"].clone(),
        cookie: cookie.split(';').next().unwrap().to_string(),
    }
}

/// Where the callback sent the browser, and the cookies it set.
struct Landed {
    location: String,
    cookies: Vec<String>,
}

impl Landed {
    fn session(&self) -> Option<String> {
        self.cookies
            .iter()
            .find(|c| c.starts_with("tg_session=") && !c.starts_with("tg_session=;"))
            .map(|c| c.split(';').next().unwrap().to_string())
    }

    fn refused(&self, code: &str) {
        assert_eq!(self.location, format!("/login?sso_error={code}"));
        assert_eq!(self.session(), None, "no session on a refusal");
    }
}

async fn callback(app: &TestApp, query: &[(&str, &str)], cookie: Option<&str>) -> Landed {
    let mut req = app
        .http
        .get(format!("{}/auth/oidc/callback", app.url()))
        .query(query);
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 303, "{}", app.log());
    Landed {
        location: resp.headers()["location"].to_str().unwrap().to_string(),
        cookies: set_cookies(&resp),
    }
}

fn claims(issuer: &str, s: &Started, sub: &str, extra: Value) -> Value {
    let mut c = json!({
        "iss": issuer, "sub": sub, "aud": "tollgate",
        "exp": now() + 300, "iat": now(), "nonce": s.nonce,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

static CODES: AtomicU64 = AtomicU64::new(0);

/// The provider's part: the person signed in, a code for this token.
fn grant(p: &Provider, s: &Started, id_token: String) -> String {
    let code = format!("code-{}", CODES.fetch_add(1, Ordering::SeqCst));
    p.codes
        .lock()
        .unwrap()
        .insert(code.clone(), (s.challenge.clone(), id_token));
    code
}

/// A whole sign-in whose ID token `token` makes from the started sign-in.
async fn sign_in(
    app: &TestApp,
    issuer: &str,
    p: &Provider,
    token: impl FnOnce(&Started) -> String,
) -> Landed {
    let s = start(app, issuer).await;
    let code = grant(p, &s, token(&s));
    callback(
        app,
        &[("code", &code), ("state", &s.state)],
        Some(&s.cookie),
    )
    .await
}

async fn whoami(app: &TestApp, session: &str) -> Value {
    let resp = app
        .http
        .post(format!("{}/api/current_user", app.url()))
        .header("Accept", "application/json")
        .header("Origin", app.url())
        .header("Cookie", session)
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

async fn person(app: &TestApp, issuer: &str, p: &Provider, sub: &str, extra: Value) -> Landed {
    sign_in(app, issuer, p, |s| {
        sign("k1", &claims(issuer, s, sub, extra))
    })
    .await
}

on_backends!(sign_in_and_roles, sign_in_and_roles_story);
async fn sign_in_and_roles_story(backend: Backend) {
    let (app, issuer, p) = app_with(backend, true, true).await;

    // alice, in `admins`, gets an account and lands on /clients as admin.
    let alice = person(
        &app,
        &issuer,
        &p,
        "sub-alice",
        json!({"preferred_username": "alice", "groups": ["admins"]}),
    )
    .await;
    assert_eq!(alice.location, "/clients", "{}", app.log());
    let session = alice.session().expect("a session");
    assert!(alice
        .cookies
        .iter()
        .any(|c| c.starts_with("tg_session=") && c.contains("HttpOnly")));
    assert!(
        alice
            .cookies
            .iter()
            .any(|c| c.starts_with("tg_oidc=;") && c.contains("Max-Age=0")),
        "the binding cookie is cleared"
    );
    assert_eq!(
        trail(&app, "sign_in").await,
        vec![(
            "alice".to_string(),
            "user:alice".to_string(),
            "single sign-on as admin".to_string()
        )],
        "the sign-in is in the audit trail"
    );
    assert_eq!(
        whoami(&app, &session).await,
        json!({"username": "alice", "role": "admin"})
    );
    assert!(
        p.last_basic
            .lock()
            .unwrap()
            .as_deref()
            .unwrap()
            .starts_with("Basic "),
        "client_secret_basic"
    );

    // Another person also calling themselves alice gets alice-2, a manager;
    // matching is by subject, never by name.
    let other = person(
        &app,
        &issuer,
        &p,
        "sub-other",
        json!({"preferred_username": "alice", "groups": ["managers", "staff"]}),
    )
    .await;
    assert_eq!(other.location, "/clients");
    assert_eq!(
        whoami(&app, &other.session().unwrap()).await,
        json!({"username": "alice-2", "role": "manager"})
    );

    // carol, in no mapped group, is a user, named from her email.
    let carol = person(
        &app,
        &issuer,
        &p,
        "sub-carol",
        json!({"email": "carol@example.com", "groups": "staff"}),
    )
    .await;
    assert_eq!(carol.location, "/me");
    assert_eq!(
        whoami(&app, &carol.session().unwrap()).await,
        json!({"username": "carol", "role": "user"})
    );

    // alice leaves `admins`: she is the last active admin, so she stays one.
    let again = person(
        &app,
        &issuer,
        &p,
        "sub-alice",
        json!({"preferred_username": "renamed", "groups": []}),
    )
    .await;
    assert_eq!(
        whoami(&app, &again.session().unwrap()).await,
        json!({"username": "alice", "role": "admin"})
    );
    assert!(app.log().contains("they stay admin"), "{}", app.log());

    // Once carol is an admin, alice's next sign-in follows the mapping.
    person(
        &app,
        &issuer,
        &p,
        "sub-carol",
        json!({"groups": ["admins"]}),
    )
    .await;
    let demoted = person(&app, &issuer, &p, "sub-alice", json!({"groups": []})).await;
    assert_eq!(demoted.location, "/me");
    assert_eq!(
        whoami(&app, &demoted.session().unwrap()).await["role"],
        "user"
    );

    // A deactivated account is refused.
    let carol_id = app::ssr::owners::user_by_name(&app.db, "carol")
        .await
        .unwrap()
        .unwrap()
        .id;
    app::ssr::owners::update_role_or_active(&app.db, alice_id(&app).await, Some("admin"), None)
        .await
        .unwrap();
    app::ssr::owners::update_role_or_active(&app.db, carol_id, None, Some(false))
        .await
        .unwrap();
    person(
        &app,
        &issuer,
        &p,
        "sub-carol",
        json!({"groups": ["admins"]}),
    )
    .await
    .refused("user_inactive");

    // An account made by single sign-on has no password that works.
    let (status, _) = login(&app, "alice-2", "!sso").await;
    assert_eq!(status, 401);
}

/// The audit trail's entries with this action, as (actor, target, detail).
async fn trail(app: &TestApp, action: &str) -> Vec<(String, String, String)> {
    use app::ssr::entities::audit_log;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq(action))
        .order_by_asc(audit_log::Column::Seq)
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.target, e.detail))
        .collect()
}

async fn alice_id(app: &TestApp) -> i64 {
    app::ssr::owners::user_by_name(&app.db, "alice")
        .await
        .unwrap()
        .unwrap()
        .id
}

async fn login(app: &TestApp, user: &str, password: &str) -> (u16, String) {
    let resp = app
        .http
        .post(format!("{}/api/login", app.url()))
        .header("Accept", "application/json")
        .header("Origin", app.url())
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

on_backends!(state_is_checked, state_story);
async fn state_story(backend: Backend) {
    let (app, issuer, p) = app_with(backend, true, true).await;
    let token = |s: &Started| {
        sign(
            "k1",
            &claims(
                &issuer,
                s,
                "sub-dora",
                json!({"preferred_username": "dora"}),
            ),
        )
    };

    // A forged state: refused, and the real sign-in is still there.
    let s = start(&app, &issuer).await;
    let code = grant(&p, &s, token(&s));
    // The last character changed (to one it is not: a fixed `0` left the
    // state as it was whenever it already ended in `0`).
    let last = if s.state.ends_with('0') { "1" } else { "0" };
    let forged = format!("{}{last}", &s.state[..s.state.len() - 1]);
    let l = callback(
        &app,
        &[("code", &code), ("state", &forged)],
        Some(&s.cookie),
    )
    .await;
    l.refused("state_invalid");
    assert!(
        l.cookies.is_empty(),
        "a forged answer does not cancel the browser's sign-in"
    );
    // In the audit trail once, however often it is sent.
    callback(
        &app,
        &[("code", &code), ("state", &forged)],
        Some(&s.cookie),
    )
    .await
    .refused("state_invalid");
    let failed = trail(&app, "sign_in_failed").await;
    assert_eq!(
        failed,
        vec![(
            "sso".to_string(),
            "sso:oidc".to_string(),
            "single sign-on refused: state_invalid".to_string()
        )]
    );
    callback(&app, &[("code", &code)], Some(&s.cookie))
        .await
        .refused("state_missing");
    let huge = "a".repeat(8_000);
    let resp = app
        .http
        .get(format!("{}/auth/oidc/callback?state={huge}", app.url()))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status() == 303 || resp.status() == 414 || resp.status() == 431,
        "{}",
        resp.status()
    );
    // The genuine answer works, once.
    let ok = callback(
        &app,
        &[("code", &code), ("state", &s.state)],
        Some(&s.cookie),
    )
    .await;
    assert_eq!(ok.location, "/me", "{}", app.log());
    callback(
        &app,
        &[("code", &code), ("state", &s.state)],
        Some(&s.cookie),
    )
    .await
    .refused("state_invalid");

    // Without the cookie of the browser that started it: refused, and used up.
    let s = start(&app, &issuer).await;
    let code = grant(&p, &s, token(&s));
    callback(&app, &[("code", &code), ("state", &s.state)], None)
        .await
        .refused("browser_mismatch");
    callback(
        &app,
        &[("code", &code), ("state", &s.state)],
        Some(&s.cookie),
    )
    .await
    .refused("state_invalid");
    let other = start(&app, &issuer).await;
    callback(
        &app,
        &[("code", &code), ("state", &s.state)],
        Some(&other.cookie),
    )
    .await
    .refused("state_invalid");

    // The provider said no.
    let s = start(&app, &issuer).await;
    callback(
        &app,
        &[
            ("state", &s.state),
            ("error", "access_denied"),
            ("error_description", "<b>no</b>"),
        ],
        Some(&s.cookie),
    )
    .await
    .refused("provider_error");
    // An answer naming another issuer (RFC 9207).
    let s = start(&app, &issuer).await;
    let code = grant(&p, &s, token(&s));
    callback(
        &app,
        &[
            ("code", &code),
            ("state", &s.state),
            ("iss", "https://evil.example"),
        ],
        Some(&s.cookie),
    )
    .await
    .refused("issuer_mismatch");
    // A code the provider does not know (or a wrong PKCE verifier): its token endpoint refuses.
    let s = start(&app, &issuer).await;
    callback(
        &app,
        &[("code", "made-up"), ("state", &s.state)],
        Some(&s.cookie),
    )
    .await
    .refused("provider_error");
    let s = start(&app, &issuer).await;
    let other = start(&app, &issuer).await;
    let code = grant(&p, &other, token(&s));
    callback(
        &app,
        &[("code", &code), ("state", &s.state)],
        Some(&s.cookie),
    )
    .await
    .refused("provider_error");

    // An expired sign-in (the row is aged in the database).
    let s = start(&app, &issuer).await;
    let code = grant(&p, &s, token(&s));
    use sea_orm::ConnectionTrait;
    app.db
        .execute_unprepared("UPDATE oidc_logins SET created_at = created_at - 601000")
        .await
        .unwrap();
    callback(
        &app,
        &[("code", &code), ("state", &s.state)],
        Some(&s.cookie),
    )
    .await
    .refused("state_expired");
}

/// Makes an ID token for a started sign-in.
type MakeToken<'a> = Box<dyn Fn(&Started) -> String + 'a>;

on_backends!(id_tokens_are_checked, id_token_story);
async fn id_token_story(backend: Backend) {
    let (app, issuer, p) = app_with(backend, true, true).await;
    let base = |s: &Started| {
        claims(
            &issuer,
            s,
            "sub-erin",
            json!({"preferred_username": "erin"}),
        )
    };
    let with = |s: &Started, k: &str, v: Value| {
        let mut c = base(s);
        c[k] = v;
        c
    };
    let cases: Vec<(&str, MakeToken)> = vec![
        (
            "token_expired",
            Box::new(|s| sign("k1", &with(s, "exp", json!(now() - 3600)))),
        ),
        (
            "token_expired",
            Box::new(|s| {
                let mut c = with(s, "exp", json!(now() - 61));
                c["iat"] = json!(now() - 7200);
                sign("k1", &c)
            }),
        ),
        (
            "token_invalid",
            Box::new(|s| sign("k1", &with(s, "exp", json!("never")))),
        ),
        (
            "token_invalid",
            Box::new(|s| sign("k1", &with(s, "iat", json!(now() + 3600)))),
        ),
        (
            "audience_mismatch",
            Box::new(|s| sign("k1", &with(s, "aud", json!("someone-else")))),
        ),
        (
            "audience_mismatch",
            Box::new(|s| sign("k1", &with(s, "aud", json!(["tollgate", "other"])))),
        ),
        (
            "issuer_mismatch",
            Box::new(|s| sign("k1", &with(s, "iss", json!("https://evil.example")))),
        ),
        (
            "nonce_mismatch",
            Box::new(|s| sign("k1", &with(s, "nonce", json!("replayed")))),
        ),
        (
            "nonce_mismatch",
            Box::new(|s| {
                let mut c = base(s);
                c.as_object_mut().unwrap().remove("nonce");
                sign("k1", &c)
            }),
        ),
        // A key never published.
        ("token_invalid", Box::new(|s| sign("k9", &base(s)))),
        // alg none, and HS256 keyed with the public key.
        (
            "token_invalid",
            Box::new(|s| {
                let b = |v: &Value| app::ssr::oidc::base64url(v.to_string().as_bytes());
                format!(
                    "{}.{}.",
                    b(&json!({"alg": "none", "kid": "k1"})),
                    b(&base(s))
                )
            }),
        ),
        (
            "token_invalid",
            Box::new(|s| {
                let mut h = Header::new(Algorithm::HS256);
                h.kid = Some("k1".into());
                encode(
                    &h,
                    &base(s),
                    &EncodingKey::from_secret(KEY_N.trim().as_bytes()),
                )
                .unwrap()
            }),
        ),
        ("token_invalid", Box::new(|_| "not.a.token".into())),
    ];
    for (code, make) in cases {
        let l = sign_in(&app, &issuer, &p, |s| make(s)).await;
        assert_eq!(
            l.location,
            format!("/login?sso_error={code}"),
            "{}",
            app.log()
        );
        assert_eq!(l.session(), None);
    }
    assert!(
        app::ssr::owners::user_by_name(&app.db, "erin")
            .await
            .unwrap()
            .is_none(),
        "no account for a refused token"
    );

    // Rotated keys: a token under a new kid makes Tollgate fetch the keys again, once.
    let fetches = p.jwks_fetches.load(Ordering::SeqCst);
    p.keys.lock().unwrap().push(jwk("k2"));
    let l = sign_in(&app, &issuer, &p, |s| sign("k2", &base(s))).await;
    assert_eq!(l.location, "/me", "{}", app.log());
    assert_eq!(p.jwks_fetches.load(Ordering::SeqCst), fetches + 1);
    // Several audiences with azp naming us are accepted.
    let l = sign_in(&app, &issuer, &p, |s| {
        let mut c = with(s, "aud", json!(["tollgate", "other"]));
        c["azp"] = json!("tollgate");
        sign("k1", &c)
    })
    .await;
    assert_eq!(l.location, "/me");
}

on_backends!(unknown_users_and_local_off, unknown_users_story);
async fn unknown_users_story(backend: Backend) {
    let (app, issuer, p) = app_with(backend, false, false).await;
    person(
        &app,
        &issuer,
        &p,
        "sub-zed",
        json!({"preferred_username": "zed", "groups": ["admins"]}),
    )
    .await
    .refused("unknown_user");
    assert!(app::ssr::owners::user_by_name(&app.db, "zed")
        .await
        .unwrap()
        .is_none());

    // Local accounts off: the password sign-in refuses, for every account.
    let (status, body) = login(&app, "zed", "whatever password").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Password sign-in is turned off"), "{body}");
    let resp = app
        .http
        .post(format!("{}/api/login_options", app.url()))
        .header("Accept", "application/json")
        .header("Origin", app.url())
        .send()
        .await
        .unwrap();
    let options: Value = resp.json().await.unwrap();
    assert_eq!(
        options,
        json!({"local": false, "sso_label": "Sign in with Test IdP"})
    );

    // Starting sign-ins needs no account, so their number is bounded per address.
    for _ in 0..app::ssr::oidc::MAX_PENDING_PER_ADDR {
        start(&app, &issuer).await;
    }
    let resp = app
        .http
        .get(format!("{}/auth/oidc/start", app.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["location"],
        "/login?sso_error=too_many_pending"
    );
}

on_backends!(no_sso_configured, no_sso_story);
async fn no_sso_story(backend: Backend) {
    let app = TestApp::builder(backend)
        .config("models: {}\n")
        .spawn()
        .await;
    for path in ["/auth/oidc/start", "/auth/oidc/callback?state=x&code=y"] {
        let resp = app
            .http
            .get(format!("{}{path}", app.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303);
        assert_eq!(
            resp.headers()["location"],
            "/login?sso_error=sso_not_configured"
        );
    }
    // The secret's variable must be set: the file is refused, naming the field.
    let (issuer, _p) = provider().await;
    let out = tollgate(
        &["check-config"],
        &{
            let path = app.tdb.dir.path().join("sso.yaml");
            write(&path, &config(&issuer, true, true));
            path
        },
        &app.tdb.url,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("sso.yaml:10:5: auth.oidc.client_secret_env"),
        "{err}"
    );
    assert!(err.contains("TG_TEST_OIDC_SECRET"), "{err}");
}

on_backends!(live_reload_changes_the_provider, reload_story);
async fn reload_story(backend: Backend) {
    let (app, issuer, p) = app_with(backend, true, true).await;
    let s = start(&app, &issuer).await;
    let generation = app.health().await.1["config"]["generation"]
        .as_i64()
        .unwrap();

    // Another provider, by a reload.
    let (issuer2, p2) = provider().await;
    app.write_config(&config(&issuer2, true, true));
    app.wait_health(|h| h["config"]["generation"].as_i64() == Some(generation + 1))
        .await;
    // A sign-in started at the old provider is refused.
    let code = grant(
        &p,
        &s,
        sign(
            "k1",
            &claims(
                &issuer,
                &s,
                "sub-x",
                json!({"preferred_username": "xavier"}),
            ),
        ),
    );
    callback(
        &app,
        &[("code", &code), ("state", &s.state)],
        Some(&s.cookie),
    )
    .await
    .refused("config_changed");
    // New ones go to the new provider.
    let l = person(
        &app,
        &issuer2,
        &p2,
        "sub-x",
        json!({"preferred_username": "xavier"}),
    )
    .await;
    assert_eq!(l.location, "/me", "{}", app.log());

    // An edit naming an unset variable is refused with its field; the
    // provider in force stays.
    app.write_config(
        &config(&issuer, true, true).replace("TG_TEST_OIDC_SECRET", "TG_TEST_OIDC_UNSET"),
    );
    let h = app
        .wait_health(|h| h["config"]["last_reload_ok"] == json!(false))
        .await;
    let error = h["config"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("auth.oidc.client_secret_env") && error.contains("TG_TEST_OIDC_UNSET"),
        "{error}"
    );
    start(&app, &issuer2).await;
}

on_backends!(userinfo_fills_in_claims, userinfo_story);
async fn userinfo_story(backend: Backend) {
    let (issuer, p) = provider().await;
    p.userinfo_on.store(true, Ordering::SeqCst);
    let app = TestApp::builder(backend)
        .config(&config(&issuer, true, true))
        .env("TG_TEST_OIDC_SECRET", SECRET)
        .spawn()
        .await;
    // As a provider following OpenID Connect Core §5.4 does for the code
    // flow: the ID token has only the registered claims; name and groups
    // come from userinfo.
    let sign_in_with = |sub: &'static str, info: Option<Value>| {
        let (app, issuer, p) = (&app, &issuer, &p);
        async move {
            let s = start(app, issuer).await;
            let code = grant(p, &s, sign("k1", &claims(issuer, &s, sub, json!({}))));
            if let Some(info) = info {
                p.userinfo
                    .lock()
                    .unwrap()
                    .insert(format!("at-{code}"), info);
            }
            callback(
                app,
                &[("code", &code), ("state", &s.state)],
                Some(&s.cookie),
            )
            .await
        }
    };
    let l = sign_in_with(
        "sub-u",
        Some(json!({"sub": "sub-u", "preferred_username": "ursula", "groups": ["admins"]})),
    )
    .await;
    assert_eq!(l.location, "/clients", "{}", app.log());
    assert_eq!(
        whoami(&app, &l.session().unwrap()).await,
        json!({"username": "ursula", "role": "admin"})
    );
    // An answer about someone else, or none at all: refused.
    sign_in_with(
        "sub-v",
        Some(json!({"sub": "sub-u", "preferred_username": "victor"})),
    )
    .await
    .refused("token_invalid");
    sign_in_with("sub-v", None)
        .await
        .refused("provider_unavailable");
    assert!(app::ssr::owners::user_by_name(&app.db, "victor")
        .await
        .unwrap()
        .is_none());
}
