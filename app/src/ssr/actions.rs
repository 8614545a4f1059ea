//! What the web console changes for clients: creating them, their keys,
//! consents and managers. Each action takes arguments the server function
//! has already authorised, does one thing, and says what to tell the caller
//! when it refuses. Sign-in and user accounts are in `accounts`.

use super::audit::{self, key_target, target, Action, Who};
use super::entities::{api_key, client, user};
use super::keys::{self, KeyError, KeyTerms};
use super::owners::{self, OwnerError};
use super::session::SessionUser;
use super::{consents, console, now_ms, AppContext};
use crate::domain::names::MAX_NAME_LEN;
use crate::domain::owner::{OwnerKind, Role};
use crate::domain::rate::{parse_limit, RateLimits};
use crate::domain::time::{parse_duration_ms, DAY_MS};
use crate::view::NewKeyShown;
use http::StatusCode;
use sea_orm::{DbErr, EntityTrait};

/// Why a console action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The caller is told `message`, with `status`.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    /// Logged on the server; the caller learns only that something failed.
    #[error("{0}")]
    Internal(String),
}

impl ConsoleError {
    pub fn refused(status: StatusCode, message: impl Into<String>) -> Self {
        ConsoleError::Refused {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::refused(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ConsoleError::Internal(e.to_string())
    }
}

impl From<DbErr> for ConsoleError {
    fn from(e: DbErr) -> Self {
        Self::internal(e)
    }
}

/// A bad name or a duplicate is the caller's to fix; anything else is ours.
pub(super) fn owner_refusal(e: OwnerError) -> ConsoleError {
    match e {
        OwnerError::Db(e) => ConsoleError::internal(e),
        e => ConsoleError::bad_request(e.to_string()),
    }
}

/// Refuses a name longer than any client or user can have, before it is
/// looked up, hashed or stored.
pub(super) fn check_name_length(name: &str) -> Result<(), ConsoleError> {
    if name.len() > MAX_NAME_LEN {
        return Err(ConsoleError::bad_request(format!(
            "A name is at most {MAX_NAME_LEN} characters."
        )));
    }
    Ok(())
}

/// Creates a client with the settings the config gives it; returns its name
/// as stored (trimmed).
pub async fn create_client(
    ctx: &AppContext,
    name: &str,
    by: i64,
    who: &Who,
) -> Result<String, ConsoleError> {
    let name = name.trim();
    check_name_length(name)?;
    {
        let _guard = ctx.apply_lock.lock().await;
        let config = ctx.config.load_full();
        owners::create_client(&ctx.db, &config.config, name, Some(by), now_ms())
            .await
            .map_err(owner_refusal)?;
    }
    audit::record(
        &ctx.db,
        who.entry(Action::ClientCreated, target("client", name)),
    )
    .await;
    Ok(name.to_string())
}

/// The longest lifetime a key created in the console may have.
const MAX_KEY_DAYS: i64 = 3650;

/// When a key created at `now` with the form's lifetime (days, or `12h` and
/// the like) expires; `None` when the field is empty.
fn key_expiry(expires_days: &str, now: i64) -> Result<Option<i64>, ConsoleError> {
    let s = expires_days.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let ms = parse_duration_ms(s)
        .filter(|ms| *ms <= MAX_KEY_DAYS * DAY_MS)
        .ok_or_else(|| {
            ConsoleError::bad_request(
                "Expiry must be a number of days between 1 and 3650, or empty.",
            )
        })?;
    Ok(Some(now + ms))
}

/// The create-key form, as typed.
#[derive(Debug, Clone, Copy)]
pub struct KeyForm<'a> {
    pub label: &'a str,
    /// Days, or `12h` and the like; empty for never.
    pub expires_days: &'a str,
    /// The key's own limits; empty for none (the owner's still apply).
    pub requests_per_minute: &'a str,
    pub tokens_per_minute: &'a str,
}

fn key_limits(form: &KeyForm<'_>) -> Result<RateLimits, ConsoleError> {
    let read = |what: &str, text: &str| {
        parse_limit(text).map_err(|e| ConsoleError::bad_request(format!("{what}: {e}.")))
    };
    Ok(RateLimits {
        requests_per_minute: read("Requests per minute", form.requests_per_minute)?,
        tokens_per_minute: read("Tokens per minute", form.tokens_per_minute)?,
    })
}

/// An owner as the console names it: its kind, id and name.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub kind: OwnerKind,
    pub id: i64,
    pub name: &'a str,
}

/// Creates a key for an owner the caller may issue keys for and returns the
/// secret, which is shown this once.
pub async fn issue_key(
    ctx: &AppContext,
    owner: Owner<'_>,
    form: &KeyForm<'_>,
    by: i64,
    who: &Who,
) -> Result<NewKeyShown, ConsoleError> {
    let now = now_ms();
    let terms = KeyTerms {
        label: form.label,
        expires_at: key_expiry(form.expires_days, now)?,
        created_by: Some(by),
        limits: key_limits(form)?,
    };
    let k = keys::create_with(&ctx.db, (owner.kind, owner.id), &terms, now)
        .await
        .map_err(|e| match e {
            KeyError::InvalidLabel(m) => ConsoleError::bad_request(m),
            e => ConsoleError::internal(e),
        })?;
    let entry = who.entry(
        Action::KeyCreated,
        key_target(&k.record.prefix, owner.kind.as_str(), owner.name),
    );
    audit::record(&ctx.db, entry.detail(key_detail(&k.record))).await;
    Ok(NewKeyShown {
        secret: k.secret,
        prefix: k.record.prefix,
    })
}

