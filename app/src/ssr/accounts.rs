//! What the web console does with accounts: the first admin, signing in,
//! and the admin's changes to users. Each action takes arguments the server
//! function has already authorised and returns what to tell the caller when
//! it refuses (see `actions::ConsoleError`).

use super::actions::{check_name_length, owner_refusal, ConsoleError};
use super::audit::{self, target, Action, Entry, Who};
use super::entities::user;
use super::owners::{self, OwnerError};
use super::session::{self, Attempt, SessionUser};
use super::{auth, constant_time_eq, dummy_hash, now_ms, AppContext};
use crate::domain::names::validate_owner_name;
use crate::domain::owner::Role;
use http::StatusCode;

/// Whether the first admin still has to be created through `/setup`.
pub async fn setup_needed(ctx: &AppContext) -> Result<bool, ConsoleError> {
    let token_held = ctx.setup_token.lock().map(|t| t.is_some()).unwrap_or(false);
    Ok(token_held && !owners::admin_exists(&ctx.db).await?)
}

fn setup_done() -> ConsoleError {
    ConsoleError::refused(
        StatusCode::FORBIDDEN,
        "Setup is already done; sign in instead.",
    )
}

/// The setup token is good only until an admin exists.
fn forget_setup_token(ctx: &AppContext) {
    if let Ok(mut t) = ctx.setup_token.lock() {
        *t = None;
    }
}

/// A valid new account name and the hash of a password that meets the policy.
async fn new_credentials(username: &str, password: String) -> Result<String, ConsoleError> {
    validate_owner_name(username).map_err(ConsoleError::bad_request)?;
    auth::check_password_policy(&password).map_err(ConsoleError::bad_request)?;
    auth::hash_password_async(password)
        .await
        .map_err(ConsoleError::internal)
}

/// Creates the first admin with the setup token from the server log, and
/// signs them in: returns the new session's token.
pub async fn setup_admin(
    ctx: &AppContext,
    token: &str,
    username: &str,
    password: String,
    addr: &str,
) -> Result<String, ConsoleError> {
    let expected = ctx.setup_token.lock().map(|t| t.clone()).unwrap_or(None);
    let Some(expected) = expected else {
        return Err(setup_done());
    };
    if token.len() > 128 || !constant_time_eq(token.as_bytes(), expected.as_bytes()) {
        return Err(ConsoleError::refused(
            StatusCode::FORBIDDEN,
            "The setup token is wrong; use the address from the server log.",
        ));
    }
    // Another instance, or `tollgate create-admin`, may have made an admin
    // since this process started.
    if owners::admin_exists(&ctx.db).await? {
        forget_setup_token(ctx);
        return Err(setup_done());
    }
    let username = username.trim();
    let hash = new_credentials(username, password).await?;
    let config = ctx.config.load_full();
    let user = owners::create_first_admin(&ctx.db, &config.config, username, &hash, now_ms())
        .await
        .map_err(|e| match e {
            OwnerError::AdminExists => {
                forget_setup_token(ctx);
                setup_done()
            }
            e => owner_refusal(e),
        })?;
    forget_setup_token(ctx);
    let entry = Who::new(&user.username, addr)
        .entry(Action::AdminCreated, target("user", &user.username))
        .detail("the first admin, through /setup; signed in");
    audit::record(&ctx.db, entry).await;
    Ok(session::create(&ctx.db, user.id).await?)
}

/// Counts a sign-in attempt before the password is checked, so parallel
/// guesses cannot get more checks than the limit.
async fn reserve_attempt(ctx: &AppContext, username: &str, addr: &str) -> Result<(), ConsoleError> {
    let throttled = |m: &str| ConsoleError::refused(StatusCode::TOO_MANY_REQUESTS, m);
    match session::reserve_attempt(&ctx.db, username, addr, now_ms()).await? {
        Attempt::Reserved => Ok(()),
        Attempt::NameThrottled => Err(throttled(
            "Too many failed sign-ins for this name; wait 15 minutes and try again.",
        )),
        Attempt::AddrThrottled => Err(throttled(
            "Too many failed sign-ins from your address; wait 15 minutes and try again.",
        )),
    }
}

