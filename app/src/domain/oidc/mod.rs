//! Single sign-on with OpenID Connect: the rules of the flow that need no
//! I/O: the authorization URL, the checks of an ID token's claims, the role
//! a sign-in maps to, the name a new account gets, and what the userinfo
//! endpoint may add. The `auth:` section of the config is `settings`; the
//! stable reasons a sign-in is refused are `refusal`.
//!
//! The HTTP side (discovery, the token endpoint, signatures against the
//! provider's keys) is `server::oidc`; the database side is `ssr::oidc`.

mod refusal;
mod settings;

pub use refusal::*;
pub use settings::*;

use super::names::{validate_owner_name, MAX_NAME_LEN};
use super::owner::Role;
use super::text::percent_encode;
use serde::Deserialize;

// ---------------------------------------------------------------------------
// The authorization request
// ---------------------------------------------------------------------------

/// What one authorization request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest<'a> {
    pub authorization_endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
    /// The PKCE S256 challenge: base64url(SHA-256(verifier)).
    pub code_challenge: &'a str,
}

impl AuthRequest<'_> {
    /// The URL the browser is sent to (the code flow with PKCE S256).
    pub fn url(&self) -> String {
        let params = [
            ("response_type", "code"),
            ("client_id", self.client_id),
            ("redirect_uri", self.redirect_uri),
            ("scope", self.scope),
            ("state", self.state),
            ("nonce", self.nonce),
            ("code_challenge", self.code_challenge),
            ("code_challenge_method", "S256"),
        ];
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        let sep = if self.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}{}", self.authorization_endpoint, query.join("&"))
    }
}

/// The redirect URI registered at the provider, from the public URL.
pub fn redirect_uri(public_url: &str) -> String {
    format!("{}{CALLBACK_PATH}", public_url.trim_end_matches('/'))
}

pub const START_PATH: &str = "/auth/oidc/start";
pub const CALLBACK_PATH: &str = "/auth/oidc/callback";
/// How long a started sign-in may take before its callback is refused.
pub const PENDING_TTL_MS: i64 = 10 * 60 * 1000;

// ---------------------------------------------------------------------------
// ID token claims
// ---------------------------------------------------------------------------

/// `aud`: one audience or several.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn list(&self) -> &[String] {
        match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(v) => v,
        }
    }
}

/// The registered claims of an ID token that the checks read. Times are
/// whole seconds; a fractional or missing time is refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    #[serde(default)]
    pub azp: Option<String>,
    pub exp: i64,
    pub iat: i64,
    #[serde(default)]
    pub nonce: Option<String>,
}

