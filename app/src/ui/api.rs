//! Server functions. Every one checks the caller's role on the server before
//! doing anything; state changes are POSTs (the server also checks Origin).

use crate::view::*;
use leptos::prelude::*;

#[cfg(feature = "ssr")]
use {
    super::guard::{admin, deny, internal, managed_client, optional_user, set_header, signed_in},
    crate::ssr::owners::OwnerKind,
    crate::ssr::session::Role,
    http::StatusCode,
};

/// Refuses a name longer than any client or user can have, before it is
/// looked up, hashed or stored.
#[cfg(feature = "ssr")]
fn check_name_length(name: &str) -> Result<(), ServerFnError> {
    use crate::domain::names::MAX_NAME_LEN;
    if name.len() > MAX_NAME_LEN {
        return Err(deny(
            StatusCode::BAD_REQUEST,
            &format!("A name is at most {MAX_NAME_LEN} characters."),
        ));
    }
    Ok(())
}

/// Whether this request is a plain HTML form post (the page is not hydrated
/// yet, or JavaScript is off): the browser then follows a redirect back to
/// the page and never sees what the server function returned.
#[cfg(feature = "ssr")]
fn plain_form_post() -> bool {
    use_context::<http::request::Parts>().is_some_and(|p| {
        p.headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
    })
}

/// The longest lifetime a key created in the console may have.
#[cfg(feature = "ssr")]
const MAX_KEY_DAYS: i64 = 3650;

/// When a key created now with the form's lifetime (days, or `12h` and the
/// like) expires; `None` when the field is empty.
#[cfg(feature = "ssr")]
fn parse_days(expires_days: &str) -> Result<Option<i64>, ServerFnError> {
    use crate::domain::time::{parse_duration_ms, DAY_MS};
    let s = expires_days.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let ms = parse_duration_ms(s)
        .filter(|ms| *ms <= MAX_KEY_DAYS * DAY_MS)
        .ok_or_else(|| {
            deny(
                StatusCode::BAD_REQUEST,
                "Expiry must be a number of days between 1 and 3650, or empty.",
            )
        })?;
    Ok(Some(crate::ssr::now_ms() + ms))
}

/// Creates a key for an owner the caller may issue keys for (checked by the
/// caller) and returns the secret, which is shown this once.
#[cfg(feature = "ssr")]
async fn issue_key(
    ctx: &crate::ssr::AppContext,
    (kind, owner_id): (OwnerKind, i64),
    label: &str,
    expires_days: &str,
    by: i64,
) -> Result<NewKeyShown, ServerFnError> {
    // A key is shown once, in the page's answer to this call. A plain form
    // post would be redirected back to the page and lose it, so it is
    // refused before anything is created.
    if plain_form_post() {
        return Err(deny(
            StatusCode::BAD_REQUEST,
            "Creating a key needs JavaScript, so that the key can be shown to you once. Wait for the page to finish loading (or turn JavaScript on) and try again; no key was created.",
        ));
    }
    let expires = parse_days(expires_days)?;
    let k = crate::ssr::keys::create(
        &ctx.db,
        kind,
        owner_id,
        label,
        expires,
        Some(by),
        crate::ssr::now_ms(),
    )
    .await
    .map_err(|e| match e {
        crate::ssr::keys::KeyError::InvalidLabel(m) => deny(StatusCode::BAD_REQUEST, &m),
        e => internal(e),
    })?;
    Ok(NewKeyShown {
        secret: k.secret,
        prefix: k.record.prefix,
    })
}

#[server(prefix = "/api", endpoint = "current_user")]
pub async fn current_user() -> Result<Option<Me>, ServerFnError> {
    let (_, u) = optional_user().await?;
    Ok(u.map(|u| Me {
        username: u.username,
        role: u.role,
    }))
}

/// Public: whether the first admin still has to be created.
#[server(prefix = "/api", endpoint = "setup_needed")]
pub async fn setup_needed() -> Result<bool, ServerFnError> {
    let ctx = super::guard::ctx()?;
    let token_held = ctx.setup_token.lock().map(|t| t.is_some()).unwrap_or(false);
    Ok(token_held
        && !crate::ssr::owners::admin_exists(&ctx.db)
            .await
            .map_err(internal)?)
}