/// Why `password` does not sign in as `user`, or `None` when it does. Without
/// a user it spends the same time as a real check, so names cannot be probed.
async fn password_refusal(user: Option<&user::Model>, password: String) -> Option<&'static str> {
    match user {
        Some(u) => {
            let matches = auth::verify_password_async(password, u.password_hash.clone()).await;
            match (matches, u.active) {
                (true, true) => None,
                (true, false) => Some("the account is deactivated"),
                (false, _) => Some("wrong password"),
            }
        }
        None => {
            let _ = auth::verify_password_async(password, dummy_hash().to_string()).await;
            Some("no such user")
        }
    }
}

/// Signs a user in from `addr`: returns the new session's token and their
/// role. Every attempt that got as far as a name is recorded in the audit
/// trail, the failed ones (throttled included) with the name as typed.
pub async fn login(
    ctx: &AppContext,
    username: &str,
    password: String,
    addr: &str,
) -> Result<(String, Role), ConsoleError> {
    if !super::oidc::local_allowed(ctx) {
        return Err(ConsoleError::refused(
            StatusCode::FORBIDDEN,
            crate::domain::oidc::Refusal::LocalDisabled.message(),
        ));
    }
    let username = username.trim();
    let result = attempt_login(ctx, username, password, addr).await;
    let entry = |action| Entry::new(username, action, target("user", username)).addr(addr);
    match &result {
        Ok(_) => audit::record(&ctx.db, entry(Action::SignIn)).await,
        Err((reason, ConsoleError::Refused { .. })) => {
            let failed = entry(Action::SignInFailed).detail(*reason);
            if !repeat_of_a_cheap_refusal(ctx, &failed).await {
                audit::record(&ctx.db, failed).await;
            }
        }
        Err((_, ConsoleError::Internal(_))) => {}
    }
    result.map_err(|(_, e)| e)
}

/// A refusal that checked no password (throttled, or input too long) can
/// come as fast as a client sends it: one such entry per name or address
/// and reason a minute is recorded, so a flood cannot grow the trail. Failed
/// password checks are bounded by the throttle and always recorded.
async fn repeat_of_a_cheap_refusal(ctx: &AppContext, failed: &Entry) -> bool {
    let cheap = failed.detail.starts_with("throttled") || failed.detail == INVALID_INPUT;
    if !cheap {
        return false;
    }
    audit::failed_sign_in_recorded_since(&ctx.db, failed, now_ms())
        .await
        .unwrap_or_else(|e| {
            tracing::error!("cannot look up recent failed sign-ins in the audit trail: {e}");
            false
        })
}

const INVALID_INPUT: &str = "invalid input";

/// [`login`] without the trail: a refusal comes with the reason it records.
async fn attempt_login(
    ctx: &AppContext,
    username: &str,
    password: String,
    addr: &str,
) -> Result<(String, Role), (&'static str, ConsoleError)> {
    let invalid = |e| (INVALID_INPUT, e);
    check_name_length(username).map_err(invalid)?;
    auth::check_password_length(&password).map_err(|m| invalid(ConsoleError::bad_request(m)))?;
    reserve_attempt(ctx, username, addr)
        .await
        .map_err(|e| (throttle_reason(&e), e))?;
    let user = owners::user_by_name(&ctx.db, username)
        .await
        .map_err(|e| ("", ConsoleError::from(e)))?;
    if let Some(reason) = password_refusal(user.as_ref(), password).await {
        return Err((
            reason,
            ConsoleError::refused(StatusCode::UNAUTHORIZED, "Wrong username or password."),
        ));
    }
    let Some(user) = user else {
        return Err((
            "",
            ConsoleError::internal("a matched password with no user"),
        ));
    };
    let internal = |e: sea_orm::DbErr| ("", ConsoleError::from(e));
    session::clear_failures(&ctx.db, username)
        .await
        .map_err(internal)?;
    let token = session::create(&ctx.db, user.id).await.map_err(internal)?;
    // Roles are written only from `Role`; an unknown one gets least privilege.
    Ok((token, Role::parse(&user.role).unwrap_or(Role::User)))
}

fn throttle_reason(e: &ConsoleError) -> &'static str {
    match e {
        ConsoleError::Refused { message, .. } if message.contains("your address") => {
            "throttled: too many failed sign-ins from this address"
        }
        ConsoleError::Refused { .. } => "throttled: too many failed sign-ins for this name",
        ConsoleError::Internal(_) => "",
    }
}