/// What the ID token of this sign-in must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub leeway_secs: i64,
    pub now_secs: i64,
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// OpenID Connect Core §3.1.3.7, the checks after the signature.
pub fn check_claims(c: &IdClaims, e: &Expected) -> Result<(), Refusal> {
    if c.iss != e.issuer {
        return Err(Refusal::IssuerMismatch);
    }
    let aud = c.aud.list();
    if !aud.iter().any(|a| a == e.client_id) {
        return Err(Refusal::AudienceMismatch);
    }
    // With several audiences, `azp` must name us; when present, always.
    match &c.azp {
        Some(azp) if azp != e.client_id => return Err(Refusal::AudienceMismatch),
        None if aud.len() > 1 => return Err(Refusal::AudienceMismatch),
        _ => {}
    }
    if c.exp.saturating_add(e.leeway_secs) <= e.now_secs {
        return Err(Refusal::TokenExpired);
    }
    if c.iat > e.now_secs.saturating_add(e.leeway_secs) {
        return Err(Refusal::TokenInvalid);
    }
    if !c.nonce.as_deref().is_some_and(|n| same(n, e.nonce)) {
        return Err(Refusal::NonceMismatch);
    }
    if c.sub.is_empty() || c.sub.len() > 255 {
        return Err(Refusal::TokenInvalid);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Roles and names
// ---------------------------------------------------------------------------

/// The string values of a claim: a string, or the strings in an array.
fn claim_values<'a>(claims: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    match claims.get(name) {
        Some(serde_json::Value::String(s)) => vec![s.as_str()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    }
}

/// The role the claims map to, if the mapping decides one: admin before
/// manager. `None` when no `role_claim` is configured (roles are then kept
/// as set in the console).
pub fn mapped_role(claims: &serde_json::Value, s: &OidcSettings) -> Option<Role> {
    let name = s.role_claim.as_ref()?;
    let values = claim_values(claims, name.as_str());
    let has = |list: &[ClaimValue]| list.iter().any(|v| values.contains(&v.as_str()));
    Some(if has(&s.roles.admin) {
        Role::Admin
    } else if has(&s.roles.manager) {
        Role::Manager
    } else {
        s.default_role.role()
    })
}

/// The role an account created at this sign-in gets.
pub fn role_for_new_user(claims: &serde_json::Value, s: &OidcSettings) -> Role {
    mapped_role(claims, s).unwrap_or(s.default_role.role())
}

/// Room left for a `-N` suffix on a clash.
const BASE_NAME_LEN: usize = MAX_NAME_LEN - 6;

/// Makes a valid account name from a claim value: characters outside
/// `A-Z a-z 0-9 . _ -` become `-`, the name starts at its first letter or
/// digit, and it is cut to leave room for a suffix. `None` if nothing is left.
fn sanitise_name(raw: &str) -> Option<String> {
    let replaced: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let start = replaced.find(|c: char| c.is_ascii_alphanumeric())?;
    let mut name: String = replaced[start..].chars().take(BASE_NAME_LEN).collect();
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    validate_owner_name(&name).ok().map(|()| name)
}

/// The name a new account is given: `preferred_username`, else the part of
/// `email` before the `@`, made valid.
pub fn base_username(claims: &serde_json::Value) -> Option<String> {
    let preferred = claims.get("preferred_username").and_then(|v| v.as_str());
    let email = claims
        .get("email")
        .and_then(|v| v.as_str())
        .map(|e| e.split('@').next().unwrap_or(e));
    [preferred, email]
        .into_iter()
        .flatten()
        .find_map(sanitise_name)
}

/// The `n`th name tried for a new account: the base, then `base-2`, `base-3`…
pub fn candidate_name(base: &str, n: u32) -> String {
    if n <= 1 {
        base.to_string()
    } else {
        format!("{base}-{n}")
    }
}

/// How many names are tried before a new account is refused.
pub const MAX_NAME_TRIES: u32 = 50;

// ---------------------------------------------------------------------------
// The userinfo endpoint
// ---------------------------------------------------------------------------

/// Whether the ID token lacks claims this sign-in needs, so the userinfo
/// endpoint must be asked: a provider following OpenID Connect Core §5.4
/// returns the claims of the `profile` and `email` scopes there, not in the
/// ID token, when the code flow is used.
pub fn needs_userinfo(claims: &serde_json::Value, s: &OidcSettings) -> bool {
    let missing = |k: &str| claims.get(k).is_none();
    let role = s.role_claim.as_ref().is_some_and(|c| missing(c.as_str()));
    let name = s.create_users && missing("preferred_username") && missing("email");
    role || name
}

/// Claims that only the ID token may give.
const TOKEN_ONLY: [&str; 10] = [
    "iss",
    "sub",
    "aud",
    "azp",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "auth_time",
    "at_hash",
];

/// Adds the userinfo answer's claims to the ID token's, without replacing
/// any: the answer must be about the same subject (OpenID Connect Core §5.3.4).
pub fn merge_userinfo(
    claims: &mut serde_json::Value,
    info: &serde_json::Value,
) -> Result<(), Refusal> {
    let (Some(id), Some(info)) = (claims.as_object_mut(), info.as_object()) else {
        return Err(Refusal::TokenInvalid);
    };
    if info.get("sub").is_none() || info.get("sub") != id.get("sub") {
        return Err(Refusal::TokenInvalid);
    }
    for (k, v) in info {
        if !TOKEN_ONLY.contains(&k.as_str()) && !id.contains_key(k) {
            id.insert(k.clone(), v.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(yaml_like: serde_json::Value) -> OidcSettings {
        serde_json::from_value(yaml_like).unwrap()
    }

    fn base() -> serde_json::Value {
        json!({
            "issuer": "https://id.example.com/realms/main",
            "client_id": "tollgate",
            "client_secret_env": "TOLLGATE_OIDC_SECRET",
        })
    }

    #[test]
    fn settings_are_checked_and_defaulted() {
        let s = settings(base());
        assert!(!s.create_users, "off unless asked for");
        assert_eq!(s.default_role, DefaultRole::User);
        assert_eq!(s.leeway_secs, Leeway(60));
        assert_eq!(s.scope_param(), "openid");
        assert_eq!(s.button_label(), "Sign in with single sign-on");
        let bad = |field: &str, v: serde_json::Value| {
            let mut j = base();
            j[field] = v;
            serde_json::from_value::<OidcSettings>(j)
                .unwrap_err()
                .to_string()
        };
        assert!(bad("issuer", json!("http://id.example.com")).contains("https"));
        assert!(bad("issuer", json!("ftp://x")).contains("https"));
        assert!(bad("issuer", json!("https://x/?a=b")).contains("query"));
        assert!(bad("client_secret_env", json!("1BAD")).contains("environment variable"));
        assert!(bad("client_secret_env", json!("A-B")).contains("environment variable"));
        assert!(bad("client_id", json!("")).contains("empty"));
        assert!(bad("default_role", json!("admin")).contains("unknown variant"));
        assert!(bad("leeway_secs", json!(-1)).contains("0 to 600"));
        assert!(bad("leeway_secs", json!(601)).contains("0 to 600"));
        assert!(bad("scopes", json!(["a b"])).contains("scope"));
        assert!(bad("display_name", json!("x\u{7}")).contains("control"));
        assert!(bad("roles", json!({"root": ["x"]})).contains("unknown field"));
        // Loopback may be plain http, for tests.
        for ok in [
            "http://127.0.0.1:3301",
            "http://localhost:9/x",
            "http://[::1]:4",
        ] {
            let mut j = base();
            j["issuer"] = json!(ok);
            assert!(serde_json::from_value::<OidcSettings>(j).is_ok(), "{ok}");
        }
        let mut j = base();
        j["scopes"] = json!(["profile", "openid", "groups", "profile"]);
        j["display_name"] = json!("Keycloak");
        let s = settings(j);
        assert_eq!(s.scope_param(), "openid profile groups");
        assert_eq!(s.button_label(), "Sign in with Keycloak");
    }

    #[test]
    fn endpoints_must_be_https_except_on_loopback() {
        let https = "https://id.example.com";
        assert!(endpoint_allowed(https, "https://id.example.com/token"));
        assert!(!endpoint_allowed(https, "http://id.example.com/token"));
        assert!(!endpoint_allowed(https, "http://127.0.0.1/token"));
        let lo = "http://127.0.0.1:3301";
        assert!(endpoint_allowed(lo, "http://127.0.0.1:3301/token"));
        assert!(!endpoint_allowed(lo, "http://evil.example.com/token"));
        assert!(!endpoint_allowed(lo, "javascript:alert(1)"));
        assert!(!endpoint_allowed(lo, "http://127.0.0.1@evil.example.com/"));
        assert!(!endpoint_allowed(lo, "http://127.0.0.1.evil.example.com/"));
        assert_eq!(
            discovery_url("https://a.example/realms/x/"),
            "https://a.example/realms/x/.well-known/openid-configuration"
        );
    }

    #[test]
    fn the_authorization_url_carries_pkce_state_and_nonce() {
        let r = AuthRequest {
            authorization_endpoint: "https://id.example.com/auth?tenant=a",
            client_id: "tollgate",
            redirect_uri: "http://127.0.0.1:3000/auth/oidc/callback",
            scope: "openid profile",
            state: "st&=",
            nonce: "no",
            code_challenge: "ch_-",
        };
        assert_eq!(
            r.url(),
            "https://id.example.com/auth?tenant=a&response_type=code&client_id=tollgate\
             &redirect_uri=http%3A%2F%2F127.0.0.1%3A3000%2Fauth%2Foidc%2Fcallback\
             &scope=openid%20profile&state=st%26%3D&nonce=no&code_challenge=ch_-\
             &code_challenge_method=S256"
        );
        assert_eq!(
            redirect_uri("https://gw.example.com/"),
            "https://gw.example.com/auth/oidc/callback"
        );
    }

    fn claims() -> IdClaims {
        IdClaims {
            iss: "https://id.example.com".into(),
            sub: "248289761001".into(),
            aud: Audience::One("tollgate".into()),
            azp: None,
            exp: 1_000_600,
            iat: 1_000_000,
            nonce: Some("n-0S6_WzA2Mj".into()),
        }
    }

    fn expected(now: i64) -> Expected<'static> {
        Expected {
            issuer: "https://id.example.com",
            client_id: "tollgate",
            nonce: "n-0S6_WzA2Mj",
            leeway_secs: 60,
            now_secs: now,
        }
    }

    #[test]
    fn claim_checks() {
        let now = 1_000_100;
        assert_eq!(check_claims(&claims(), &expected(now)), Ok(()));
        let table: Vec<(&str, IdClaims, i64, Result<(), Refusal>)> = vec![
            (
                "other issuer",
                IdClaims {
                    iss: "https://evil.example".into(),
                    ..claims()
                },
                now,
                Err(Refusal::IssuerMismatch),
            ),
            (
                "issuer with a trailing slash",
                IdClaims {
                    iss: "https://id.example.com/".into(),
                    ..claims()
                },
                now,
                Err(Refusal::IssuerMismatch),
            ),
            (
                "other audience",
                IdClaims {
                    aud: Audience::One("other".into()),
                    ..claims()
                },
                now,
                Err(Refusal::AudienceMismatch),
            ),
            (
                "several audiences, no azp",
                IdClaims {
                    aud: Audience::Many(vec!["tollgate".into(), "other".into()]),
                    ..claims()
                },
                now,
                Err(Refusal::AudienceMismatch),
            ),
            (
                "several audiences, azp us",
                IdClaims {
                    aud: Audience::Many(vec!["tollgate".into(), "other".into()]),
                    azp: Some("tollgate".into()),
                    ..claims()
                },
                now,
                Ok(()),
            ),
            (
                "azp someone else",
                IdClaims {
                    azp: Some("other".into()),
                    ..claims()
                },
                now,
                Err(Refusal::AudienceMismatch),
            ),
            (
                "empty audience list",
                IdClaims {
                    aud: Audience::Many(vec![]),
                    ..claims()
                },
                now,
                Err(Refusal::AudienceMismatch),
            ),
            ("expired within leeway", claims(), 1_000_659, Ok(())),
            (
                "expired past leeway",
                claims(),
                1_000_660,
                Err(Refusal::TokenExpired),
            ),
            (
                "expired two hours ago",
                claims(),
                1_000_600 + 7200,
                Err(Refusal::TokenExpired),
            ),
            (
                "issued in the future",
                IdClaims {
                    iat: now + 61,
                    exp: now + 600,
                    ..claims()
                },
                now,
                Err(Refusal::TokenInvalid),
            ),
            (
                "issued slightly ahead",
                IdClaims {
                    iat: now + 60,
                    exp: now + 600,
                    ..claims()
                },
                now,
                Ok(()),
            ),
            (
                "no nonce",
                IdClaims {
                    nonce: None,
                    ..claims()
                },
                now,
                Err(Refusal::NonceMismatch),
            ),
            (
                "other nonce",
                IdClaims {
                    nonce: Some("n-0S6_WzA2Mk".into()),
                    ..claims()
                },
                now,
                Err(Refusal::NonceMismatch),
            ),
            (
                "empty subject",
                IdClaims {
                    sub: String::new(),
                    ..claims()
                },
                now,
                Err(Refusal::TokenInvalid),
            ),
            (
                "huge exp does not overflow",
                IdClaims {
                    exp: i64::MAX,
                    ..claims()
                },
                now,
                Ok(()),
            ),
        ];
        for (name, c, now, want) in table {
            assert_eq!(check_claims(&c, &expected(now)), want, "{name}");
        }
        // Times must be whole numbers, and present.
        let j = json!({"iss": "i", "sub": "s", "aud": "a", "exp": 1.5, "iat": 1});
        assert!(serde_json::from_value::<IdClaims>(j).is_err());
        let j = json!({"iss": "i", "sub": "s", "aud": "a", "iat": 1});
        assert!(serde_json::from_value::<IdClaims>(j).is_err());
        let j = json!({"iss": "i", "sub": "s", "aud": ["a", "b"], "exp": 2, "iat": 1});
        assert!(serde_json::from_value::<IdClaims>(j).is_ok());
    }

    fn mapping() -> OidcSettings {
        let mut j = base();
        j["role_claim"] = json!("groups");
        j["roles"] =
            json!({"admin": ["tollgate-admins"], "manager": ["tollgate-managers", "leads"]});
        settings(j)
    }

    #[test]
    fn claims_map_to_roles() {
        let s = mapping();
        let table = [
            (json!({"groups": ["tollgate-admins"]}), Role::Admin),
            (json!({"groups": ["leads", "tollgate-admins"]}), Role::Admin),
            (json!({"groups": ["tollgate-managers"]}), Role::Manager),
            (json!({"groups": "leads"}), Role::Manager),
            (json!({"groups": ["staff"]}), Role::User),
            (json!({"groups": []}), Role::User),
            (json!({}), Role::User),
            (
                json!({"groups": [1, null, {"x": "tollgate-admins"}]}),
                Role::User,
            ),
            (json!({"groups": "TOLLGATE-ADMINS"}), Role::User),
            (json!({"role": "tollgate-admins"}), Role::User),
        ];
        for (claims, want) in table {
            assert_eq!(mapped_role(&claims, &s), Some(want), "{claims}");
        }
        // default_role applies when nothing matches; never admin by default.
        let mut j = serde_json::to_value(&s).unwrap();
        j["default_role"] = json!("manager");
        let s2 = settings(j);
        assert_eq!(mapped_role(&json!({}), &s2), Some(Role::Manager));
        // Without role_claim, the mapping decides nothing.
        let plain = settings(base());
        assert_eq!(
            mapped_role(&json!({"groups": ["tollgate-admins"]}), &plain),
            None
        );
        assert_eq!(role_for_new_user(&json!({}), &plain), Role::User);
    }

    #[test]
    fn names_for_new_accounts() {
        let table = [
            (json!({"preferred_username": "alice"}), Some("alice")),
            (
                json!({"preferred_username": "Alice Smith", "email": "a@x"}),
                Some("Alice-Smith"),
            ),
            (json!({"email": "bob.jones@example.com"}), Some("bob.jones")),
            (
                json!({"preferred_username": "---", "email": "carol@x"}),
                Some("carol"),
            ),
            (json!({"preferred_username": "default"}), None),
            (json!({"preferred_username": "émile"}), Some("mile")),
            (json!({"preferred_username": "日本"}), None),
            (json!({"preferred_username": 7}), None),
            (json!({}), None),
        ];
        for (claims, want) in table {
            assert_eq!(base_username(&claims).as_deref(), want, "{claims}");
        }
        let long = "x".repeat(300);
        let name = base_username(&json!({ "preferred_username": long })).unwrap();
        assert_eq!(name.len(), BASE_NAME_LEN);
        let last = candidate_name(&name, MAX_NAME_TRIES);
        assert!(validate_owner_name(&last).is_ok(), "{last}");
        assert_eq!(candidate_name("alice", 1), "alice");
        assert_eq!(candidate_name("alice", 2), "alice-2");
    }

    #[test]
    fn userinfo_fills_in_without_replacing() {
        let s = mapping();
        assert!(needs_userinfo(&json!({"sub": "1"}), &s), "no groups claim");
        assert!(!needs_userinfo(&json!({"sub": "1", "groups": []}), &s));
        let plain = settings(base());
        assert!(
            !needs_userinfo(&json!({"sub": "1"}), &plain),
            "nothing needed"
        );
        let mut j = base();
        j["create_users"] = json!(true);
        let creating = settings(j);
        assert!(
            needs_userinfo(&json!({"sub": "1"}), &creating),
            "a name for a new account"
        );
        assert!(!needs_userinfo(
            &json!({"sub": "1", "email": "a@b"}),
            &creating
        ));

        let mut c = json!({"sub": "1", "iss": "https://id", "preferred_username": "alice"});
        let info = json!({"sub": "1", "iss": "https://evil", "preferred_username": "mallory", "groups": ["admins"]});
        assert_eq!(merge_userinfo(&mut c, &info), Ok(()));
        assert_eq!(
            c,
            json!({"sub": "1", "iss": "https://id", "preferred_username": "alice", "groups": ["admins"]})
        );
        for bad in [
            json!({"sub": "2", "groups": ["admins"]}),
            json!({"groups": ["admins"]}),
            json!([1]),
            json!("x"),
        ] {
            let mut c = json!({"sub": "1"});
            assert_eq!(
                merge_userinfo(&mut c, &bad),
                Err(Refusal::TokenInvalid),
                "{bad}"
            );
            assert_eq!(c, json!({"sub": "1"}), "unchanged");
        }
    }

    #[test]
    fn refusal_codes_are_stable_and_round_trip() {
        for r in Refusal::ALL {
            assert_eq!(Refusal::from_code(r.code()), Some(r));
            assert!(!r.message().is_empty());
        }
        assert_eq!(Refusal::from_code("<script>"), None);
        assert_eq!(Refusal::StateUnknown.code(), "state_invalid");
        assert_eq!(
            refusal_location(Refusal::TokenExpired),
            "/login?sso_error=token_expired"
        );
    }
}
