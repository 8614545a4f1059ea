//! The edge of every server function: who is calling, and may they do this;
//! turning a console action's refusal into the HTTP status and message the
//! caller sees; cookies and the request's headers.

use super::actions::ConsoleError;
use super::console::may_manage;
use super::entities::client;
use super::owners::client_by_name;
use super::session::{self, Role, SessionUser};
use super::AppContext;
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

/// What the caller is told when a console action fails.
pub fn refuse(e: ConsoleError) -> ServerFnError {
    match e {
        ConsoleError::Refused { status, message } => deny(status, &message),
        ConsoleError::Internal(detail) => internal(detail),
    }
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

/// The signed-in user as the audit trail records them: their name and this
/// request's client address.
pub fn who(u: &SessionUser) -> super::audit::Who {
    super::audit::Who::new(u.username.clone(), client_addr())
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
    if !may_manage(&ctx.db, &u, c.id).await.map_err(internal)? {
        return Err(not_found());
    }
    Ok((ctx, u, c))
}

/// Refuses a plain HTML form post (the page is not hydrated yet, or
/// JavaScript is off): the browser then follows a redirect back to the page
/// and never sees what the server function returned, such as a key shown once.
pub fn require_script_for_key() -> Result<(), ServerFnError> {
    let plain = use_context::<http::request::Parts>().is_some_and(|p| {
        p.headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
    });
    if plain {
        return Err(deny(
            StatusCode::BAD_REQUEST,
            "Creating a key needs JavaScript, so that the key can be shown to you once. Wait for the page to finish loading (or turn JavaScript on) and try again; no key was created.",
        ));
    }
    Ok(())
}

pub fn set_header(name: http::HeaderName, value: &str) {
    if let (Some(r), Ok(v)) = (
        use_context::<leptos_axum::ResponseOptions>(),
        http::HeaderValue::from_str(value),
    ) {
        r.append_header(name, v);
    }
}

/// Sends the cookie that signs the browser in with this session token.
pub fn set_session_cookie(ctx: &AppContext, token: &str) {
    set_header(
        http::header::SET_COOKIE,
        &session::set_cookie(token, ctx.secure_cookies()),
    );
}

/// Sends the cookie that signs the browser out.
pub fn clear_session_cookie(ctx: &AppContext) {
    set_header(
        http::header::SET_COOKIE,
        &session::clear_cookie(ctx.secure_cookies()),
    );
}