#[server(prefix = "/api", endpoint = "setup_admin")]
pub async fn setup_admin(
    token: String,
    username: String,
    password: String,
) -> Result<(), ServerFnError> {
    use crate::ssr::{auth, owners, session};
    let ctx = super::guard::ctx()?;
    let done = || {
        deny(
            StatusCode::FORBIDDEN,
            "Setup is already done; sign in instead.",
        )
    };
    let expected = ctx.setup_token.lock().map(|t| t.clone()).unwrap_or(None);
    let Some(expected) = expected else {
        return Err(done());
    };
    if token.len() > 128 || !crate::ssr::constant_time_eq(token.as_bytes(), expected.as_bytes()) {
        return Err(deny(
            StatusCode::FORBIDDEN,
            "The setup token is wrong; use the address from the server log.",
        ));
    }
    // The token is good only while no admin exists. Another instance, or
    // `tollgate create-admin`, may have made one since this process started.
    let forget_token = || {
        if let Ok(mut t) = ctx.setup_token.lock() {
            *t = None;
        }
    };
    if owners::admin_exists(&ctx.db).await.map_err(internal)? {
        forget_token();
        return Err(done());
    }
    let username = username.trim();
    crate::domain::names::validate_owner_name(username)
        .map_err(|m| deny(StatusCode::BAD_REQUEST, &m))?;
    auth::check_password_policy(&password).map_err(|m| deny(StatusCode::BAD_REQUEST, &m))?;
    let hash = auth::hash_password_async(password)
        .await
        .map_err(internal)?;
    let config = ctx.config.load_full();
    let user = owners::create_first_admin(
        &ctx.db,
        &config.config,
        username,
        &hash,
        crate::ssr::now_ms(),
    )
    .await
    .map_err(|e| match e {
        owners::OwnerError::Db(e) => internal(e),
        owners::OwnerError::AdminExists => {
            forget_token();
            done()
        }
        e => deny(StatusCode::BAD_REQUEST, &e.to_string()),
    })?;
    forget_token();
    let token = session::create(&ctx.db, user.id).await.map_err(internal)?;
    set_header(
        http::header::SET_COOKIE,
        &session::set_cookie(&token, ctx.secure_cookies()),
    );
    leptos_axum::redirect("/clients");
    Ok(())
}

#[server(prefix = "/api", endpoint = "login")]
pub async fn login(username: String, password: String) -> Result<(), ServerFnError> {
    use crate::ssr::session::{self, Attempt};
    use crate::ssr::{auth, owners};
    let ctx = super::guard::ctx()?;
    let username = username.trim().to_string();
    check_name_length(&username)?;
    auth::check_password_length(&password).map_err(|m| deny(StatusCode::BAD_REQUEST, &m))?;
    // The failure is recorded before the password is checked, so parallel
    // guesses cannot get more checks than the limit.
    let addr = super::guard::client_addr();
    match session::reserve_attempt(&ctx.db, &username, &addr, crate::ssr::now_ms())
        .await
        .map_err(internal)?
    {
        Attempt::Reserved => {}
        Attempt::NameThrottled => {
            return Err(deny(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-ins for this name; wait 15 minutes and try again.",
            ))
        }
        Attempt::AddrThrottled => {
            return Err(deny(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-ins from your address; wait 15 minutes and try again.",
            ))
        }
    }
    let user = owners::user_by_name(&ctx.db, &username)
        .await
        .map_err(internal)?;
    let ok = match &user {
        Some(u) => auth::verify_password_async(password, u.password_hash.clone()).await && u.active,
        None => {
            // Spend the same time as a real check so names cannot be probed.
            let _ =
                auth::verify_password_async(password, crate::ssr::dummy_hash().to_string()).await;
            false
        }
    };
    let Some(user) = user.filter(|_| ok) else {
        return Err(deny(
            StatusCode::UNAUTHORIZED,
            "Wrong username or password.",
        ));
    };
    session::clear_failures(&ctx.db, &username)
        .await
        .map_err(internal)?;
    let token = session::create(&ctx.db, user.id).await.map_err(internal)?;
    set_header(
        http::header::SET_COOKIE,
        &session::set_cookie(&token, ctx.secure_cookies()),
    );
    leptos_axum::redirect(if Role::parse(&user.role) == Some(Role::User) {
        "/me"
    } else {
        "/clients"
    });
    Ok(())
}

