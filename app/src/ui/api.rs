//! Server functions, the browser's calls to the server (at `/api/<name>`).
//! Each one is an edge: it finds out who is calling and checks their role
//! on the server (`ssr::guard`), calls one console action or page builder
//! (`ssr::actions`, `ssr::accounts`, `ssr::console`), and maps its refusal to
//! the HTTP status and message the caller sees. State changes are POSTs
//! (the server also checks Origin).

use crate::view::*;
use leptos::prelude::*;

#[cfg(feature = "ssr")]
use {
    crate::domain::owner::{OwnerKind, Role},
    crate::ssr::actions::Owner,
    crate::ssr::guard::{self, admin, internal, managed_client, refuse, signed_in, who},
    crate::ssr::{accounts, actions, console},
};

#[server(prefix = "/api", endpoint = "current_user")]
pub async fn current_user() -> Result<Option<Me>, ServerFnError> {
    let (_, u) = guard::optional_user().await?;
    Ok(u.map(|u| Me {
        username: u.username,
        role: u.role,
    }))
}

/// Public: whether the first admin still has to be created.
#[server(prefix = "/api", endpoint = "setup_needed")]
pub async fn setup_needed() -> Result<bool, ServerFnError> {
    let ctx = guard::ctx()?;
    accounts::setup_needed(&ctx).await.map_err(refuse)
}

/// Public, but only with the setup token from the server log.
#[server(prefix = "/api", endpoint = "setup_admin")]
pub async fn setup_admin(
    token: String,
    username: String,
    password: String,
) -> Result<(), ServerFnError> {
    let ctx = guard::ctx()?;
    let addr = guard::client_addr();
    let session = accounts::setup_admin(&ctx, &token, &username, password, &addr)
        .await
        .map_err(refuse)?;
    guard::set_session_cookie(&ctx, &session);
    leptos_axum::redirect("/clients");
    Ok(())
}

/// Public: which ways of signing in the sign-in page shows.
#[server(prefix = "/api", endpoint = "login_options")]
pub async fn login_options() -> Result<SignInOptions, ServerFnError> {
    let ctx = guard::ctx()?;
    let auth = &ctx.config.load().config.auth;
    Ok(SignInOptions {
        local: auth.local,
        sso_label: auth.oidc.as_ref().map(|o| o.button_label()),
    })
}

#[server(prefix = "/api", endpoint = "login")]
pub async fn login(username: String, password: String) -> Result<(), ServerFnError> {
    let ctx = guard::ctx()?;
    let addr = guard::client_addr();
    let (session, role) = accounts::login(&ctx, &username, password, &addr)
        .await
        .map_err(refuse)?;
    guard::set_session_cookie(&ctx, &session);
    leptos_axum::redirect(if role == Role::User {
        "/me"
    } else {
        "/clients"
    });
    Ok(())
}

#[server(prefix = "/api", endpoint = "logout")]
pub async fn logout() -> Result<(), ServerFnError> {
    let ctx = guard::ctx()?;
    if let Some(t) = guard::session_token() {
        accounts::logout(&ctx, &t, &guard::client_addr())
            .await
            .map_err(refuse)?;
    }
    guard::clear_session_cookie(&ctx);
    leptos_axum::redirect("/login");
    Ok(())
}

#[server(prefix = "/api", endpoint = "list_clients")]
pub async fn list_clients(page: u64) -> Result<ClientsPage, ServerFnError> {
    let (ctx, u) = signed_in().await?;
    console::clients_for(&ctx, &u, page).await.map_err(internal)
}

#[server(prefix = "/api", endpoint = "create_client")]
pub async fn create_client(name: String) -> Result<(), ServerFnError> {
    let (ctx, u) = admin().await?;
    let name = actions::create_client(&ctx, &name, u.id, &who(&u))
        .await
        .map_err(refuse)?;
    leptos_axum::redirect(&format!("/clients/{name}"));
    Ok(())
}

#[server(prefix = "/api", endpoint = "client_detail")]
pub async fn client_detail(name: String) -> Result<OwnerDetail, ServerFnError> {
    let (ctx, u, c) = managed_client(&name).await?;
    let can_edit_managers = u.role == Role::Admin;
    console::owner_detail(&ctx, OwnerKind::Client, c.id, &c.name, can_edit_managers)
        .await
        .map_err(internal)
}

