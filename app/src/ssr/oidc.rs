//! Single sign-on, the database side: sign-ins started and not yet finished
//! (`oidc_logins`), the browser cookie that binds one to the browser that
//! started it, and signing a provider's account in as a user
//! (`oidc_identities`). The HTTP side is `server::oidc`; the rules are
//! `domain::oidc`.
//!
//! The cookie holds a random secret; the PKCE verifier and the nonce are
//! derived from it, so the database holds nothing that would let a reader
//! finish someone else's sign-in.

use super::entities::{oidc_identity, oidc_login, user};
use super::owners::{self, OwnerError};
use super::{constant_time_eq, now_ms, session, sha256_hex, AppContext};
use crate::domain::oidc::{
    base_username, candidate_name, mapped_role, role_for_new_user, OidcSettings, Refusal,
    MAX_NAME_TRIES, PENDING_TTL_MS,
};
use crate::domain::owner::Role;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter,
};
use sha2::{Digest, Sha256};

/// The cookie binding a started sign-in to this browser.
pub const COOKIE: &str = "tg_oidc";
/// Started, unfinished sign-ins kept at most, in all and per client address:
/// starting one needs no account, so the table must not grow without bound.
pub const MAX_PENDING: u64 = 10_000;
pub const MAX_PENDING_PER_ADDR: u64 = 100;
/// What an account created by single sign-on has for a password: not a PHC
/// string, so no password ever matches it.
pub const NO_PASSWORD: &str = "!sso";

/// base64url without padding (RFC 4648 §5), as PKCE and nonces use.
pub fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn derive(purpose: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tollgate-oidc:");
    h.update(purpose.as_bytes());
    h.update(b":");
    h.update(secret.as_bytes());
    base64url(&h.finalize())
}

/// The PKCE verifier of the sign-in whose cookie holds `secret`: 43
/// characters, as RFC 7636 §4.1 allows.
pub fn pkce_verifier(secret: &str) -> String {
    derive("pkce", secret)
}

/// The S256 challenge for a verifier: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    base64url(&Sha256::digest(verifier.as_bytes()))
}

/// The nonce the ID token of this sign-in must carry.
pub fn nonce(secret: &str) -> String {
    derive("nonce", secret)
}

pub fn set_cookie(secret: &str, secure: bool) -> String {
    super::session::cookie(COOKIE, secret, "/auth/oidc", PENDING_TTL_MS / 1000, secure)
}

pub fn clear_cookie(secure: bool) -> String {
    super::session::cookie(COOKIE, "", "/auth/oidc", 0, secure)
}

pub fn secret_from_cookie_header(header: &str) -> Option<String> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// A sign-in just started: the `state` for the provider, the secret for the cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub state: String,
    pub secret: String,
}

fn random_hex() -> Result<String, DbErr> {
    session::new_token().map_err(DbErr::Custom)
}

/// Records a sign-in started from `addr` at `issuer`, forgetting expired ones.
pub async fn begin(
    db: &DatabaseConnection,
    issuer: &str,
    addr: &str,
    now: i64,
) -> Result<Result<Started, Refusal>, DbErr> {
    let txn = super::db::begin_write(db).await?;
    oidc_login::Entity::delete_many()
        .filter(oidc_login::Column::CreatedAt.lte(now - PENDING_TTL_MS))
        .exec(&txn)
        .await?;
    let for_addr = oidc_login::Entity::find()
        .filter(oidc_login::Column::Addr.eq(addr))
        .count(&txn)
        .await?;
    if for_addr >= MAX_PENDING_PER_ADDR
        || oidc_login::Entity::find().count(&txn).await? >= MAX_PENDING
    {
        txn.commit().await?;
        return Ok(Err(Refusal::TooManyPending));
    }
    let started = Started {
        state: random_hex()?,
        secret: random_hex()?,
    };
    oidc_login::Entity::insert(oidc_login::ActiveModel {
        id: Set(sha256_hex(started.state.as_bytes())),
        browser: Set(sha256_hex(started.secret.as_bytes())),
        issuer: Set(issuer.to_string()),
        addr: Set(addr.to_string()),
        created_at: Set(now),
    })
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    Ok(Ok(started))
}