#[server(prefix = "/api", endpoint = "logout")]
pub async fn logout() -> Result<(), ServerFnError> {
    use crate::ssr::session;
    let ctx = super::guard::ctx()?;
    if let Some(t) = super::guard::session_token() {
        session::delete(&ctx.db, &t).await.map_err(internal)?;
    }
    set_header(
        http::header::SET_COOKIE,
        &session::clear_cookie(ctx.secure_cookies()),
    );
    leptos_axum::redirect("/login");
    Ok(())
}

#[server(prefix = "/api", endpoint = "list_clients")]
pub async fn list_clients(page: u64) -> Result<ClientsPage, ServerFnError> {
    use crate::ssr::console;
    let (ctx, u) = signed_in().await?;
    let only = match u.role {
        Role::Admin => None,
        Role::Manager => Some(
            console::managed_client_ids(&ctx.db, u.id)
                .await
                .map_err(internal)?,
        ),
        Role::User => Some(Vec::new()),
    };
    console::clients_page(&ctx, only, page, u.role == Role::Admin)
        .await
        .map_err(internal)
}

#[server(prefix = "/api", endpoint = "create_client")]
pub async fn create_client(name: String) -> Result<(), ServerFnError> {
    use crate::ssr::owners;
    let (ctx, u) = admin().await?;
    let name = name.trim().to_string();
    check_name_length(&name)?;
    let _guard = ctx.apply_lock.lock().await;
    let config = ctx.config.load_full();
    owners::create_client(
        &ctx.db,
        &config.config,
        &name,
        Some(u.id),
        crate::ssr::now_ms(),
    )
    .await
    .map_err(|e| match e {
        owners::OwnerError::Db(e) => internal(e),
        e => deny(StatusCode::BAD_REQUEST, &e.to_string()),
    })?;
    leptos_axum::redirect(&format!("/clients/{name}"));
    Ok(())
}

#[server(prefix = "/api", endpoint = "client_detail")]
pub async fn client_detail(name: String) -> Result<OwnerDetail, ServerFnError> {
    let (ctx, u, c) = managed_client(&name).await?;
    crate::ssr::console::owner_detail(
        &ctx,
        OwnerKind::Client,
        c.id,
        &c.name,
        u.role == Role::Admin,
    )
    .await
    .map_err(internal)
}

#[server(prefix = "/api", endpoint = "create_client_key")]
pub async fn create_client_key(
    client: String,
    label: String,
    expires_days: String,
) -> Result<NewKeyShown, ServerFnError> {
    let (ctx, u, c) = managed_client(&client).await?;
    issue_key(&ctx, (OwnerKind::Client, c.id), &label, &expires_days, u.id).await
}

#[server(prefix = "/api", endpoint = "create_my_key")]
pub async fn create_my_key(
    label: String,
    expires_days: String,
) -> Result<NewKeyShown, ServerFnError> {
    let (ctx, u) = signed_in().await?;
    issue_key(&ctx, (OwnerKind::User, u.id), &label, &expires_days, u.id).await
}

#[server(prefix = "/api", endpoint = "revoke_key")]
pub async fn revoke_key(key_id: i64) -> Result<(), ServerFnError> {
    use crate::ssr::entities::{api_key, client};
    use sea_orm::EntityTrait;
    let (ctx, u) = signed_in().await?;
    let not_found = || {
        deny(
            StatusCode::NOT_FOUND,
            "No such key, or you may not revoke it.",
        )
    };
    let key = api_key::Entity::find_by_id(key_id)
        .one(&ctx.db)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let allowed = match OwnerKind::parse(&key.owner_kind) {
        Some(OwnerKind::User) => key.owner_id == u.id || u.role == Role::Admin,
        Some(OwnerKind::Client) => {
            let c = client::Entity::find_by_id(key.owner_id)
                .one(&ctx.db)
                .await
                .map_err(internal)?
                .ok_or_else(not_found)?;
            managed_client(&c.name).await.is_ok()
        }
        None => false,
    };
    if !allowed {
        return Err(not_found());
    }
    match crate::ssr::keys::revoke(&ctx.db, &key, crate::ssr::now_ms()).await {
        Ok(_) | Err(crate::ssr::keys::KeyError::AlreadyRevoked(_)) => Ok(()),
        Err(e) => Err(internal(e)),
    }
}

