//! API keys: created with 128 random bits from the OS, stored as SHA-256 only,
//! shown once, listed by display prefix, revocable, optionally expiring.

use super::entities::{api_key, pool};
use super::sha256_hex;
use crate::domain::keys::{check_format, display_prefix, encode, KeyFormatError};
use crate::domain::owner::OwnerKind;
use crate::domain::rate::RateLimits;
/// The one duration parser; re-exported where the CLI has always found it.
pub use crate::domain::time::parse_duration_ms;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    QueryFilter, QueryOrder,
};

/// `last_used_at` is refreshed at most this often, to keep reads cheap.
pub const LAST_USED_GRANULARITY_MS: i64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no key starts with `{0}`")]
    NotFound(String),
    #[error("more than one key starts with `{prefix}` ({}); give more characters; nothing was revoked", .matches.join(", "))]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
    },
    #[error("{0}")]
    InvalidLabel(String),
    #[error("the key `{0}` is already revoked")]
    AlreadyRevoked(String),
    #[error("the system random source failed: {0}")]
    Random(String),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// A freshly created key: `secret` is shown once and never stored.
pub struct NewKey {
    pub secret: String,
    pub record: api_key::Model,
}

pub fn generate_secret() -> Result<String, KeyError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(encode(bytes))
}

pub async fn create<C: ConnectionTrait>(
    c: &C,
    kind: OwnerKind,
    owner_id: i64,
    label: &str,
    expires_at: Option<i64>,
    created_by: Option<i64>,
    now: i64,
) -> Result<NewKey, KeyError> {
    let terms = KeyTerms {
        label,
        expires_at,
        created_by,
        limits: RateLimits::NONE,
    };
    create_with(c, (kind, owner_id), &terms, now).await
}

/// What a new key is given besides its owner.
#[derive(Debug, Clone, Copy)]
pub struct KeyTerms<'a> {
    pub label: &'a str,
    pub expires_at: Option<i64>,
    pub created_by: Option<i64>,
    /// The key's own limits; its owner's apply as well, so these can only
    /// lower them.
    pub limits: RateLimits,
}

/// A limit as stored: `NULL` for none.
fn stored_limit(n: Option<u64>) -> Option<i64> {
    n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

pub async fn create_with<C: ConnectionTrait>(
    c: &C,
    (kind, owner_id): (OwnerKind, i64),
    terms: &KeyTerms<'_>,
    now: i64,
) -> Result<NewKey, KeyError> {
    let label = terms.label.trim();
    crate::domain::names::validate_label(label).map_err(KeyError::InvalidLabel)?;
    let secret = generate_secret()?;
    let record = api_key::ActiveModel {
        owner_kind: Set(kind.as_str().to_string()),
        owner_id: Set(owner_id),
        secret_hash: Set(sha256_hex(secret.as_bytes())),
        prefix: Set(display_prefix(&secret)),
        label: Set(label.to_string()),
        created_by: Set(terms.created_by),
        created_at: Set(now),
        last_used_at: Set(None),
        expires_at: Set(terms.expires_at),
        revoked_at: Set(None),
        requests_per_minute: Set(stored_limit(terms.limits.requests_per_minute)),
        tokens_per_minute: Set(stored_limit(terms.limits.tokens_per_minute)),
        ..Default::default()
    }
    .insert(c)
    .await?;
    Ok(NewKey { secret, record })
}

/// A key's own limits as stored.
pub fn key_limits(k: &api_key::Model) -> RateLimits {
    limits_of(k.requests_per_minute, k.tokens_per_minute)
}

fn limits_of(requests: Option<i64>, tokens: Option<i64>) -> RateLimits {
    let positive = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok()).filter(|n| *n > 0);
    RateLimits {
        requests_per_minute: positive(requests),
        tokens_per_minute: positive(tokens),
    }
}