/// The key is in the answer, shown once; a plain form post is refused
/// before anything is created, since its answer would never be shown.
#[server(prefix = "/api", endpoint = "create_client_key")]
pub async fn create_client_key(
    client: String,
    label: String,
    expires_days: String,
    #[server(default)] requests_per_minute: String,
    #[server(default)] tokens_per_minute: String,
) -> Result<NewKeyShown, ServerFnError> {
    let (ctx, u, c) = managed_client(&client).await?;
    guard::require_script_for_key()?;
    let form = actions::KeyForm {
        label: &label,
        expires_days: &expires_days,
        requests_per_minute: &requests_per_minute,
        tokens_per_minute: &tokens_per_minute,
    };
    let owner = Owner {
        kind: OwnerKind::Client,
        id: c.id,
        name: &c.name,
    };
    actions::issue_key(&ctx, owner, &form, u.id, &who(&u))
        .await
        .map_err(refuse)
}

#[server(prefix = "/api", endpoint = "create_my_key")]
pub async fn create_my_key(
    label: String,
    expires_days: String,
    #[server(default)] requests_per_minute: String,
    #[server(default)] tokens_per_minute: String,
) -> Result<NewKeyShown, ServerFnError> {
    let (ctx, u) = signed_in().await?;
    guard::require_script_for_key()?;
    let form = actions::KeyForm {
        label: &label,
        expires_days: &expires_days,
        requests_per_minute: &requests_per_minute,
        tokens_per_minute: &tokens_per_minute,
    };
    let owner = Owner {
        kind: OwnerKind::User,
        id: u.id,
        name: &u.username,
    };
    actions::issue_key(&ctx, owner, &form, u.id, &who(&u))
        .await
        .map_err(refuse)
}

#[server(prefix = "/api", endpoint = "revoke_key")]
pub async fn revoke_key(key_id: i64) -> Result<(), ServerFnError> {
    let (ctx, u) = signed_in().await?;
    actions::revoke_key(&ctx, &u, key_id, &who(&u))
        .await
        .map_err(refuse)
}

#[server(prefix = "/api", endpoint = "set_client_consent")]
pub async fn set_client_consent(
    client: String,
    model: String,
    consent: bool,
) -> Result<(), ServerFnError> {
    let (ctx, u, c) = managed_client(&client).await?;
    let owner = Owner {
        kind: OwnerKind::Client,
        id: c.id,
        name: &c.name,
    };
    actions::set_consent(&ctx, owner, &model, consent, u.id, &who(&u))
        .await
        .map_err(refuse)
}

#[server(prefix = "/api", endpoint = "set_my_consent")]
pub async fn set_my_consent(model: String, consent: bool) -> Result<(), ServerFnError> {
    let (ctx, u) = signed_in().await?;
    let owner = Owner {
        kind: OwnerKind::User,
        id: u.id,
        name: &u.username,
    };
    actions::set_consent(&ctx, owner, &model, consent, u.id, &who(&u))
        .await
        .map_err(refuse)
}

#[server(prefix = "/api", endpoint = "add_manager")]
pub async fn add_manager(client: String, username: String) -> Result<(), ServerFnError> {
    let (ctx, u) = admin().await?;
    actions::add_manager(&ctx, &client, &username, &who(&u))
        .await
        .map_err(refuse)
}

#[server(prefix = "/api", endpoint = "remove_manager")]
pub async fn remove_manager(client: String, username: String) -> Result<(), ServerFnError> {
    let (ctx, u) = admin().await?;
    actions::remove_manager(&ctx, &client, &username, &who(&u))
        .await
        .map_err(refuse)
}

#[server(prefix = "/api", endpoint = "my_account")]
pub async fn my_account() -> Result<OwnerDetail, ServerFnError> {
    let (ctx, u) = signed_in().await?;
    console::owner_detail(&ctx, OwnerKind::User, u.id, &u.username, false)
        .await
        .map_err(internal)
}

#[server(prefix = "/api", endpoint = "list_users")]
pub async fn list_users() -> Result<Vec<UserRow>, ServerFnError> {
    let (ctx, _) = admin().await?;
    console::users(&ctx).await.map_err(internal)
}

