//! Server-side checks shared by every server function: who is calling, and
//! may they do this. Failures set the HTTP status and say what to do.

use crate::ssr::entities::client;
use crate::ssr::owners::client_by_name;
use crate::ssr::session::{self, Role, SessionUser};
use crate::ssr::{console, AppContext};
use http::StatusCode;
use leptos::prelude::*;

pub fn deny(status: StatusCode, message: &str) -> ServerFnError {
    if let Some(r) = use_context::<leptos_axum::ResponseOptions>() {
        r.set_status(status);
    }
    ServerFnError::new(message)
}

/// Logs the detail, tells the caller only that something failed.
pub fn internal(e: impl std::fmt::Display) -> ServerFnError {
    tracing::error!("server function failed: {e}");
    deny(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong on the server; the details are in its log.",
    )
}

pub fn ctx() -> Result<AppContext, ServerFnError> {
    use_context::<AppContext>().ok_or_else(|| internal("AppContext missing"))
}

pub fn session_token() -> Option<String> {
    let parts = use_context::<http::request::Parts>()?;
    let header = parts.headers.get(http::header::COOKIE)?.to_str().ok()?;
    session::token_from_cookie_header(header)
}

/// The address of the peer that sent this request, or "" when unknown.
pub fn client_addr() -> String {
    use_context::<http::request::Parts>()
        .and_then(|p| {
            p.extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string())
        })
        .unwrap_or_default()
}

pub async fn optional_user() -> Result<(AppContext, Option<SessionUser>), ServerFnError> {
    let ctx = ctx()?;
    let user = match session_token() {
        Some(t) => session::lookup(&ctx.db, &t).await.map_err(internal)?,
        None => None,
    };
    Ok((ctx, user))
}

pub async fn signed_in() -> Result<(AppContext, SessionUser), ServerFnError> {
    match optional_user().await? {
        (ctx, Some(u)) => Ok((ctx, u)),
        (_, None) => Err(deny(StatusCode::UNAUTHORIZED, "Sign in first.")),
    }
}

pub async fn admin() -> Result<(AppContext, SessionUser), ServerFnError> {
    let (ctx, u) = signed_in().await?;
    if u.role != Role::Admin {
        return Err(deny(StatusCode::FORBIDDEN, "Only admins may do this."));
    }
    Ok((ctx, u))
}

/// A client the caller may manage: admins any, managers those assigned to
/// them. Anything else looks exactly like a missing client.
pub async fn managed_client(
    name: &str,
) -> Result<(AppContext, SessionUser, client::Model), ServerFnError> {
    let (ctx, u) = signed_in().await?;
    let not_found = || {
        deny(
            StatusCode::NOT_FOUND,
            "No such client, or you may not see it.",
        )
    };
    if name.len() > crate::domain::names::MAX_NAME_LEN {
        return Err(not_found());
    }
    let Some(c) = client_by_name(&ctx.db, name).await.map_err(internal)? else {
        return Err(not_found());
    };
    let allowed = match u.role {
        Role::Admin => true,
        Role::Manager => console::managed_client_ids(&ctx.db, u.id)
            .await
            .map_err(internal)?
            .contains(&c.id),
        Role::User => false,
    };
    if !allowed {
        return Err(not_found());
    }
    Ok((ctx, u, c))
}

pub fn set_header(name: http::HeaderName, value: &str) {
    if let (Some(r), Ok(v)) = (
        use_context::<leptos_axum::ResponseOptions>(),
        http::HeaderValue::from_str(value),
    ) {
        r.append_header(name, v);
    }
}