pub async fn list<C: ConnectionTrait>(
    c: &C,
    kind: Option<(OwnerKind, i64)>,
) -> Result<Vec<api_key::Model>, DbErr> {
    let mut q = api_key::Entity::find().order_by_desc(api_key::Column::Id);
    if let Some((kind, id)) = kind {
        q = q
            .filter(api_key::Column::OwnerKind.eq(kind.as_str()))
            .filter(api_key::Column::OwnerId.eq(id));
    }
    q.all(c).await
}

/// Revokes the one key whose display prefix starts with `prefix`, compared
/// exactly and case-sensitively (SQL `LIKE` is case-insensitive on SQLite
/// and treats `%` and `_` as wildcards, so the comparison is made here).
/// When several keys match, none is revoked and the error names them all.
pub async fn revoke_by_prefix<C: ConnectionTrait>(
    c: &C,
    prefix: &str,
    now: i64,
) -> Result<api_key::Model, KeyError> {
    let matches: Vec<api_key::Model> = api_key::Entity::find()
        .order_by_asc(api_key::Column::Prefix)
        .all(c)
        .await?
        .into_iter()
        .filter(|k| !prefix.is_empty() && k.prefix.starts_with(prefix))
        .collect();
    match matches.as_slice() {
        [] => Err(KeyError::NotFound(prefix.to_string())),
        [one] => revoke(c, one, now).await,
        many => Err(KeyError::Ambiguous {
            prefix: prefix.to_string(),
            matches: many.iter().map(|k| k.prefix.clone()).collect(),
        }),
    }
}

pub async fn revoke<C: ConnectionTrait>(
    c: &C,
    key: &api_key::Model,
    now: i64,
) -> Result<api_key::Model, KeyError> {
    let res = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(Some(now)))
        .filter(api_key::Column::Id.eq(key.id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(c)
        .await?;
    if res.rows_affected == 0 {
        return Err(KeyError::AlreadyRevoked(key.prefix.clone()));
    }
    super::changes::bump(c).await?;
    Ok(api_key::Model {
        revoked_at: Some(now),
        ..key.clone()
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed(KeyFormatError),
    Unknown,
    Revoked,
    Expired,
    /// The key belongs to a user who has been deactivated.
    OwnerDeactivated,
    /// The key could not be checked because the database failed.
    Unavailable,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => {
                f.write_str("no API key was sent; send `Authorization: Bearer tg_…`")
            }
            AuthError::Malformed(e) => write!(f, "{e}"),
            AuthError::Unknown => {
                f.write_str("this API key is not known; check that it was copied completely")
            }
            AuthError::Revoked => {
                f.write_str("this API key was revoked; ask a manager of its client for a new one")
            }
            AuthError::Expired => {
                f.write_str("this API key has expired; ask a manager of its client for a new one")
            }
            AuthError::OwnerDeactivated => f.write_str(
                "the user who owns this API key is deactivated; ask an admin to reactivate them",
            ),
            AuthError::Unavailable => {
                f.write_str("the gateway cannot check API keys right now; retry shortly")
            }
        }
    }
}

/// The owner a key acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub key_id: i64,
    pub kind: OwnerKind,
    pub owner_id: i64,
    pub name: String,
    /// The owner's coin pool, read in the same statement as the key.
    pub pool: Option<pool::Model>,
    /// `last_used_at` is older than its granularity and should be recorded again.
    pub touch_due: bool,
    /// When the key stops working (Unix ms), for callers that keep it in memory.
    pub expires_at: Option<i64>,
    /// The key's own rate limits (its owner's come from the config).
    pub limits: RateLimits,
}

fn unreadable(e: DbErr) -> AuthError {
    tracing::error!("cannot read an API key row: {e}");
    AuthError::Unavailable
}