/// What the trail notes about a new key: its label and expiry, if any.
pub fn key_detail(k: &api_key::Model) -> String {
    let mut parts = Vec::new();
    if !k.label.is_empty() {
        parts.push(format!("label: {}", k.label));
    }
    if let Some(t) = k.expires_at {
        parts.push(format!("expires {}", crate::domain::time::rfc3339(t)));
    }
    parts.join("; ")
}

/// `key:PREFIX (client:NAME)` for a stored key; the owner's id when its name
/// is gone.
pub async fn key_audit_target<C: sea_orm::ConnectionTrait>(
    c: &C,
    k: &api_key::Model,
) -> Result<String, DbErr> {
    let name = match OwnerKind::parse(&k.owner_kind) {
        Some(OwnerKind::Client) => client::Entity::find_by_id(k.owner_id)
            .one(c)
            .await?
            .map(|c| c.name),
        Some(OwnerKind::User) => user::Entity::find_by_id(k.owner_id)
            .one(c)
            .await?
            .map(|u| u.username),
        None => None,
    };
    let name = name.unwrap_or_else(|| format!("#{}", k.owner_id));
    Ok(key_target(&k.prefix, &k.owner_kind, &name))
}

/// Revokes a key `u` may revoke: their own, any user's for an admin, a
/// client's they manage. Any other key looks exactly like a missing one.
/// Revoking a revoked key again is not an error.
pub async fn revoke_key(
    ctx: &AppContext,
    u: &SessionUser,
    key_id: i64,
    who: &Who,
) -> Result<(), ConsoleError> {
    let not_found = || {
        ConsoleError::refused(
            StatusCode::NOT_FOUND,
            "No such key, or you may not revoke it.",
        )
    };
    let key = api_key::Entity::find_by_id(key_id)
        .one(&ctx.db)
        .await?
        .ok_or_else(not_found)?;
    let allowed = match OwnerKind::parse(&key.owner_kind) {
        Some(OwnerKind::User) => key.owner_id == u.id || u.role == Role::Admin,
        Some(OwnerKind::Client) => {
            let c = client::Entity::find_by_id(key.owner_id)
                .one(&ctx.db)
                .await?
                .ok_or_else(not_found)?;
            console::may_manage(&ctx.db, u, c.id).await?
        }
        None => false,
    };
    if !allowed {
        return Err(not_found());
    }
    match keys::revoke(&ctx.db, &key, now_ms()).await {
        Ok(_) => {
            let target = key_audit_target(&ctx.db, &key).await?;
            audit::record(&ctx.db, who.entry(Action::KeyRevoked, target)).await;
            Ok(())
        }
        Err(KeyError::AlreadyRevoked(_)) => Ok(()),
        Err(e) => Err(ConsoleError::internal(e)),
    }
}

/// Records or withdraws an owner's consent to a catalog model.
pub async fn set_consent(
    ctx: &AppContext,
    owner: Owner<'_>,
    model: &str,
    consent: bool,
    by: i64,
    who: &Who,
) -> Result<(), ConsoleError> {
    let (kind, id) = (owner.kind, owner.id);
    if !ctx.config.load().config.models.contains_key(model) {
        return Err(ConsoleError::bad_request(
            "That model is not in the catalog.",
        ));
    }
    let now = now_ms();
    let (changed, action) = if consent {
        (
            consents::record(&ctx.db, kind, id, model, Some(by), now).await?,
            Action::ConsentGiven,
        )
    } else {
        (
            consents::revoke(&ctx.db, kind, id, model, now).await?,
            Action::ConsentRevoked,
        )
    };
    if changed {
        let entry = who.entry(action, target(kind.as_str(), owner.name));
        audit::record(&ctx.db, entry.detail(format!("model: {model}"))).await;
    }
    Ok(())
}

/// The client named `name`, for admin-only actions (which may see every client).
async fn existing_client(ctx: &AppContext, name: &str) -> Result<client::Model, ConsoleError> {
    check_name_length(name)?;
    owners::client_by_name(&ctx.db, name)
        .await?
        .ok_or_else(|| ConsoleError::refused(StatusCode::NOT_FOUND, "No such client."))
}

/// A manager's username as typed, normalised the same way for adding and
/// removing, so that what was added can be removed.
fn manager_name(username: &str) -> Result<&str, ConsoleError> {
    let username = username.trim();
    check_name_length(username)?;
    Ok(username)
}

/// Makes the user `username` a manager of `client`.
pub async fn add_manager(
    ctx: &AppContext,
    client: &str,
    username: &str,
    who: &Who,
) -> Result<(), ConsoleError> {
    let c = existing_client(ctx, client).await?;
    let user = owners::user_by_name(&ctx.db, manager_name(username)?)
        .await?
        .ok_or_else(|| {
            ConsoleError::bad_request("No user with that name; create it on the Users page first.")
        })?;
    if owners::add_manager(&ctx.db, c.id, user.id, now_ms()).await? {
        let entry = who.entry(Action::ManagerAdded, target("client", &c.name));
        audit::record(&ctx.db, entry.detail(format!("manager: {}", user.username))).await;
    }
    Ok(())
}

/// Stops the user `username` managing `client`; an unknown user is not an error.
pub async fn remove_manager(
    ctx: &AppContext,
    client: &str,
    username: &str,
    who: &Who,
) -> Result<(), ConsoleError> {
    let c = existing_client(ctx, client).await?;
    if let Some(user) = owners::user_by_name(&ctx.db, manager_name(username)?).await? {
        if owners::remove_manager(&ctx.db, c.id, user.id).await? {
            let entry = who.entry(Action::ManagerRemoved, target("client", &c.name));
            audit::record(&ctx.db, entry.detail(format!("manager: {}", user.username))).await;
        }
    }
    Ok(())
}