/// A started sign-in, taken back at its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub issuer: String,
}

/// Takes the sign-in `state` names, once: it is deleted whatever follows,
/// then refused if it is older than 10 minutes or was started by a browser
/// without this cookie secret.
pub async fn finish(
    db: &DatabaseConnection,
    state: &str,
    secret: Option<&str>,
    now: i64,
) -> Result<Result<Pending, Refusal>, DbErr> {
    if state.is_empty() {
        return Ok(Err(Refusal::StateMissing));
    }
    if state.len() > 128 {
        return Ok(Err(Refusal::StateUnknown));
    }
    let id = sha256_hex(state.as_bytes());
    let Some(row) = oidc_login::Entity::find_by_id(id.clone()).one(db).await? else {
        return Ok(Err(Refusal::StateUnknown));
    };
    // Two callbacks with one state: only the one that deletes the row goes on.
    let deleted = oidc_login::Entity::delete_by_id(id).exec(db).await?;
    if deleted.rows_affected != 1 {
        return Ok(Err(Refusal::StateUnknown));
    }
    if now - row.created_at > PENDING_TTL_MS || now < row.created_at - 60_000 {
        return Ok(Err(Refusal::StateExpired));
    }
    let bound = secret.is_some_and(|s| {
        constant_time_eq(sha256_hex(s.as_bytes()).as_bytes(), row.browser.as_bytes())
    });
    if !bound {
        return Ok(Err(Refusal::BrowserMismatch));
    }
    Ok(Ok(Pending { issuer: row.issuer }))
}

/// Who signed in: the new session's token, and the user's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub token: String,
    pub username: String,
    pub role: Role,
}

/// Why a verified provider account was not signed in.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("{0}")]
    Refused(Refusal),
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl From<OwnerError> for SignInError {
    fn from(e: OwnerError) -> Self {
        match e {
            OwnerError::Db(e) => SignInError::Db(e),
            e => SignInError::Db(DbErr::Custom(e.to_string())),
        }
    }
}

async fn identity_user<C: ConnectionTrait>(
    c: &C,
    issuer: &str,
    subject: &str,
) -> Result<Option<user::Model>, DbErr> {
    let Some(link) = oidc_identity::Entity::find()
        .filter(oidc_identity::Column::Issuer.eq(issuer))
        .filter(oidc_identity::Column::Subject.eq(subject))
        .one(c)
        .await?
    else {
        return Ok(None);
    };
    user::Entity::find_by_id(link.user_id).one(c).await
}

/// Signs the provider's account `issuer` + `subject` in: its linked user,
/// or a new one when `create_users` is on. The role follows the mapping on
/// every sign-in, except that the last active admin is never demoted.
pub async fn sign_in(
    ctx: &AppContext,
    settings: &OidcSettings,
    subject: &str,
    claims: &serde_json::Value,
) -> Result<SignedIn, SignInError> {
    let issuer = settings.issuer.as_str();
    let user = match identity_user(&ctx.db, issuer, subject).await? {
        Some(u) => u,
        None if settings.create_users => create(ctx, settings, subject, claims).await?,
        None => return Err(SignInError::Refused(Refusal::UnknownUser)),
    };
    if !user.active {
        return Err(SignInError::Refused(Refusal::UserInactive));
    }
    let user = follow_mapping(&ctx.db, user, mapped_role(claims, settings)).await?;
    let token = session::create(&ctx.db, user.id).await?;
    Ok(SignedIn {
        token,
        role: Role::parse(&user.role).unwrap_or(Role::User),
        username: user.username,
    })
}