#[server(prefix = "/api", endpoint = "set_client_consent")]
pub async fn set_client_consent(
    client: String,
    model: String,
    consent: bool,
) -> Result<(), ServerFnError> {
    let (ctx, u, c) = managed_client(&client).await?;
    set_consent(&ctx, OwnerKind::Client, c.id, &model, consent, u.id).await
}

#[server(prefix = "/api", endpoint = "set_my_consent")]
pub async fn set_my_consent(model: String, consent: bool) -> Result<(), ServerFnError> {
    let (ctx, u) = signed_in().await?;
    set_consent(&ctx, OwnerKind::User, u.id, &model, consent, u.id).await
}

#[cfg(feature = "ssr")]
async fn set_consent(
    ctx: &crate::ssr::AppContext,
    kind: OwnerKind,
    id: i64,
    model: &str,
    consent: bool,
    by: i64,
) -> Result<(), ServerFnError> {
    use crate::ssr::consents;
    if !ctx.config.load().config.models.contains_key(model) {
        return Err(deny(
            StatusCode::BAD_REQUEST,
            "That model is not in the catalog.",
        ));
    }
    let now = crate::ssr::now_ms();
    if consent {
        consents::record(&ctx.db, kind, id, model, Some(by), now)
            .await
            .map_err(internal)?;
    } else {
        consents::revoke(&ctx.db, kind, id, model, now)
            .await
            .map_err(internal)?;
    }
    Ok(())
}

/// The client named `name`, for admin-only functions (which may see every client).
#[cfg(feature = "ssr")]
async fn existing_client(
    ctx: &crate::ssr::AppContext,
    name: &str,
) -> Result<crate::ssr::entities::client::Model, ServerFnError> {
    check_name_length(name)?;
    crate::ssr::owners::client_by_name(&ctx.db, name)
        .await
        .map_err(internal)?
        .ok_or_else(|| deny(StatusCode::NOT_FOUND, "No such client."))
}

#[server(prefix = "/api", endpoint = "add_manager")]
pub async fn add_manager(client: String, username: String) -> Result<(), ServerFnError> {
    let (ctx, _) = admin().await?;
    let c = existing_client(&ctx, &client).await?;
    let username = username.trim();
    check_name_length(username)?;
    let user = crate::ssr::owners::user_by_name(&ctx.db, username)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            deny(
                StatusCode::BAD_REQUEST,
                "No user with that name; create it on the Users page first.",
            )
        })?;
    crate::ssr::owners::add_manager(&ctx.db, c.id, user.id, crate::ssr::now_ms())
        .await
        .map_err(internal)
}

#[server(prefix = "/api", endpoint = "remove_manager")]
pub async fn remove_manager(client: String, username: String) -> Result<(), ServerFnError> {
    let (ctx, _) = admin().await?;
    let c = existing_client(&ctx, &client).await?;
    // The same normalisation as `add_manager`, so what was added can be removed.
    let username = username.trim();
    check_name_length(username)?;
    if let Some(user) = crate::ssr::owners::user_by_name(&ctx.db, username)
        .await
        .map_err(internal)?
    {
        crate::ssr::owners::remove_manager(&ctx.db, c.id, user.id)
            .await
            .map_err(internal)?;
    }
    Ok(())
}

#[server(prefix = "/api", endpoint = "my_account")]
pub async fn my_account() -> Result<OwnerDetail, ServerFnError> {
    let (ctx, u) = signed_in().await?;
    crate::ssr::console::owner_detail(&ctx, OwnerKind::User, u.id, &u.username, false)
        .await
        .map_err(internal)
}

#[server(prefix = "/api", endpoint = "list_users")]
pub async fn list_users() -> Result<Vec<UserRow>, ServerFnError> {
    let (ctx, _) = admin().await?;
    Ok(crate::ssr::owners::all_users(&ctx.db)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|u| UserRow {
            username: u.username,
            // Roles are written only from `Role`; an unknown one shows least privilege.
            role: Role::parse(&u.role).unwrap_or(Role::User),
            active: u.active,
        })
        .collect())
}

#[cfg(feature = "ssr")]
fn parse_role(role: &str) -> Result<Role, ServerFnError> {
    Role::parse(role).ok_or_else(|| {
        deny(
            StatusCode::BAD_REQUEST,
            "Role must be admin, manager or user.",
        )
    })
}