/// Ends the session with `token`, recording who signed out from `addr`.
pub async fn logout(ctx: &AppContext, token: &str, addr: &str) -> Result<(), ConsoleError> {
    let user = session::lookup(&ctx.db, token).await?;
    session::delete(&ctx.db, token).await?;
    if let Some(u) = user {
        let entry = Who::new(&u.username, addr).entry(Action::SignOut, target("user", &u.username));
        audit::record(&ctx.db, entry).await;
    }
    Ok(())
}

fn parse_role(role: &str) -> Result<Role, ConsoleError> {
    Role::parse(role)
        .ok_or_else(|| ConsoleError::bad_request("Role must be admin, manager or user."))
}

/// Creates a user with a role and an initial password.
pub async fn create_user(
    ctx: &AppContext,
    username: &str,
    role: &str,
    password: String,
    who: &Who,
) -> Result<(), ConsoleError> {
    let role = parse_role(role)?;
    let username = username.trim();
    let hash = new_credentials(username, password).await?;
    {
        let _guard = ctx.apply_lock.lock().await;
        let config = ctx.config.load_full();
        owners::create_user(
            &ctx.db,
            &config.config,
            username,
            &hash,
            role.as_str(),
            now_ms(),
        )
        .await
        .map_err(owner_refusal)?;
    }
    let entry = who.entry(Action::UserCreated, target("user", username));
    audit::record(&ctx.db, entry.detail(format!("role: {}", role.as_str()))).await;
    Ok(())
}

/// The user named `username`, for admin-only actions.
async fn existing_user(ctx: &AppContext, username: &str) -> Result<user::Model, ConsoleError> {
    check_name_length(username)?;
    owners::user_by_name(&ctx.db, username)
        .await?
        .ok_or_else(|| ConsoleError::refused(StatusCode::NOT_FOUND, "No such user."))
}

/// Changes a role or the active flag; never leaves zero active admins.
/// Returns the user before and after.
async fn change_user(
    ctx: &AppContext,
    username: &str,
    role: Option<Role>,
    active: Option<bool>,
) -> Result<(user::Model, user::Model), ConsoleError> {
    let user = existing_user(ctx, username).await?;
    owners::update_role_or_active(&ctx.db, user.id, role.map(Role::as_str), active)
        .await
        .map(|after| (user, after))
        .map_err(|e| match e {
            OwnerError::LastAdmin => ConsoleError::refused(
                StatusCode::CONFLICT,
                "This is the last active admin; make another user an admin first.",
            ),
            e => ConsoleError::internal(e),
        })
}

pub async fn set_user_role(
    ctx: &AppContext,
    username: &str,
    role: &str,
    who: &Who,
) -> Result<(), ConsoleError> {
    let role = parse_role(role)?;
    let (before, after) = change_user(ctx, username, Some(role), None).await?;
    if before.role != after.role {
        let entry = who.entry(Action::RoleChanged, target("user", &after.username));
        let detail = format!("{} → {}", before.role, after.role);
        audit::record(&ctx.db, entry.detail(detail)).await;
    }
    Ok(())
}

/// Deactivates (ending their sessions) or reactivates a user; `me` cannot
/// deactivate themselves.
pub async fn set_user_active(
    ctx: &AppContext,
    me: &SessionUser,
    username: &str,
    active: bool,
    who: &Who,
) -> Result<(), ConsoleError> {
    if me.username == username && !active {
        return Err(ConsoleError::bad_request("You cannot deactivate yourself."));
    }
    let (before, user) = change_user(ctx, username, None, Some(active)).await?;
    if !active {
        session::delete_for_user(&ctx.db, user.id).await?;
    }
    if before.active != user.active {
        let action = if active {
            Action::UserReactivated
        } else {
            Action::UserDeactivated
        };
        audit::record(&ctx.db, who.entry(action, target("user", &user.username))).await;
    }
    Ok(())
}

/// Sets a new password and ends the user's sessions.
pub async fn reset_password(
    ctx: &AppContext,
    username: &str,
    password: String,
    who: &Who,
) -> Result<(), ConsoleError> {
    let user = existing_user(ctx, username).await?;
    auth::check_password_policy(&password).map_err(ConsoleError::bad_request)?;
    let hash = auth::hash_password_async(password)
        .await
        .map_err(ConsoleError::internal)?;
    let user = owners::set_password_hash(&ctx.db, user, hash).await?;
    session::delete_for_user(&ctx.db, user.id).await?;
    let entry = who.entry(Action::PasswordReset, target("user", &user.username));
    audit::record(&ctx.db, entry.detail("their sessions ended")).await;
    Ok(())
}