/// The owner's pool from columns 8 to 15 of the key row, if it has one.
fn pool_of_row(
    row: &sea_orm::QueryResult,
    kind: OwnerKind,
    owner_id: i64,
) -> Result<Option<pool::Model>, AuthError> {
    let Some(id) = row.try_get_by_index::<Option<i64>>(8).map_err(unreadable)? else {
        return Ok(None);
    };
    Ok(Some(pool::Model {
        id,
        owner_kind: kind.as_str().to_string(),
        owner_id,
        max_micro: row.try_get_by_index(9).map_err(unreadable)?,
        unlimited: row.try_get_by_index(10).map_err(unreadable)?,
        refresh_micro: row.try_get_by_index(11).map_err(unreadable)?,
        balance_micro: row.try_get_by_index(12).map_err(unreadable)?,
        refilled_at: row.try_get_by_index(13).map_err(unreadable)?,
        updated_at: row.try_get_by_index(14).map_err(unreadable)?,
        held_micro: row.try_get_by_index(15).map_err(unreadable)?,
    }))
}

/// Checks a presented key: format and checksum first (no database), then, in
/// one statement, the stored hash, revocation, expiry, the owner (a user must
/// be active) and the owner's pool.
pub async fn authenticate<C: ConnectionTrait>(
    c: &C,
    presented: &str,
    now: i64,
) -> Result<KeyOwner, AuthError> {
    check_format(presented).map_err(AuthError::Malformed)?;
    let sql = "SELECT k.id, k.owner_kind, k.owner_id, k.revoked_at, k.expires_at, k.last_used_at, \
         COALESCE(c.name, u.username), u.active, \
         p.id, p.max_micro, p.unlimited, p.refresh_micro, p.balance_micro, p.refilled_at, p.updated_at, p.held_micro, \
         k.requests_per_minute, k.tokens_per_minute \
         FROM api_keys k \
         LEFT JOIN clients c ON k.owner_kind = 'client' AND c.id = k.owner_id \
         LEFT JOIN users u ON k.owner_kind = 'user' AND u.id = k.owner_id \
         LEFT JOIN pools p ON p.owner_kind = k.owner_kind AND p.owner_id = k.owner_id \
         WHERE k.secret_hash = {p}";
    let hash = sha256_hex(presented.as_bytes());
    let row = c
        .query_one(super::db::statement_with_one_param(
            c.get_database_backend(),
            sql,
            hash.into(),
        ))
        .await
        .map_err(|_| AuthError::Unavailable)?
        .ok_or(AuthError::Unknown)?;
    let key_id: i64 = row.try_get_by_index(0).map_err(unreadable)?;
    let kind: String = row.try_get_by_index(1).map_err(unreadable)?;
    let owner_id: i64 = row.try_get_by_index(2).map_err(unreadable)?;
    let revoked_at: Option<i64> = row.try_get_by_index(3).map_err(unreadable)?;
    let expires_at: Option<i64> = row.try_get_by_index(4).map_err(unreadable)?;
    let last_used_at: Option<i64> = row.try_get_by_index(5).map_err(unreadable)?;
    let name: Option<String> = row.try_get_by_index(6).map_err(unreadable)?;
    let user_active: Option<bool> = row.try_get_by_index(7).map_err(unreadable)?;
    if revoked_at.is_some() {
        return Err(AuthError::Revoked);
    }
    if expires_at.is_some_and(|t| t <= now) {
        return Err(AuthError::Expired);
    }
    let kind = OwnerKind::parse(&kind).ok_or(AuthError::Unknown)?;
    // An owner that is gone, or a deactivated user, makes the key useless.
    let name = name.ok_or(AuthError::Revoked)?;
    if kind == OwnerKind::User && user_active != Some(true) {
        return Err(AuthError::OwnerDeactivated);
    }
    let pool = pool_of_row(&row, kind, owner_id)?;
    let limits = limits_of(
        row.try_get_by_index(16).map_err(unreadable)?,
        row.try_get_by_index(17).map_err(unreadable)?,
    );
    Ok(KeyOwner {
        key_id,
        kind,
        owner_id,
        name,
        pool,
        touch_due: last_used_at.is_none_or(|t| now - t >= LAST_USED_GRANULARITY_MS),
        expires_at,
        limits,
    })
}