/// Sets the mapped role, keeping the last active admin an admin.
async fn follow_mapping(
    db: &DatabaseConnection,
    user: user::Model,
    role: Option<Role>,
) -> Result<user::Model, SignInError> {
    let Some(role) = role.filter(|r| r.as_str() != user.role) else {
        return Ok(user);
    };
    match owners::update_role_or_active(db, user.id, Some(role.as_str()), None).await {
        Ok(u) => Ok(u),
        Err(OwnerError::LastAdmin) => {
            tracing::warn!(
                "single sign-on maps `{}` to {}, but they are the last active admin; they stay admin",
                user.username,
                role.as_str()
            );
            Ok(user)
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates a user for a provider's account and links it, under a free name.
async fn create(
    ctx: &AppContext,
    settings: &OidcSettings,
    subject: &str,
    claims: &serde_json::Value,
) -> Result<user::Model, SignInError> {
    let issuer = settings.issuer.as_str();
    let base = base_username(claims).ok_or(SignInError::Refused(Refusal::NoUsername))?;
    let role = role_for_new_user(claims, settings);
    // As for users created in the console: the config snapshot must not
    // change while the new user's settings are applied.
    let _guard = ctx.apply_lock.lock().await;
    // A parallel first sign-in of the same person may have won.
    if let Some(u) = identity_user(&ctx.db, issuer, subject).await? {
        return Ok(u);
    }
    let config = ctx.config.load_full();
    for n in 1..=MAX_NAME_TRIES {
        let name = candidate_name(&base, n);
        let created = owners::create_user(
            &ctx.db,
            &config.config,
            &name,
            NO_PASSWORD,
            role.as_str(),
            now_ms(),
        )
        .await;
        match created {
            Ok(u) => return link(ctx, u, issuer, subject).await,
            Err(OwnerError::Duplicate(_) | OwnerError::InvalidName(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(SignInError::Refused(Refusal::NoUsername))
}

/// Links a new user to the provider's account. If another instance linked
/// the account first, the new user is deactivated and theirs is used.
async fn link(
    ctx: &AppContext,
    user: user::Model,
    issuer: &str,
    subject: &str,
) -> Result<user::Model, SignInError> {
    let inserted = oidc_identity::Entity::insert(oidc_identity::ActiveModel {
        user_id: Set(user.id),
        issuer: Set(issuer.to_string()),
        subject: Set(subject.to_string()),
        created_at: Set(now_ms()),
        ..Default::default()
    })
    .exec_without_returning(&ctx.db)
    .await;
    if let Err(e) = inserted {
        let Some(winner) = identity_user(&ctx.db, issuer, subject).await? else {
            return Err(e.into());
        };
        owners::update_role_or_active(&ctx.db, user.id, None, Some(false)).await?;
        return Ok(winner);
    }
    tracing::info!(
        "single sign-on created user `{}` ({})",
        user.username,
        user.role
    );
    Ok(user)
}

/// When local accounts are off, password sign-in is refused.
pub fn local_allowed(ctx: &AppContext) -> bool {
    ctx.config.load().config.auth.local
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc_4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), want, "{input}");
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let v = pkce_verifier("secret");
        assert_eq!(v.len(), 43);
        assert_ne!(v, nonce("secret"), "the two derivations differ");
        assert_ne!(v, pkce_verifier("secret2"));
    }

    #[test]
    fn cookies_are_scoped_and_short_lived() {
        let c = set_cookie("abc", false);
        assert!(c.starts_with("tg_oidc=abc;"), "{c}");
        assert!(
            c.contains("Path=/auth/oidc") && c.contains("HttpOnly") && c.contains("SameSite=Lax")
        );
        assert!(c.contains("Max-Age=600"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        assert_eq!(
            secret_from_cookie_header("tg_session=x; tg_oidc=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(secret_from_cookie_header("tg_oidc="), None);
        assert_eq!(
            secret_from_cookie_header(&format!("tg_oidc={}", "a".repeat(129))),
            None
        );
    }
}