#[server(prefix = "/api", endpoint = "create_user_account")]
pub async fn create_user_account(
    username: String,
    role: String,
    password: String,
) -> Result<(), ServerFnError> {
    use crate::ssr::{auth, owners};
    let (ctx, _) = admin().await?;
    let role = parse_role(&role)?;
    let username = username.trim();
    crate::domain::names::validate_owner_name(username)
        .map_err(|m| deny(StatusCode::BAD_REQUEST, &m))?;
    auth::check_password_policy(&password).map_err(|m| deny(StatusCode::BAD_REQUEST, &m))?;
    let hash = auth::hash_password_async(password)
        .await
        .map_err(internal)?;
    let _guard = ctx.apply_lock.lock().await;
    let config = ctx.config.load_full();
    owners::create_user(
        &ctx.db,
        &config.config,
        username,
        &hash,
        role.as_str(),
        crate::ssr::now_ms(),
    )
    .await
    .map_err(|e| match e {
        owners::OwnerError::Db(e) => internal(e),
        e => deny(StatusCode::BAD_REQUEST, &e.to_string()),
    })?;
    Ok(())
}

/// The user named `username`, for admin-only functions.
#[cfg(feature = "ssr")]
async fn existing_user(
    ctx: &crate::ssr::AppContext,
    username: &str,
) -> Result<crate::ssr::entities::user::Model, ServerFnError> {
    check_name_length(username)?;
    crate::ssr::owners::user_by_name(&ctx.db, username)
        .await
        .map_err(internal)?
        .ok_or_else(|| deny(StatusCode::NOT_FOUND, "No such user."))
}

/// Changes a role or the active flag; never leaves zero active admins.
#[cfg(feature = "ssr")]
async fn change_user(
    ctx: &crate::ssr::AppContext,
    username: &str,
    role: Option<Role>,
    active: Option<bool>,
) -> Result<crate::ssr::entities::user::Model, ServerFnError> {
    use crate::ssr::owners::{self, OwnerError};
    let user = existing_user(ctx, username).await?;
    owners::update_role_or_active(&ctx.db, user.id, role.map(Role::as_str), active)
        .await
        .map_err(|e| match e {
            OwnerError::LastAdmin => deny(
                StatusCode::CONFLICT,
                "This is the last active admin; make another user an admin first.",
            ),
            e => internal(e),
        })
}

#[server(prefix = "/api", endpoint = "set_user_role")]
pub async fn set_user_role(username: String, role: String) -> Result<(), ServerFnError> {
    let (ctx, _) = admin().await?;
    let role = parse_role(&role)?;
    change_user(&ctx, &username, Some(role), None).await?;
    Ok(())
}

#[server(prefix = "/api", endpoint = "set_user_active")]
pub async fn set_user_active(username: String, active: bool) -> Result<(), ServerFnError> {
    let (ctx, me) = admin().await?;
    if me.username == username && !active {
        return Err(deny(
            StatusCode::BAD_REQUEST,
            "You cannot deactivate yourself.",
        ));
    }
    let user = change_user(&ctx, &username, None, Some(active)).await?;
    if !active {
        crate::ssr::session::delete_for_user(&ctx.db, user.id)
            .await
            .map_err(internal)?;
    }
    Ok(())
}

#[server(prefix = "/api", endpoint = "reset_password")]
pub async fn reset_password(username: String, password: String) -> Result<(), ServerFnError> {
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, IntoActiveModel};
    let (ctx, _) = admin().await?;
    let user = existing_user(&ctx, &username).await?;
    crate::ssr::auth::check_password_policy(&password)
        .map_err(|m| deny(StatusCode::BAD_REQUEST, &m))?;
    let hash = crate::ssr::auth::hash_password_async(password)
        .await
        .map_err(internal)?;
    let mut am = user.into_active_model();
    am.password_hash = Set(hash);
    let user = am.update(&ctx.db).await.map_err(internal)?;
    crate::ssr::session::delete_for_user(&ctx.db, user.id)
        .await
        .map_err(internal)?;
    Ok(())
}

#[server(prefix = "/api", endpoint = "config_overview")]
pub async fn config_overview() -> Result<ConfigReport, ServerFnError> {
    let (ctx, _) = admin().await?;
    crate::ssr::console::config_overview(&ctx)
        .await
        .map_err(internal)
}