#[server(prefix = "/api", endpoint = "create_user_account")]
pub async fn create_user_account(
    username: String,
    role: String,
    password: String,
) -> Result<(), ServerFnError> {
    let (ctx, u) = admin().await?;
    accounts::create_user(&ctx, &username, &role, password, &who(&u))
        .await
        .map_err(refuse)
}

#[server(prefix = "/api", endpoint = "set_user_role")]
pub async fn set_user_role(username: String, role: String) -> Result<(), ServerFnError> {
    let (ctx, u) = admin().await?;
    accounts::set_user_role(&ctx, &username, &role, &who(&u))
        .await
        .map_err(refuse)
}

#[server(prefix = "/api", endpoint = "set_user_active")]
pub async fn set_user_active(username: String, active: bool) -> Result<(), ServerFnError> {
    let (ctx, me) = admin().await?;
    accounts::set_user_active(&ctx, &me, &username, active, &who(&me))
        .await
        .map_err(refuse)
}

#[server(prefix = "/api", endpoint = "reset_password")]
pub async fn reset_password(username: String, password: String) -> Result<(), ServerFnError> {
    let (ctx, u) = admin().await?;
    accounts::reset_password(&ctx, &username, password, &who(&u))
        .await
        .map_err(refuse)
}

/// Every deployment's health on the instance that answers (admins only).
#[server(prefix = "/api", endpoint = "deployment_health")]
pub async fn deployment_health() -> Result<Vec<crate::view::DeploymentRow>, ServerFnError> {
    let (ctx, _) = admin().await?;
    Ok(console::deployment_rows(&ctx))
}

#[server(prefix = "/api", endpoint = "config_overview")]
pub async fn config_overview() -> Result<ConfigReport, ServerFnError> {
    let (ctx, _) = admin().await?;
    console::config_overview(&ctx).await.map_err(internal)
}

/// Budget alert targets, thresholds and recent deliveries, for `/config`.
#[server(prefix = "/api", endpoint = "alert_overview")]
pub async fn alert_overview() -> Result<AlertsReport, ServerFnError> {
    let (ctx, _) = admin().await?;
    crate::ssr::alerts::overview(&ctx).await.map_err(internal)
}

/// A page of the audit trail, newest first, filtered (admins only).
/// `before`/`after` are the `seq` the page starts below or above (0: none).
#[server(prefix = "/api", endpoint = "audit_log")]
pub async fn audit_log(
    #[server(default)] actor: String,
    #[server(default)] action: String,
    #[server(default)] target: String,
    #[server(default)] from: String,
    #[server(default)] to: String,
    #[server(default)] before: i64,
    #[server(default)] after: i64,
) -> Result<AuditPage, ServerFnError> {
    let (ctx, _) = admin().await?;
    let filter = crate::domain::audit::AuditFilter {
        actor,
        action,
        target,
        from,
        to,
    };
    crate::ssr::audit::page_for(&ctx, &filter, before, after)
        .await
        .map_err(refuse)
}

/// The usage explorer: admins see every client and user, managers their
/// clients (the scope is in every statement), plain users a 403.
#[server(prefix = "/api", endpoint = "usage_report")]
pub async fn usage_report(
    #[server(default)] from: String,
    #[server(default)] to: String,
    #[server(default)] group: String,
) -> Result<SpendReport, ServerFnError> {
    let (ctx, u) = signed_in().await?;
    crate::ssr::usage::report_for(&ctx, &u, &from, &to, &group)
        .await
        .map_err(refuse)
}

/// The calls behind the explorer, newest first, a page at a time.
#[server(prefix = "/api", endpoint = "usage_calls")]
pub async fn usage_calls(
    #[server(default)] from: String,
    #[server(default)] to: String,
    #[server(default)] group: String,
    #[server(default)] name: Option<String>,
    #[server(default)] before: Option<String>,
) -> Result<CallsPage, ServerFnError> {
    let (ctx, u) = signed_in().await?;
    let asked = crate::ssr::usage::CallsAsked {
        from: &from,
        to: &to,
        group: &group,
        name: name.as_deref(),
        before: before.as_deref(),
    };
    crate::ssr::usage::calls_page_for(&ctx, &u, &asked)
        .await
        .map_err(refuse)
}
